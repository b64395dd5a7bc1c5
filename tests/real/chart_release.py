"""The Helm chart installed into a real control plane, its workloads run here as local processes.

There is no kubelet, so no pod ever runs: ``helm install --no-hooks`` installs everything but the hooks; this
module then creates the hooks' objects as Helm would and runs the migration Job's ``kubepay migrate`` here,
with the Job's environment. Each Deployment becomes a local ``kubepay`` process with its container's args and
environment, resolved as the kubelet would (values, Secret keys, the pod's own fields), authenticated as the
Deployment's ServiceAccount with a TokenRequest token (a kubeconfig holding the bearer token, as a mounted
token is). What only a pod has is replaced: the fixed ports by free ones on 127.0.0.1, the mounted admission
certificate by one for 127.0.0.1, the image's paths by the checkout's.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from kubepay_sandbox.certs import write_self_signed
from kubepay_sandbox.child import free_port
from kubepay_sandbox.kube_controls import service_account_token
from kubepay_sandbox.processes import KubepayProcess
from kubepay_sandbox.realcluster import RealCluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubepay"
Json = dict[str, Any]


async def run(*argv: str | Path, env: Mapping[str, str] | None = None, stdin: str = "",
              timeout: float = 120.0) -> str:
    """A command's stdout; its stderr in the failure."""
    process = await asyncio.create_subprocess_exec(
        *map(str, argv), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout)
    assert process.returncode == 0, f"{' '.join(map(str, argv))} exited {process.returncode}:\n{err.decode()}"
    return out.decode()


@dataclass
class Workload:
    """A Deployment (or the migration Job) as the kubelet would start its first container."""

    component: str
    service_account: str
    command: str
    env: list[Json]


