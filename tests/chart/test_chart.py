"""The Helm chart, rendered offline by the real helm binary and checked object by object."""

from __future__ import annotations

import base64
import filecmp
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from kubepay_sandbox.kube_emulator import validate_custom_resource
from tests.chart.conftest import (
    CHART,
    NAMESPACE,
    RELEASE,
    VALUES_ALL,
    VALUES_REQUIRED,
    Doc,
    Render,
    env_of,
    find,
    one,
    pod_spec,
    run_helm,
)
from tests.chart.tools import KUBERNETES_VERSION, REPO

# API groups that are not built into Kubernetes: kubernetes-validate has no schema for them.
CUSTOM_GROUPS = {"cert-manager.io", "monitoring.coreos.com", "kopf.dev", "kubepay.io"}
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
)
VARIANTS = {
    "required": [VALUES_REQUIRED],
    "all": [VALUES_ALL],
}
EXTRA_SETS = {  # more shapes worth validating: existing Secret, cert-manager with an issuer, a namespaced controller
    "existing-secret": (
        [VALUES_REQUIRED],
        ["existingSecret=kubepay-credentials", "stripe.secretKey=", "stripe.webhookSecret=", "database.url="],
    ),
    "host-and-issuer": (
        [VALUES_REQUIRED],
        [
            "database.url=", "database.host=pg", "database.password=pw", "admission.certManager.enabled=true",
            "admission.certManager.issuerRef.name=ca", "admission.certManager.issuerRef.kind=ClusterIssuer",
        ],
    ),
    "namespaced-single": ([VALUES_REQUIRED], ["controller.watchNamespace=shop", "admission.enabled=false"]),
    "api-serviceaccount": ([VALUES_REQUIRED], ["api.enabled=true", "api.auth.mode=serviceaccount"]),
    "api-none": ([VALUES_REQUIRED], ["api.enabled=true", "api.auth.mode=none",
                                     "api.auth.allowedClientNamespaceLabels.team=shop"]),
}
REVIEW_RULES = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
]


def all_variants(render: Render) -> dict[str, list[Doc]]:
    out = {name: render(*values) for name, values in VARIANTS.items()}
    out.update({name: render(*values, sets=sets) for name, (values, sets) in EXTRA_SETS.items()})
    return out


