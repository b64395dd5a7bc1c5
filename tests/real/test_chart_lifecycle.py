"""The chart's life on a real control plane, without running kubepay: CRDs that upgrade with the release and
stay on uninstall, the one-time adoption of CRDs an older release installed, and the aggregated ClusterRoles
that kube-controller-manager folds into the built-in view, edit and admin roles.

Nothing here needs a pod: the releases are installed with --no-hooks, and what is checked is what the API
server serves and what it authorizes (SubjectAccessReview).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubepay_sandbox.realcluster import RealCluster
from tests.chart import monitoring
from tests.chart.tools import ensure_tools
from tests.helpers import GROUP, PLURAL, VERSION, Kube, wait_for
from tests.real.chart_release import CHART, REPO

# Enough for the chart to render; no process runs, so nothing here is ever used.
VALUES = ["--set", "kafka.brokers=kafka.invalid:9092", "--set", "stripe.secretKey=sk_test_lifecycle",
          "--set", "stripe.webhookSecret=whsec_lifecycle", "--set", "database.url=postgresql://u:p@db.invalid/x",
          "--set", "admission.enabled=false", "--set", "image.repository=kubepay.invalid/kubepay"]
KUBEPAY_CRDS = ("paymentintents.kubepay.io", "paymentrefunds.kubepay.io")


@dataclass
class Tools:
    cluster: RealCluster
    helm: Path
    kubectl: Path
    home: Path

    async def run(self, binary: Path, *args: str | Path) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(binary), "--kubeconfig", str(self.cluster.kubeconfig), *map(str, args),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "HELM_CACHE_HOME": str(self.home / "cache"),
                 "HELM_CONFIG_HOME": str(self.home / "config"), "HELM_DATA_HOME": str(self.home / "data")})
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def helm_ok(self, *args: str | Path) -> str:
        code, out, err = await self.run(self.helm, *args)
        assert code == 0, f"helm {' '.join(map(str, args))} exited {code}:\n{err}"
        return out

    async def kubectl_ok(self, *args: str | Path) -> str:
        code, out, err = await self.run(self.kubectl, *args)
        assert code == 0, f"kubectl {' '.join(map(str, args))} exited {code}:\n{err}"
        return out


@pytest_asyncio.fixture(scope="module")
async def tools(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Tools]:
    binaries = await asyncio.to_thread(ensure_tools)
    async with RealCluster() as cluster:
        yield Tools(cluster, binaries["helm"], binaries["kubectl"], tmp_path_factory.mktemp("helm-home"))


@pytest_asyncio.fixture()
async def admin(tools: Tools) -> AsyncIterator[Kube]:
    kube = await Kube.connect(str(tools.cluster.kubeconfig))
    yield kube
    await kube.close()


def _readme_adoption_commands() -> list[list[str]]:
    """The one-time `kubectl label/annotate/patch crd` lines of README "Upgrading and CRDs", as written there."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Upgrading and CRDs"):readme.index("### Argo CD health check")]
    lines = [line for block in re.findall(r"```sh\n(.*?)```", section, re.S) for line in block.splitlines()
             if re.match(r"kubectl (label|annotate|patch) crd ", line)]
    assert len(lines) == 3, lines
    return [shlex.split(line)[1:] for line in lines]


def _chart_with_a_changed_crd(directory: Path) -> Path:
    """A copy of the chart whose PaymentIntent CRD has one more optional spec field and printer column: what a
    new kubepay version's CRD change looks like."""
    chart = directory / "kubepay"
    shutil.copytree(CHART, chart)
    path = chart / "files" / "crds" / "paymentintents.kubepay.io.yaml"
    crd = yaml.safe_load(path.read_text())
    [version] = crd["spec"]["versions"]
    version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["note"] = {
        "type": "string", "description": "A field of the next version."}
    version["additionalPrinterColumns"].append({"name": "Note", "type": "string", "jsonPath": ".spec.note"})
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


async def _crd(admin: Kube, name: str) -> Any:
    return await client.ApiextensionsV1Api(admin.api).read_custom_resource_definition(name)