def workload(obj: Json) -> Workload:
    pod = obj["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert "envFrom" not in container, "the chart's containers name each variable"
    return Workload(obj["metadata"]["labels"]["app.kubernetes.io/component"], pod.get("serviceAccountName", ""),
                    container["args"][0], container.get("env", []))


@dataclass
class Release:
    """`helm install --no-hooks` of helm/kubepay into a real control plane, and what it made."""

    cluster: RealCluster
    helm: Path
    kubectl_binary: Path
    name: str
    namespace: str
    workdir: Path

    async def install(self, values: Json) -> None:
        values_file = self.workdir / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        await self.helm_command("install", self.name, CHART, "--namespace", self.namespace, "--create-namespace",
                                "--no-hooks", "--values", values_file)

    async def helm_command(self, *args: str | Path) -> str:
        return await run(self.helm, "--kubeconfig", self.cluster.kubeconfig, *args,
                         env={"HELM_CACHE_HOME": str(self.workdir / "helm-cache"),
                              "HELM_CONFIG_HOME": str(self.workdir / "helm-config"),
                              "HELM_DATA_HOME": str(self.workdir / "helm-data")})

    async def run_hooks(self, api: client.ApiClient) -> str:
        """What --no-hooks left out, in Helm's order: the hooks' objects are created as Helm would create them
        (the migration's Secret and ServiceAccount, the kopf peering object), the migration Job's
        `kubepay migrate` runs here with the Job's environment. Returns the migration's output."""
        text = await self.helm_command("get", "hooks", self.name, "--namespace", self.namespace)
        hooks = sorted((doc for doc in yaml.safe_load_all(text)
                        if doc and doc["metadata"]["annotations"]["helm.sh/hook"] != "test"),  # `helm test` only
                       key=lambda h: int(h["metadata"]["annotations"].get("helm.sh/hook-weight", "0")))
        objects = [h for h in hooks if h["kind"] != "Job"]
        for obj in objects:  # as Helm: the release's namespace unless the template names another
            obj["metadata"].setdefault("namespace", self.namespace)
        await self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))
        [job] = [workload(h) for h in hooks if h["kind"] == "Job"]
        migrated = await run(sys.executable, "-m", "kubepay", job.command, env=await self.environment(api, job))
        done = [h for h in objects if "hook-succeeded" in h["metadata"]["annotations"].get(
            "helm.sh/hook-delete-policy", "")]
        await self.kubectl("delete", "-f", "-", stdin=yaml.safe_dump_all(done))
        return migrated

    async def test_hook(self) -> list[str]:
        """The args of the container of the release's `helm test` Pod, as `helm get hooks` shows them."""
        text = await self.helm_command("get", "hooks", self.name, "--namespace", self.namespace)
        [pod] = [doc for doc in yaml.safe_load_all(text)
                 if doc and doc["metadata"]["annotations"]["helm.sh/hook"] == "test"]
        assert pod["kind"] == "Pod"
        [container] = pod["spec"]["containers"]
        args: list[str] = container["args"]
        return args

    async def kubectl(self, *args: str, stdin: str = "") -> str:
        return await run(self.kubectl_binary, "--kubeconfig", self.cluster.kubeconfig, *args, stdin=stdin)

    async def workloads(self, api: client.ApiClient) -> dict[str, Workload]:
        """The release's Deployments by component (controller, receiver, api)."""
        listing = await client.AppsV1Api(api).list_namespaced_deployment(
            self.namespace, label_selector=f"app.kubernetes.io/instance={self.name}")
        return {w.component: w for w in (workload(api.sanitize_for_serialization(d)) for d in listing.items)}

    async def environment(self, api: client.ApiClient, work: Workload) -> dict[str, str]:
        """The container's environment as the kubelet resolves it in the release namespace, plus the local
        replacements for what only a pod has."""
        secrets = {item.metadata.name: _secret_data(api.sanitize_for_serialization(item))
                   for item in (await client.CoreV1Api(api).list_namespaced_secret(self.namespace)).items}
        pod_fields = {"metadata.name": f"{self.name}-{work.component}-local", "metadata.namespace": self.namespace}
        env = {entry["name"]: _resolve(entry, secrets, pod_fields) for entry in work.env}
        return _local(env)

    async def start(self, api: client.ApiClient, work: Workload, env: Mapping[str, str]) -> KubepayProcess:
        """The workload as a local process with `env` (see :meth:`environment`), authenticated as its
        ServiceAccount with a TokenRequest token."""
        token = await service_account_token(api, self.namespace, work.service_account, create=False)
        user = f"system:serviceaccount:{self.namespace}:{work.service_account}"
        kubeconfig = self.cluster.token_kubeconfig(self.workdir / f"{work.component}.kubeconfig", token, user,
                                                   self.namespace)
        port = {"webhook": "PAYMENT_HTTP_PORT", "api": "KUBEPAY_API_PORT"}.get(work.command, "KUBEPAY_HEALTH_PORT")
        process = KubepayProcess(work.command, {**env, "KUBECONFIG": str(kubeconfig)},
                                 f"http://127.0.0.1:{env[port]}/readyz", self.workdir / f"{work.component}.log")
        await process.start()
        return process


def admission_certificate(directory: Path) -> tuple[Path, str]:
    """A serving certificate for 127.0.0.1 (its own CA) and its PEM base64-encoded, for a caBundle."""
    cert_dir = write_self_signed(directory)
    return cert_dir, base64.b64encode((cert_dir / "tls.crt").read_bytes()).decode()


def _secret_data(secret: Json) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return {**data, **(secret.get("stringData") or {})}


def _resolve(entry: Json, secrets: Mapping[str, Mapping[str, str]], pod_fields: Mapping[str, str]) -> str:
    """One variable as the kubelet sets it: a value, a Secret's key, or the pod's own field."""
    source = entry.get("valueFrom")
    if source is None:
        return str(entry.get("value", ""))
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        value = secrets.get(ref["name"], {}).get(ref["key"])
        assert value is not None, f"{entry['name']}: no key {ref['key']} in Secret {ref['name']}"
        return value
    assert "fieldRef" in source, f"{entry['name']}: a source the chart does not use: {source}"
    return pod_fields[source["fieldRef"]["fieldPath"]]


def _local(env: dict[str, str]) -> dict[str, str]:
    """Every fixed port becomes a free one on 127.0.0.1 (several releases' processes share this machine); the
    image's migrations folder is the checkout's."""
    ports = {name: str(free_port()) for name in env if name.endswith("_PORT") and name != "POSTGRES_PORT"}
    paths = {"KUBEPAY_MIGRATIONS_DIR": str(REPO / "migrations")} if "KUBEPAY_MIGRATIONS_DIR" in env else {}
    return {**env, **ports, **paths}