def group_of(obj: Doc) -> str:
    api_version: str = obj["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def containers(obj: Doc) -> list[Doc]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads(objects: list[Doc]) -> list[Doc]:
    """Everything that makes pods: the Deployments, the migration Job and the helm test Pod."""
    return [o for o in objects if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet", "Pod")]


def processes(objects: list[Doc]) -> list[Doc]:
    """The workloads that run kubepay itself (not the helm test's check)."""
    return [o for o in workloads(objects) if o["kind"] != "Pod"]


def rules_of(objects: list[Doc], component: str) -> list[Doc]:
    roles = [
        o for o in objects
        if o["kind"] in ("Role", "ClusterRole") and o["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    assert roles, f"no Role or ClusterRole for {component}"
    return [rule for role in roles for rule in role["rules"]]


def grants(rules: list[Doc], resource: str, verb: str, group: str = "") -> bool:
    return any(
        group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", [])
        for r in rules
    )


# --- helm itself -------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [VALUES_REQUIRED, VALUES_ALL], ids=["required", "all"])
def test_helm_lint_strict(helm: Path, values: Path) -> None:
    result = run_helm(helm, "lint", "--strict", CHART, "--values", values, "--kube-version", KUBERNETES_VERSION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_crds_are_the_repository_crds() -> None:
    top, chart = REPO / "crds", CHART / "files" / "crds"
    top_files = sorted(p.name for p in top.iterdir() if p.is_file())
    chart_files = sorted(p.name for p in chart.iterdir() if p.is_file())
    assert chart_files == top_files, "helm/kubepay/files/crds/ differs from crds/: run `make chart-crds`"
    for name in top_files:
        assert filecmp.cmp(top / name, chart / name, shallow=False), f"{name} differs: run `make chart-crds`"
    # A chart's crds/ folder would make Helm install them a second way (first install only, never upgraded).
    assert not (CHART / "crds").exists()


def kubepay_crds(objects: list[Doc]) -> dict[str, Doc]:
    return {o["metadata"]["name"]: o for o in find(objects, "CustomResourceDefinition")
            if o["spec"]["group"] == "kubepay.io"}


def test_crds_are_release_objects_kept_on_uninstall(render: Render, default_objects: list[Doc]) -> None:
    """templates/crds.yaml renders the repository's crds/ unchanged but for the chart's labels and, with crds.keep,
    helm.sh/resource-policy: keep; crds.enabled=false leaves them out (and kopf's peering CRDs follow crds.keep)."""
    sources = {c["metadata"]["name"]: c for c in crds_by_kind().values()}
    rendered = kubepay_crds(default_objects)
    assert set(rendered) == set(sources) == {"paymentintents.kubepay.io", "paymentrefunds.kubepay.io"}
    for name, crd in rendered.items():
        source = sources[name]
        assert {k: v for k, v in crd.items() if k != "metadata"} == {k: v for k, v in source.items() if k != "metadata"}
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}, name
        labels = crd["metadata"]["labels"]
        assert source["metadata"]["labels"].items() <= labels.items(), name
        assert (labels["app.kubernetes.io/instance"], labels["app.kubernetes.io/component"]) == (RELEASE, "crds")
    not_kept = kubepay_crds(render(VALUES_REQUIRED, sets=["crds.keep=false"]))
    assert set(not_kept) == set(sources)
    assert all("annotations" not in crd["metadata"] for crd in not_kept.values())
    assert kubepay_crds(render(VALUES_REQUIRED, sets=["crds.enabled=false"])) == {}
    peering = render(VALUES_ALL, sets=["crds.keep=false"])
    for crd in find(peering, "CustomResourceDefinition", ".kopf.dev"):
        assert "annotations" not in crd["metadata"], crd["metadata"]["name"]
    assert len(find(peering, "CustomResourceDefinition", ".kopf.dev")) == 2


# --- schema validation -------------------------------------------------------------------------------


def test_every_rendered_builtin_object_is_valid_for_kubernetes(render: Render) -> None:
    checked: set[str] = set()
    for variant, objects in all_variants(render).items():
        for obj in objects:
            if group_of(obj) in CUSTOM_GROUPS:
                continue  # custom resources: no schema here (ours are checked against the CRDs below)
            where = f"{variant}: {obj['kind']}/{obj['metadata']['name']}"
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{where}: {path}: {exc.message}")
            except SchemaNotFoundError as exc:
                pytest.fail(f"{where}: {exc.message} (a built-in kind must have a schema)")
            checked.add(obj["kind"])
    assert {"Deployment", "Job", "Service", "Secret", "ClusterRole", "Role", "ValidatingWebhookConfiguration",
            "PodDisruptionBudget", "NetworkPolicy", "Ingress", "CustomResourceDefinition"} <= checked


def test_dev_manifests_are_valid_for_kubernetes() -> None:
    files = sorted((REPO / "deploy" / "dev").glob("*.yaml"))
    manifests = files
    assert manifests
    for path in manifests:
        for obj in yaml.safe_load_all(path.read_text()):
            if obj:
                try:
                    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(f"{path.name}: {obj['kind']}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_dev_values_render(render: Render) -> None:
    objects = render(REPO / "deploy" / "values-kind.yaml")
    assert one(objects, "Deployment", "-controller")


def crds_by_kind() -> dict[str, dict[str, Any]]:
    crds = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]
    return {c["spec"]["names"]["kind"]: c for c in crds}


def test_examples_are_valid_custom_resources() -> None:
    crds = crds_by_kind()
    examples = sorted((REPO / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj:
                continue
            assert obj["kind"] in crds, f"{path.name}: no CRD in crds/ for kind {obj['kind']}"
            assert validate_custom_resource(crds[obj["kind"]], obj) == [], path.name


def test_the_crd_check_catches_a_bad_example() -> None:
    crd = crds_by_kind()["PaymentIntent"]
    bad = {"apiVersion": "kubepay.io/v1alpha1", "kind": "PaymentIntent", "metadata": {"name": "x"},
           "spec": {"orderId": "1", "amount": 0, "currency": "USD"}}
    assert validate_custom_resource(crd, bad)


# --- RBAC -------------------------------------------------------------------------------------------


def test_no_wildcards_in_rbac(render: Render) -> None:
    for variant, objects in all_variants(render).items():
        for role in find(objects, "Role") + find(objects, "ClusterRole"):
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                    assert "*" not in rule.get(field, []), f"{variant}: {role['metadata']['name']}: {rule}"
                    assert not any("*" in item for item in rule.get(field, [])), f"{variant}: {rule}"


def test_receiver_only_reads_and_patches_status(render: Render) -> None:
    for variant, objects in all_variants(render).items():
        rules = rules_of(objects, "receiver")
        assert not any("secrets" in r.get("resources", []) for r in rules), variant
        for rule in rules:
            assert rule["apiGroups"] == ["kubepay.io"], variant
            assert set(rule["resources"]) <= {"paymentintents/status", "paymentrefunds/status"}, variant
            assert set(rule["verbs"]) <= {"get", "patch"}, variant
        assert grants(rules, "paymentintents/status", "patch", "kubepay.io")
        assert grants(rules, "paymentrefunds/status", "patch", "kubepay.io")
        assert not grants(rules, "paymentintents", "get", "kubepay.io")


def test_controller_rbac_covers_what_it_does(render: Render) -> None:
    """What tests/real/test_chart_on_real_cluster.py sees the controller use on a real API server (with the
    default values), in every variant: nothing more, since kubepay reads and writes status only through the
    status subresource, lists and watches both kinds and patches only a payment's finalizer."""
    for variant in ("required", "all"):
        rules = rules_of(all_variants(render)[variant], "controller")
        for resource in ("paymentintents", "paymentrefunds"):
            for verb in ("list", "watch"):
                assert grants(rules, resource, verb, "kubepay.io"), (variant, resource, verb)
            assert grants(rules, resource, "patch", "kubepay.io") == (resource == "paymentintents"), resource
            for verb in ("get", "update"):
                assert not grants(rules, resource, verb, "kubepay.io"), (variant, resource, verb)
            # Only retention deletes ("all" turns it on).
            assert grants(rules, resource, "delete", "kubepay.io") == (variant == "all"), (variant, resource)
            for verb in ("get", "patch"):
                assert grants(rules, f"{resource}/status", verb, "kubepay.io"), (variant, resource, verb)
        assert grants(rules, "paymentintents/finalizers", "update", "kubepay.io")  # blockOwnerDeletion
        assert not grants(rules, "paymentrefunds/finalizers", "update", "kubepay.io")
        assert [v for v in ("create", "get", "list", "delete") if grants(rules, "secrets", v)] == ["create"]
        assert grants(rules, "events", "create") and not grants(rules, "events", "create", "events.k8s.io")
        # kopf follows CRDs only when it watches every namespace ("all" watches one), and never namespaces.
        assert grants(rules, "customresourcedefinitions", "watch", "apiextensions.k8s.io") == (variant == "required")
        assert not grants(rules, "namespaces", "list") and not grants(rules, "namespaces", "watch")
        peerings = "kopfpeerings" if variant == "all" else "clusterkopfpeerings"  # "all": two replicas, peering
        for verb in ("get", "patch"):  # kopf keeps alive with patches; the workers' standby reads with get
            assert grants(rules, peerings, verb, "kopf.dev") == (variant == "all"), (variant, verb)


def controller_env(objects: list[Doc]) -> dict[str, str | None]:
    [controller] = [o for o in find(objects, "Deployment")
                    if o["metadata"]["labels"]["app.kubernetes.io/component"] == "controller"]
    return {e["name"]: e.get("value") for e in containers(controller)[0]["env"]}


def test_retention_sets_the_controllers_default(all_objects: list[Doc], default_objects: list[Doc]) -> None:
    assert controller_env(all_objects)["KUBEPAY_RETAIN_FINISHED"] == "30d"
    assert "KUBEPAY_RETAIN_FINISHED" not in controller_env(default_objects)


def aggregated(objects: list[Doc]) -> dict[str, Doc]:
    """The ClusterRoles for people, by the built-in role each is aggregated into first (view, edit)."""
    roles = [o for o in find(objects, "ClusterRole")
             if o["metadata"]["labels"]["app.kubernetes.io/component"] == "rbac"]
    return {o["metadata"]["name"].rsplit("-", 1)[1]: o for o in roles}


def test_namespaced_controller_gets_a_role_not_cluster_wide_access(all_objects: list[Doc], render: Render) -> None:
    # The only ClusterRoles are the aggregated ones for people, bound to nobody and granting no Secret.
    assert find(all_objects, "ClusterRoleBinding") == []
    assert find(all_objects, "ClusterRole") == list(aggregated(all_objects).values())
    namespaced = set()
    for variant, objects in all_variants(render).items():
        watched = controller_env(objects)["KUBEPAY_NAMESPACE"]
        if not watched:
            continue
        namespaced.add(variant)
        # A controller that watches one namespace may create Secrets there and nowhere else; no ClusterRole
        # grants any verb on Secrets.
        for role in find(objects, "ClusterRole"):
            assert not any("secrets" in rule.get("resources", []) for rule in role["rules"]), (variant, role)
        for role in find(objects, "Role"):
            if any("secrets" in rule.get("resources", []) for rule in role["rules"]):
                assert role["metadata"]["namespace"] == watched, (variant, role["metadata"]["name"])
    assert namespaced == {"all", "namespaced-single"}
    for role in find(all_objects, "Role"):
        assert role["metadata"]["namespace"] == "payments"
    for binding in find(all_objects, "RoleBinding") + find(all_objects, "ClusterRoleBinding"):
        for subject in binding["subjects"]:
            assert subject["namespace"] == NAMESPACE


def test_aggregated_cluster_roles_for_view_edit_and_admin(render: Render, default_objects: list[Doc]) -> None:
    for variant, objects in all_variants(render).items():
        roles = aggregated(objects)
        assert set(roles) == {"view", "edit"}, variant
        labels = {name: {k.rsplit("-", 1)[1] for k, v in role["metadata"]["labels"].items()
                         if k.startswith("rbac.authorization.k8s.io/aggregate-to-") and v == "true"}
                  for name, role in roles.items()}
        assert labels == {"view": {"view", "edit", "admin"}, "edit": {"edit", "admin"}}, variant
        view, edit = roles["view"]["rules"], roles["edit"]["rules"]
        for resource in ("paymentintents", "paymentrefunds"):
            for verb in ("get", "list", "watch"):
                assert grants(view, resource, verb, "kubepay.io") and grants(view, f"{resource}/status", verb,
                                                                             "kubepay.io")
            for verb in ("create", "update", "patch", "delete", "deletecollection"):
                assert grants(edit, resource, verb, "kubepay.io") and not grants(view, resource, verb, "kubepay.io")
                assert not grants(edit + view, f"{resource}/status", verb, "kubepay.io")  # the controller's
        for rule in view + edit:
            assert rule["apiGroups"] == ["kubepay.io"], (variant, rule)  # so never Secrets
    off = render(VALUES_REQUIRED, sets=["rbac.aggregateClusterRoles=false"])
    assert aggregated(off) == {}
    assert len(find(off, "ClusterRole")) == len(find(default_objects, "ClusterRole")) - 2


def test_orders_consumer_in_the_controller(all_objects: list[Doc], default_objects: list[Doc]) -> None:
    assert grants(rules_of(all_objects, "controller"), "paymentintents", "create", "kubepay.io")
    assert not grants(rules_of(default_objects, "controller"), "paymentintents", "create", "kubepay.io")
    env = controller_env(all_objects)
    assert env["KUBEPAY_ORDERS_CONSUMER"] == "true"
    assert env["KUBEPAY_ORDERS_NAMESPACE"] == "payments"  # where this controller is allowed to create


def test_api_rbac_when_enabled(all_objects: list[Doc], default_objects: list[Doc]) -> None:
    rules = rules_of(all_objects, "api")
    assert grants(rules, "paymentintents", "create", "kubepay.io") and grants(rules, "secrets", "get")
    assert not grants(rules, "secrets", "list") and not grants(rules, "paymentintents", "delete", "kubepay.io")
    assert not [o for o in default_objects if o["metadata"]["labels"].get("app.kubernetes.io/component") == "api"]


def test_api_auth_mode_reaches_the_process_and_only_token_mode_has_a_token(render: Render) -> None:
    variants = all_variants(render)
    for variant, mode in (("all", "token"), ("api-serviceaccount", "serviceaccount"), ("api-none", "none")):
        env = env_of(containers(one(variants[variant], "Deployment", "-api"))[0])
        assert env["KUBEPAY_API_AUTH"]["value"] == mode, variant
        assert ("KUBEPAY_API_TOKEN" in env) == (mode == "token"), variant
        credentials = one(variants[variant], "Secret", f"{RELEASE}-kubepay")
        assert ("KUBEPAY_API_TOKEN" in credentials["stringData"]) == (mode == "token"), variant


def test_serviceaccount_mode_grants_the_reviews_and_nothing_more(render: Render, all_objects: list[Doc]) -> None:
    variants = all_variants(render)
    objects = variants["api-serviceaccount"]
    reviewer = one(objects, "ClusterRole", f"-api-reviewer-{NAMESPACE}")
    assert reviewer["rules"] == REVIEW_RULES
    binding = one(objects, "ClusterRoleBinding", f"-api-reviewer-{NAMESPACE}")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": reviewer["metadata"]["name"]}
    api_account = pod_spec(one(objects, "Deployment", "-api"))["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": api_account, "namespace": NAMESPACE}]
    assert [r for r in rules_of(objects, "api") if r not in REVIEW_RULES] == rules_of(all_objects, "api")
    for variant, rendered in variants.items():  # no other mode, and no other component, may review
        for role in find(rendered, "Role") + find(rendered, "ClusterRole"):
            reviews = any(grants(role["rules"], resource, "create", group) for resource, group in (
                ("tokenreviews", "authentication.k8s.io"), ("subjectaccessreviews", "authorization.k8s.io")))
            assert reviews == (role is reviewer), f"{variant}: {role['metadata']['name']}"


def test_none_mode_admits_only_labelled_pods(render: Render) -> None:
    [policy] = find(all_variants(render)["api-none"], "NetworkPolicy")  # even with networkPolicy.enabled false
    assert policy["metadata"]["name"] == f"{RELEASE}-kubepay-api"
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    labelled = {"podSelector": {"matchLabels": {"kubepay.io/api-client": "true"}}}
    assert policy["spec"]["ingress"] == [{
        "ports": [{"port": "http", "protocol": "TCP"}],
        "from": [{**labelled, "namespaceSelector": {"matchLabels": {"team": "shop"}}}, labelled],
    }, {"ports": [{"port": "metrics", "protocol": "TCP"}]}]  # metrics: from networkPolicy.metricsFrom (anyone)
    # Another label; with every other policy on, networkPolicy.apiFrom does not widen the API's.
    objects = render(VALUES_ALL, sets=[
        "api.auth.mode=none", "api.auth.allowedClientLabels.kubepay\\.io/api-client=null",
        "api.auth.allowedClientLabels.app=legacy-shop", "networkPolicy.apiFrom[0].podSelector.matchLabels.any=pod"])
    [rule, metrics] = one(objects, "NetworkPolicy", "-api")["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app": "legacy-shop"}}}]
    assert metrics == {"ports": [{"port": "metrics", "protocol": "TCP"}],
                       "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}
    # Token and serviceaccount modes: the API's policy only with networkPolicy.enabled, from networkPolicy.apiFrom.
    for variant, expected in (("all", [[{"podSelector": {}}]]), ("api-serviceaccount", [])):
        policies = find(all_variants(render)[variant], "NetworkPolicy", "-api")
        assert [p["spec"]["ingress"][0]["from"] for p in policies] == expected, variant


# --- pods ---------------------------------------------------------------------------------------------


def test_every_container_is_hardened(render: Render) -> None:
    for variant, objects in all_variants(render).items():
        for obj in workloads(objects):
            spec = pod_spec(obj)
            where = f"{variant}: {obj['kind']}/{obj['metadata']['name']}"
            assert spec["securityContext"]["runAsNonRoot"] is True, where
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
            for c in containers(obj):
                sc = c["securityContext"]
                assert sc["runAsNonRoot"] is True, where
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["capabilities"]["drop"] == ["ALL"], where
                assert "add" not in sc["capabilities"], where
                assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
                assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
                assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
                assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), where
                if obj["kind"] == "Deployment":
                    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", where
                    assert "readinessProbe" in c, where


def test_probes_and_ports(default_objects: list[Doc], all_objects: list[Doc]) -> None:
    controller = containers(one(default_objects, "Deployment", "-controller"))[0]
    assert controller["args"] == ["operator"]
    ports = {p["name"]: p["containerPort"] for p in controller["ports"]}
    assert ports == {"health": 8090, "metrics": 9090, "admission": 9443}
    # Liveness is the process loop; readiness is start-up done and the dependencies answering.
    assert (controller["livenessProbe"]["httpGet"], controller["readinessProbe"]["httpGet"]) == (
        {"path": "/healthz", "port": "health"}, {"path": "/readyz", "port": "health"})
    assert env_of(controller)["KUBEPAY_METRICS_PORT"]["value"] == "9090"
    for component, args, port in (("receiver", "webhook", 8080), ("api", "api", 8081)):
        [container] = containers(one(all_objects, "Deployment", f"-{component}"))
        assert container["args"] == [args]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        # /metrics is on a port of its own, which the Service names for the ServiceMonitor; the Ingress
        # reaches only the webhook paths on `http`.
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port, "metrics": 9090}
        assert env_of(container)["KUBEPAY_METRICS_PORT"]["value"] == "9090"
        service = one(all_objects, "Service", f"-{component}")
        service_ports = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
        assert service_ports == {"http": "http", "metrics": "metrics"}
    monitors = {m["metadata"]["name"]: m["spec"]["endpoints"] for m in find(all_objects, "ServiceMonitor")}
    assert {name: [e["port"] for e in endpoints] for name, endpoints in monitors.items()} == {
        f"{RELEASE}-kubepay-{c}": ["metrics"] for c in ("controller", "receiver", "api")}


def test_each_process_gets_only_its_own_secrets(render: Render) -> None:
    for variant, objects in all_variants(render).items():
        env = {o["metadata"]["name"].removeprefix(f"{RELEASE}-kubepay-"): env_of(containers(o)[0])
               for o in processes(objects)}
        assert "STRIPE_SECRET_KEY" in env["controller"] and "STRIPE_WEBHOOK_SECRET" not in env["controller"]
        assert "STRIPE_WEBHOOK_SECRET" in env["receiver"] and "STRIPE_SECRET_KEY" not in env["receiver"]
        assert not {"STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "KUBEPAY_API_TOKEN"} & set(env["migrate"]), variant
        if "api" in env:
            assert "STRIPE_SECRET_KEY" not in env["api"]
        for name, container_env in env.items():
            for var in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "KUBEPAY_API_TOKEN", "DATABASE_URL",
                        "POSTGRES_PASSWORD"):
                if var in container_env:
                    assert "value" not in container_env[var], f"{variant}: {name}: {var} must come from a Secret"
            assert container_env["KUBEPAY_MIGRATIONS_DIR"]["value"] == "/app/migrations"


def test_existing_secret_is_used_and_none_is_created(render: Render) -> None:
    objects = all_variants(render)["existing-secret"]
    assert [s["metadata"]["name"] for s in find(objects, "Secret")] == [f"{RELEASE}-kubepay-admission-tls"]
    for obj in workloads(objects):
        for var in env_of(containers(obj)[0]).values():
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "kubepay-credentials", obj["metadata"]["name"]


def test_peering_with_more_than_one_controller(all_objects: list[Doc], default_objects: list[Doc]) -> None:
    controller = one(all_objects, "Deployment", "-controller")
    env = env_of(containers(controller)[0])
    assert (env["KUBEPAY_PEERING_NAME"]["value"], env["KUBEPAY_PEERING_LIFETIME"]["value"]) == ("kubepay-peering", "20")
    assert controller["spec"]["strategy"]["type"] == "RollingUpdate"
    crds = {c["metadata"]["name"] for c in find(all_objects, "CustomResourceDefinition")}
    assert {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= crds
    peering = one(all_objects, "KopfPeering")
    assert peering["metadata"]["namespace"] == "payments"
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    single = one(default_objects, "Deployment", "-controller")
    assert "KUBEPAY_PEERING_NAME" not in env_of(containers(single)[0])
    assert single["spec"]["strategy"]["type"] == "Recreate"
    assert not find(default_objects, "ClusterKopfPeering")


# Per-component pod extensions (values key -> the workload it shapes and the chart's own volumes, in order).
POD_EXTENSION_WORKLOADS = {
    "controller": ("Deployment", "-controller", ["tmp", "admission-tls"]),
    "receiver": ("Deployment", "-receiver", ["tmp"]),
    "api": ("Deployment", "-api", ["tmp"]),
    "migration": ("Job", "-migrate", ["tmp"]),
}
POD_EXTENSIONS = ("extraEnv", "extraEnvFrom", "extraVolumes", "extraVolumeMounts", "podAnnotations", "podLabels",
                  "priorityClassName", "topologySpreadConstraints", "nodeSelector", "tolerations", "affinity")
SCHEDULING = ("priorityClassName", "topologySpreadConstraints", "nodeSelector", "tolerations", "affinity")


def test_pod_extensions_land_in_every_workload(all_objects: list[Doc], render: Render) -> None:
    """values-all.yaml sets every extension for every component; each lands in its pod, after the chart's own
    entries: env is the chart's, then the global extraEnv, then the component's (which wins a name in both: a
    duplicate name is refused by a server-side apply, Helm 4's way)."""
    values = yaml.safe_load(VALUES_ALL.read_text())
    for component, (kind, suffix, own_volumes) in POD_EXTENSION_WORKLOADS.items():
        wanted = values[component]
        assert all(wanted.get(key) for key in POD_EXTENSIONS), (component, [k for k in POD_EXTENSIONS
                                                                              if not wanted.get(k)])
        workload = one(all_objects, kind, suffix)
        template, spec = workload["spec"]["template"], pod_spec(workload)
        [container] = spec["containers"]
        own_names = {e["name"] for e in wanted["extraEnv"]}
        extra_env = [e for e in values["extraEnv"] if e["name"] not in own_names] + wanted["extraEnv"]
        assert container["env"][-len(extra_env):] == extra_env, component
        names = [e["name"] for e in container["env"]]
        assert len(names) == len(set(names)), (component, names)
        assert container["envFrom"] == wanted["extraEnvFrom"], component
        assert [v["name"] for v in spec["volumes"]] == own_volumes + [v["name"] for v in wanted["extraVolumes"]]
        assert spec["volumes"][len(own_volumes):] == wanted["extraVolumes"], component
        mounts = container["volumeMounts"]
        assert mounts[len(own_volumes):] == wanted["extraVolumeMounts"], component
        assert [m["name"] for m in mounts[:len(own_volumes)]] == own_volumes, component
        assert wanted["podLabels"].items() <= template["metadata"]["labels"].items(), component
        assert wanted["podAnnotations"].items() <= template["metadata"]["annotations"].items(), component
        assert template["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == container["name"]
        for key in SCHEDULING:
            assert spec[key] == wanted[key], (component, key)
    # The chart's labels win, so podLabels cannot move a pod out of its Deployment's selector.
    clash = render(VALUES_ALL, sets=["receiver.podLabels.app\\.kubernetes\\.io/component=other"])
    receiver = one(clash, "Deployment", "-receiver")
    assert receiver["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "receiver"


def test_pod_extensions_are_off_by_default(render: Render) -> None:
    defaults = render(*EXTRA_SETS["api-serviceaccount"][0], sets=EXTRA_SETS["api-serviceaccount"][1])
    values = yaml.safe_load(VALUES_ALL.read_text())
    extra_names = {e["name"] for e in values["extraEnv"]} | {
        e["name"] for component in POD_EXTENSION_WORKLOADS for e in values[component]["extraEnv"]}
    for component, (kind, suffix, own_volumes) in POD_EXTENSION_WORKLOADS.items():
        workload = one(defaults, kind, suffix)
        template, spec = workload["spec"]["template"], pod_spec(workload)
        [container] = spec["containers"]
        assert "envFrom" not in container, component
        assert not extra_names & set(env_of(container)), component
        assert [v["name"] for v in spec["volumes"]] == own_volumes, component
        assert [m["name"] for m in container["volumeMounts"]] == own_volumes, component
        assert set(template["metadata"]["labels"]) == set(STANDARD_LABELS), component
        assert set(template["metadata"]["annotations"]) <= {"kubectl.kubernetes.io/default-container",
                                                            "checksum/secret"}, component
        assert not set(SCHEDULING) & set(spec), component


# --- hooks, admission, extras ----------------------------------------------------------------------


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(render: Render) -> None:
    for variant, objects in all_variants(render).items():
        job = one(objects, "Job", "-migrate")
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade", variant
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded", variant
        assert containers(job)[0]["args"] == ["migrate"]
        assert pod_spec(job)["restartPolicy"] == "Never"
        assert pod_spec(job)["automountServiceAccountToken"] is False
        # Everything the Job needs exists before it: hook objects with a lower weight, or the user's Secret.
        weight = int(annotations["helm.sh/hook-weight"])
        needed = {("ServiceAccount", pod_spec(job)["serviceAccountName"])} | {
            ("Secret", v["valueFrom"]["secretKeyRef"]["name"])
            for v in env_of(containers(job)[0]).values()
            if "secretKeyRef" in v.get("valueFrom", {})
        }
        hooks = {
            (o["kind"], o["metadata"]["name"]): o for o in objects
            if "pre-install" in o["metadata"].get("annotations", {}).get("helm.sh/hook", "")
        }
        for key in needed - {("Secret", "kubepay-credentials")}:
            assert key in hooks, f"{variant}: the Job needs {key}, which is not a pre-install hook"
            assert int(hooks[key]["metadata"]["annotations"]["helm.sh/hook-weight"]) < weight
            assert "pre-upgrade" in hooks[key]["metadata"]["annotations"]["helm.sh/hook"]
        hook_secrets = [o for o in hooks.values() if o["kind"] == "Secret"]
        for secret in hook_secrets:
            assert set(secret.get("stringData", {})) <= {"DATABASE_URL", "POSTGRES_PASSWORD"}, variant


def test_admission_webhook_with_helm_made_certificate(default_objects: list[Doc]) -> None:
    vwc = one(default_objects, "ValidatingWebhookConfiguration")
    secret = one(default_objects, "Secret", "-admission-tls")
    assert secret["type"] == "kubernetes.io/tls"
    ca = base64.b64decode(secret["data"]["ca.crt"])
    assert b"BEGIN CERTIFICATE" in ca and b"BEGIN CERTIFICATE" in base64.b64decode(secret["data"]["tls.crt"])
    hooks = {w["clientConfig"]["service"]["path"]: w for w in vwc["webhooks"]}
    assert set(hooks) == {"/validate-paymentrefund", "/validate-paymentintent"}
    assert hooks["/validate-paymentrefund"]["rules"][0]["operations"] == ["CREATE"]
    assert hooks["/validate-paymentrefund"]["rules"][0]["resources"] == ["paymentrefunds"]
    assert hooks["/validate-paymentintent"]["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    for hook in vwc["webhooks"]:
        assert hook["failurePolicy"] == "Ignore"
        assert hook["sideEffects"] == "None"
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca
        assert hook["clientConfig"]["service"]["name"] == f"{RELEASE}-kubepay-controller"
        assert hook["clientConfig"]["service"]["port"] == 443
    service = one(default_objects, "Service", "-controller")
    assert {"name": "admission", "port": 443, "targetPort": "admission", "protocol": "TCP"} in service["spec"]["ports"]
    controller = one(default_objects, "Deployment", "-controller")
    volumes = {v["name"]: v for v in pod_spec(controller)["volumes"]}
    assert volumes["admission-tls"]["secret"]["secretName"] == secret["metadata"]["name"]
    env = env_of(containers(controller)[0])
    assert env["KUBEPAY_ADMISSION_PORT"]["value"] == "9443"
    assert env["KUBEPAY_ADMISSION_CERT_DIR"]["value"] == "/etc/kubepay/admission"


def test_admission_webhook_with_cert_manager(all_objects: list[Doc]) -> None:
    vwc = one(all_objects, "ValidatingWebhookConfiguration")
    cert = one(all_objects, "Certificate")
    assert vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{cert['metadata']['name']}"
    assert all("caBundle" not in w["clientConfig"] for w in vwc["webhooks"])
    assert all(w["failurePolicy"] == "Fail" for w in vwc["webhooks"])
    assert all(w["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "payments"}
               for w in vwc["webhooks"])
    assert f"{RELEASE}-kubepay-controller.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    assert not [s for s in find(all_objects, "Secret") if s["metadata"]["name"].endswith("-admission-tls")]


def test_ingress_exposes_only_the_webhook_paths(all_objects: list[Doc], default_objects: list[Doc]) -> None:
    ingress = one(all_objects, "Ingress")
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert sorted(paths) == ["/payments/webhook", "/webhooks/stripe"]
    assert all(p["pathType"] == "Exact" for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"])
    assert not find(default_objects, "Ingress")


def test_optional_extras(all_objects: list[Doc], default_objects: list[Doc]) -> None:
    assert len(find(all_objects, "ServiceMonitor")) == 3
    assert len(find(all_objects, "NetworkPolicy")) == 4
    assert one(all_objects, "Service", "-api")["spec"]["type"] == "ClusterIP"
    for kind in ("ServiceMonitor", "NetworkPolicy", "Certificate"):
        assert not find(default_objects, kind), kind
    assert {p["metadata"]["name"] for p in find(default_objects, "PodDisruptionBudget")} == {
        f"{RELEASE}-kubepay-controller", f"{RELEASE}-kubepay-receiver"
    }


def test_labels_follow_app_kubernetes_io_conventions(render: Render) -> None:
    for variant, objects in all_variants(render).items():
        for obj in objects:
            labels = obj["metadata"].get("labels", {})
            where = f"{variant}: {obj['kind']}/{obj['metadata']['name']}"
            for key in STANDARD_LABELS:
                assert key in labels, f"{where}: missing label {key}"
            assert labels["app.kubernetes.io/name"] == "kubepay", where
            assert labels["app.kubernetes.io/instance"] == RELEASE, where
            assert labels["app.kubernetes.io/managed-by"] == "Helm", where
            assert labels["app.kubernetes.io/part-of"] == "kubepay", where
        for obj in find(objects, "Deployment"):
            selector = obj["spec"]["selector"]["matchLabels"]
            assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance",
                                     "app.kubernetes.io/component"}
            assert selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()


# --- required values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ([], "kafka.brokers is required"),
        (["kafka.brokers=k:9092"], "stripe.secretKey is required"),
        (["kafka.brokers=k:9092", "stripe.secretKey=sk_test_x"], "stripe.webhookSecret is required"),
        (["kafka.brokers=k:9092", "stripe.secretKey=sk_test_x", "stripe.webhookSecret=whsec_x"],
         "database.url (postgresql://user:password@host:5432/db) or database.host is required"),
        (["kafka.brokers=k:9092", "existingSecret=s", "api.enabled=true"], None),
        (["kafka.brokers=k:9092", "stripe.secretKey=sk_test_x", "stripe.webhookSecret=whsec_x", "database.host=pg",
          "api.enabled=true"], "api.token is required when api.enabled is true and api.auth.mode is token"),
        (["kafka.brokers=k:9092", "stripe.secretKey=sk_test_x", "stripe.webhookSecret=whsec_x", "database.host=pg",
          "api.enabled=true", "api.auth.mode=serviceaccount"], None),
        (["kafka.brokers=k:9092", "existingSecret=s", "api.enabled=true", "api.auth.mode=none",
          "api.auth.allowedClientLabels=null"], "api.auth.allowedClientLabels must name at least one label"),
    ],
)
def test_a_missing_required_value_fails_with_a_clear_message(helm: Path, sets: list[str], message: str | None) -> None:
    args: list[str | Path] = ["template", RELEASE, CHART, "--kube-version", KUBERNETES_VERSION]
    for s in sets:
        args += ["--set", s]
    result = run_helm(helm, *args)
    if message is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert f"kubepay: {message}" in result.stderr, result.stderr


def test_values_schema_rejects_typos_and_bad_values(helm: Path) -> None:
    base: list[str | Path] = ["template", RELEASE, CHART, "--values", VALUES_REQUIRED]
    for bad in ("controler.replicas=2", "logLevel=LOUD", "admission.failurePolicy=Maybe", "stripe.secretKey=pk_test_x",
                "api.auth.mode=oauth"):
        result = run_helm(helm, *base, "--set", bad)
        assert result.returncode != 0, bad
        assert "schema" in result.stderr.lower() or "values don't meet" in result.stderr.lower(), result.stderr


def undescribed(schema: Doc, path: str = "") -> list[str]:
    """Paths of the properties, at any depth, that have no description ("[]" for items, "{}" for
    additionalProperties, "<keyword>" for schemas under allOf and the like)."""
    found: list[str] = []
    for name, sub in schema.get("properties", {}).items():
        where = f"{path}.{name}" if path else name
        if not sub.get("description"):
            found.append(where)
        found += undescribed(sub, where)
    for name, sub in schema.get("patternProperties", {}).items():
        found += undescribed(sub, f"{path}.<{name}>")
    nested: list[tuple[str, Any]] = [("[]", schema.get("items")), ("{}", schema.get("additionalProperties"))]
    nested += [(f"<{k}>", s) for k in ("allOf", "anyOf", "oneOf") for s in schema.get(k, [])]
    nested += [(f"<{k}>", schema.get(k)) for k in ("if", "then", "else", "not")]
    if isinstance(schema.get("items"), list):
        nested += [("[]", s) for s in schema["items"]]
    for suffix, sub in nested:
        if isinstance(sub, dict):
            found += undescribed(sub, path + suffix)
    return found


def test_values_schema_describes_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    missing = undescribed(schema)
    assert not missing, f"{len(missing)} values without a description in values.schema.json: {', '.join(missing)}"
    # The walk reaches properties under items and additionalProperties.
    probe = {"properties": {"a": {"description": "d", "items": {"properties": {"b": {}}}},
                            "c": {"description": "d", "additionalProperties": {"properties": {"e": {}}}}, "f": {}}}
    assert undescribed(probe) == ["a[].b", "c{}.e", "f"]
    # Every pod extension of every component is typed and described.
    for component in POD_EXTENSION_WORKLOADS:
        properties = schema["properties"][component]["properties"]
        assert set(POD_EXTENSIONS) <= set(properties), component
        for key in POD_EXTENSIONS:
            expected = "string" if key == "priorityClassName" else (
                "object" if key in ("podAnnotations", "podLabels", "nodeSelector", "affinity") else "array")
            assert properties[key]["type"] == expected, (component, key)
            if expected == "array":
                assert properties[key]["items"]["type"] == "object", (component, key)


def test_dockerfile_contract() -> None:
    text = (REPO / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]
    assert "KUBEPAY_MIGRATIONS_DIR=/app/migrations" in final
    assert "COPY --from=build" in final
    assert '\nUSER 10001' in final
    assert 'ENTRYPOINT ["kubepay"]' in final
    for tool in ("gcc", "build-essential", "apt-get install"):
        assert tool not in final, f"{tool} in the final stage"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".cache"} <= set(ignored)


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"].startswith("https://") and all(s.startswith("https://") for s in chart["sources"])
    assert chart["maintainers"] and all(m["name"] for m in chart["maintainers"])
    assert chart["kubeVersion"] == ">=1.28.0-0"
    # Offline-safe: the icon is embedded, and is an SVG.
    assert chart["icon"].startswith("data:image/svg+xml;base64,")
    svg = base64.b64decode(chart["icon"].split(",", 1)[1])
    assert svg.startswith(b"<svg ") and svg.endswith(b"</svg>")


def test_helm_test_checks_the_receiver_and_the_api_through_their_services(render: Render) -> None:
    for variant, objects in all_variants(render).items():
        [pod] = find(objects, "Pod")
        annotations = pod["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "test", variant
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        spec = pod_spec(pod)
        assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
        [container] = spec["containers"]
        assert "env" not in container and "envFrom" not in container, variant  # no Secret, no credential
        args = container["args"]
        assert args[:3] == ["check-ready", "--timeout", "10"] or variant == "all", args
        services = {o["metadata"]["name"]: o for o in find(objects, "Service")}
        urls = [a for a in args if a.startswith("http://")]
        expected = ["receiver"] + (["api"] if f"{RELEASE}-kubepay-api" in services else [])
        assert len(urls) == len(expected), (variant, urls)
        for url, component in zip(urls, expected, strict=True):
            service = services[f"{RELEASE}-kubepay-{component}"]
            port = service["spec"]["ports"][0]["port"]
            assert url == f"http://{RELEASE}-kubepay-{component}.{NAMESPACE}.svc:{port}/readyz", (variant, url)
            # The Service's port leads to a container port whose readinessProbe is /readyz.
            [deployment] = [d for d in find(objects, "Deployment", f"-{component}")]
            target = service["spec"]["ports"][0]["targetPort"]
            [served] = [c for c in containers(deployment) if target in {p["name"] for p in c["ports"]}]
            assert served["readinessProbe"]["httpGet"]["path"] == "/readyz"
    everything = render(VALUES_ALL)
    [pod] = find(everything, "Pod")
    assert pod_spec(pod)["containers"][0]["args"][1:3] == ["--timeout", "20"]
    assert pod["metadata"]["labels"]["kubepay.io/helm-test"] == "true"  # tests.podLabels
    none_mode = all_variants(render)["api-none"]
    assert find(none_mode, "Pod")[0]["metadata"]["labels"]["kubepay.io/api-client"] == "true"  # admitted to the API
    assert find(render(VALUES_REQUIRED, sets=["tests.enabled=false"]), "Pod") == []


def test_notes_list_the_next_commands_for_the_rendered_values(helm: Path, tmp_path: Path) -> None:
    default = render_notes(helm, tmp_path)
    assert f"helm test {RELEASE} -n default" in default
    assert f"rollout status deploy/{RELEASE}-kubepay-receiver" in default
    assert "the API" not in default and "kubepay-api" not in default
    assert "in all namespaces" in default and "-n default create -f -" in default
    assert "The database was migrated" in default
    everything = render_notes(helm, tmp_path, values=VALUES_ALL)
    assert "the receiver and the API answer /readyz" in everything
    assert f"rollout status deploy/{RELEASE}-kubepay-api" in everything
    assert 'in namespace "payments" only' in everything and "-n payments create -f -" in everything
    assert "image registry.example/kubepay@sha256:" in everything
    quiet = render_notes(helm, tmp_path, "tests.enabled=false", "migration.enabled=false")
    assert "helm test" not in quiet and "/readyz" not in quiet and "migrated" not in quiet
    # The one command that creates a payment is valid against the CRD.
    [line] = [line for line in default.splitlines() if "create -f - <<<" in line]
    created = yaml.safe_load(line.split("<<<", 1)[1].strip().strip("'"))
    assert validate_custom_resource(crds_by_kind()["PaymentIntent"], created) == []


def render_notes(helm: Path, tmp_path: Path, *sets: str, values: Path = VALUES_REQUIRED) -> str:
    """NOTES.txt as `helm install` prints it for these values (a client-side dry run, no cluster)."""
    args = [str(helm), "install", RELEASE, str(CHART), "--dry-run=client", "--values", str(values)]
    for s in sets:
        args += ["--set", s]
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "none"), "HELM_CONFIG_HOME": str(tmp_path),
           "HELM_CACHE_HOME": str(tmp_path), "HELM_DATA_HOME": str(tmp_path)}
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\nNOTES:\n", 1)[1]


def test_notes_say_what_happens_to_the_crds(helm: Path, tmp_path: Path) -> None:
    kept = render_notes(helm, tmp_path)
    assert "are part of this release; `helm upgrade` upgrades them" in kept
    assert "`helm uninstall` keeps them" in kept and "-f crds/" not in kept
    assert "`helm uninstall` DELETES them" in render_notes(helm, tmp_path, "crds.keep=false")
    by_hand = render_notes(helm, tmp_path, "crds.enabled=false")
    assert "kubectl apply --server-side --force-conflicts -f crds/" in by_hand
    assert "upgrades them" not in by_hand


def test_notes_tell_how_to_point_stripe_at_the_receiver(helm: Path, tmp_path: Path) -> None:
    def notes(*sets: str) -> str:
        return render_notes(helm, tmp_path, *sets)

    local = notes()
    assert "stripe listen --forward-to localhost:8080/payments/webhook" in local
    assert f"port-forward svc/{RELEASE}-kubepay-receiver 8080:80" in local
    public = notes("receiver.ingress.enabled=true", "receiver.ingress.host=pay.example.com",
                   "receiver.ingress.tlsSecretName=tls")
    assert "https://pay.example.com/payments/webhook" in public