async def test_crds_adopted_once_then_upgraded_with_the_release_and_kept_on_uninstall(
        tools: Tools, admin: Kube, tmp_path: Path) -> None:
    release, namespace, shop = "kubepay", "kubepay", "shop-crds"  # the README's names
    # A release from before this chart templated its CRDs: they were applied from crds/ and Helm does not own them.
    await tools.kubectl_ok("apply", "--server-side", "-f", REPO / "crds")
    await tools.kubectl_ok("create", "namespace", shop)
    await tools.helm_ok("install", release, CHART, "-n", namespace, "--create-namespace", "--no-hooks", *VALUES,
                        "--set", "crds.enabled=false")
    await wait_for(lambda: admin.serves_payments(shop), timeout=30, what="the CRDs to be served")
    spec = {"orderId": "9001", "amount": 1200, "currency": "usd"}
    await admin.create_pi(shop, "before-upgrade", spec)

    # The first upgrade with templated CRDs stops: Helm will not take over objects it does not own.
    code, _, err = await tools.run(tools.helm, "upgrade", release, CHART, "-n", namespace, "--no-hooks", *VALUES)
    assert code != 0
    assert "invalid ownership metadata" in err, err
    for args in _readme_adoption_commands():
        await tools.kubectl_ok(*args)
    await tools.helm_ok("upgrade", release, CHART, "-n", namespace, "--no-hooks", *VALUES)
    for name in KUBEPAY_CRDS:
        crd = await _crd(admin, name)
        assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep", name
        assert crd.metadata.annotations["meta.helm.sh/release-name"] == release
        assert crd.metadata.labels["app.kubernetes.io/instance"] == release
    manifest = await tools.helm_ok("get", "manifest", release, "-n", namespace)
    owned = {d["metadata"]["name"] for d in yaml.safe_load_all(manifest)
             if d and d["kind"] == "CustomResourceDefinition"}
    assert owned == set(KUBEPAY_CRDS)

    # Before the next version's CRD is served, its new field is pruned; `helm upgrade` alone changes that.
    pruned = await admin.create_pi(shop, "too-early", {**spec, "orderId": "9002", "note": "gift"})
    assert "note" not in pruned["spec"]
    await tools.helm_ok("upgrade", release, _chart_with_a_changed_crd(tmp_path), "-n", namespace, "--no-hooks",
                        *VALUES)
    crd = await _crd(admin, "paymentintents.kubepay.io")
    assert "Note" in [c.name for c in crd.spec.versions[0].additional_printer_columns]

    async def note_kept() -> dict[str, Any] | None:  # the API server serves the new schema a moment later
        try:
            created: dict[str, Any] = await admin.create_pi(shop, "after-upgrade", {**spec, "orderId": "9003",
                                                                                    "note": "gift"})
        except ApiException as exc:
            if exc.status == 409:  # created by an earlier try, with the field pruned
                await admin.custom.delete_namespaced_custom_object(GROUP, VERSION, shop, PLURAL, "after-upgrade")
                return None
            raise
        if "note" in created["spec"]:
            return created
        await admin.custom.delete_namespaced_custom_object(GROUP, VERSION, shop, PLURAL, "after-upgrade")
        return None
    kept = await wait_for(note_kept, timeout=30, what="the upgraded schema to keep spec.note")
    assert kept["spec"]["note"] == "gift"

    # Uninstall: the CRDs stay (crds.keep), and so does every PaymentIntent.
    uninstalled = await tools.helm_ok("uninstall", release, "-n", namespace, "--wait")
    assert "kept due to the resource policy" in uninstalled, uninstalled
    for name in KUBEPAY_CRDS:
        assert (await _crd(admin, name)).metadata.deletion_timestamp is None
    left = await admin.custom.list_namespaced_custom_object(GROUP, VERSION, shop, PLURAL)
    assert sorted(o["metadata"]["name"] for o in left["items"]) == ["after-upgrade", "before-upgrade", "too-early"]


KUBEPAY_RESOURCES = ("paymentintents", "paymentrefunds", "paymentintents/status", "paymentrefunds/status")
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
READ = {f"{verb} {resource}" for verb in ("get", "list", "watch") for resource in KUBEPAY_RESOURCES}
WRITE = {f"{verb} {resource}" for verb in ("create", "update", "patch", "delete", "deletecollection")
         for resource in ("paymentintents", "paymentrefunds")}
# What a user bound with a RoleBinding to each built-in ClusterRole may do with kubepay's kinds (README "What each
# ServiceAccount can do"): status stays the controller's and the receiver's.
BUILT_IN = {"view": READ, "edit": READ | WRITE, "admin": READ | WRITE}


async def _may(admin: Kube, user: str, verb: str, probe: str, namespace: str) -> bool:
    resource, _, subresource = probe.partition("/")
    group = "" if resource == "secrets" else GROUP
    review = await client.AuthorizationV1Api(admin.api).create_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": ["system:authenticated"],
                 "resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                        "subresource": subresource, "namespace": namespace}}})
    return bool(review.status.allowed)


async def _table(admin: Kube, user: str, namespace: str) -> set[str]:
    return {f"{verb} {resource}" for resource in KUBEPAY_RESOURCES for verb in VERBS
            if await _may(admin, user, verb, resource, namespace)}


async def test_aggregated_roles_give_view_edit_and_admin_kubepays_kinds(tools: Tools, admin: Kube) -> None:
    team, elsewhere = "team", "elsewhere"
    rbac = client.RbacAuthorizationV1Api(admin.api)
    for namespace in (team, elsewhere):
        await admin.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    for role in BUILT_IN:
        await rbac.create_namespaced_role_binding(team, {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": f"{role}-user"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"{role}-user"}]})
    # Before the chart, the built-in roles know nothing of kubepay's kinds.
    for role in BUILT_IN:
        assert await _table(admin, f"{role}-user", team) == set(), role

    await tools.helm_ok("install", "roles", CHART, "-n", "roles", "--create-namespace", "--no-hooks", *VALUES,
                        "--set", "crds.enabled=false")

    async def aggregated() -> bool:  # kube-controller-manager's clusterrole-aggregation controller folds them in
        return all([await _may(admin, "view-user", "get", "paymentintents", team),
                    await _may(admin, "admin-user", "deletecollection", "paymentrefunds", team)])
    await wait_for(aggregated, timeout=30, what="the aggregated ClusterRoles in view, edit and admin")
    found = {role: await _table(admin, f"{role}-user", team) for role in BUILT_IN}
    assert found == BUILT_IN
    for role in BUILT_IN:  # a RoleBinding grants in its namespace only
        assert await _table(admin, f"{role}-user", elsewhere) == set(), role
    assert not await _may(admin, "view-user", "get", "secrets", team)  # the built-in view never reads Secrets
    view = await rbac.read_cluster_role("view")
    assert any(GROUP in (rule.api_groups or []) for rule in view.rules)
    await tools.helm_ok("uninstall", "roles", "-n", "roles", "--wait")


async def test_the_api_server_accepts_every_object_with_every_option_on(tools: Tools, tmp_path: Path) -> None:
    """tests/chart/values-all.yaml (every option, each component's pod extensions included) rendered, and each
    object the API server can validate sent to it with a server-side dry run: schemas, defaulting and admission
    of a real kube-apiserver, not the offline schema check. Kinds whose CRDs another operator installs
    (Prometheus Operator, cert-manager) and the peering object of the peering CRD are left out."""
    foreign = {"monitoring.coreos.com/v1", "cert-manager.io/v1", "kopf.dev/v1"}
    objects = [o for o in await asyncio.to_thread(monitoring.rendered) if o["apiVersion"] not in foreign]
    namespaces = {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}
    for namespace in sorted(namespaces):
        code, _, err = await tools.run(tools.kubectl, "create", "namespace", namespace)
        assert code == 0 or "AlreadyExists" in err, err
    manifest = tmp_path / "all.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    out = await tools.kubectl_ok("apply", "--dry-run=server", "--server-side", "--field-manager", "helm",
                                 "--force-conflicts", "-f", manifest)
    applied = [line for line in out.splitlines() if line.strip()]
    assert len(applied) == len(objects), out
    assert {o["kind"] for o in objects} >= {"Deployment", "Job", "Pod", "CustomResourceDefinition", "ConfigMap"}
