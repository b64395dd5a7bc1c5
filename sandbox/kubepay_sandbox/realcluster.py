"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver and kube-controller-manager, no nodes.

`make controlplane` builds the three binaries from Go modules (tools/controlplane/go.mod pins
k8s.io/kubernetes) into .cache/controlplane/bin. This starts them as our own children in a fresh
temporary folder: RBAC authorization, a service-account issuer and signing key, an admin identity
(a static token in group system:masters), garbage collection and namespace deletion by the controller
manager, the OwnerReferencesPermissionEnforcement admission plugin that hardened clusters turn on, and an
audit log of what ServiceAccounts do. It applies the CRDs it is given through the API, waits until they
are served and writes a kubeconfig. There is no kubelet, so pods never run; everything kubepay itself
needs from an API server is real.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from kubernetes_asyncio import client, config

from kubepay_sandbox.checkout import REPO
from kubepay_sandbox.child import HOST, ChildProcess, die_with_parent, free_port

__all__ = ["ControlPlaneError", "RealCluster", "controlplane_bin"]

logger = logging.getLogger(__name__)

ENV_BIN = "KUBEPAY_CONTROLPLANE_BIN"  # a folder with etcd, kube-apiserver, kube-controller-manager
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
START_TIMEOUT = 90.0  # kube-apiserver's post-start hooks take 5-15 s on two busy cores
STOP_TIMEOUT = 10.0
ESTABLISHED_TIMEOUT = 30.0
ADMIN = "kubepay-admin"
SERVICE_CIDR = "10.0.0.0/24"  # a required flag; nothing is ever routed there
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Audit only what ServiceAccounts do (kubepay's processes run as them in the chart tests), metadata only.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "userGroups": ["system:serviceaccounts"]}, {"level": "None"}],
}


class ControlPlaneError(RuntimeError):
    """A control-plane process could not be started; the message carries its log's tail."""


def controlplane_bin() -> Path:
    """$KUBEPAY_CONTROLPLANE_BIN, or what `make controlplane` built."""
    configured = os.environ.get(ENV_BIN, "").strip()
    folder = Path(configured) if configured else REPO / ".cache" / "controlplane" / "bin"
    if missing := [name for name in BINARIES if not (folder / name).is_file()]:
        raise ControlPlaneError(f"no {', '.join(missing)} in {folder}: run `make controlplane` (or set {ENV_BIN})")
    return folder


class _Server(ChildProcess):
    """One control-plane binary with its flags, ready when ``url`` + ``health`` answers 200."""

    _error = ControlPlaneError
    _exit_signal = signal.SIGTERM

    def __init__(self, binary: Path, args: Sequence[str], url: str, health: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self._binary, self._args, self.url, self._health, self._ssl = binary, list(args), url, health, ssl_context
        self._what = binary.name  # type: ignore[misc]  # the class default is a ClassVar

    async def _launch(self) -> None:
        log = await self._open_temp_log(f"kubepay-{self._binary.name}-")
        await self._spawn(
            str(self._binary), *self._args,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM),
        )
        await self._wait_ready(self._healthy, name=self._binary.name,
                               late=f"{self._binary.name} was not healthy within {START_TIMEOUT}s",
                               timeout=START_TIMEOUT, interval=0.2)

    async def _healthy(self) -> bool:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session, \
                    session.get(self.url + self._health, ssl=self._ssl if self._ssl else False) as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def stop(self) -> None:
        await self._terminate(signal.SIGTERM, STOP_TIMEOUT)
        self._remove_temp_log()

    def log_tail(self) -> str:
        """What the process wrote last (its log is deleted on stop)."""
        return "" if self._log_path is None else self._log_path.read_text(errors="replace")[-5000:]


def _serving_certificate(directory: Path) -> None:
    """ca.crt (self-signed, also the serving certificate) and its key, for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubepay-sandbox-apiserver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST)),
                                                     x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "ca.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _service_account_keys(directory: Path) -> None:
    """sa.key signs service-account tokens (kube-apiserver's TokenRequest, the controller manager); sa.pub
    verifies them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (directory / "sa.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / "sa.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _kubeconfig(path: Path, server: str, ca: Path, token: str, user: str = ADMIN, namespace: str = "") -> Path:
    context = {"cluster": "kubepay-real", "user": user, **({"namespace": namespace} if namespace else {})}
    written = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "kubepay-real", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "kubepay-real", "context": context}],
        "current-context": "kubepay-real",
    }
    path.write_text(yaml.safe_dump(written, sort_keys=False))
    path.chmod(0o600)
    return path


class RealCluster:
    """etcd + kube-apiserver + kube-controller-manager in a private folder; usable as an async context manager.

    ``stop_apiserver()``/``start_apiserver()`` take the API away and bring it back on the same address
    with the same data (the real counterpart of the emulator's stop/start).
    """

    def __init__(self, crds: Sequence[Path] = ()) -> None:
        self._crds = list(crds)
        self._crd_names: list[str] = []
        self._dir: Path | None = None
        self._token = secrets.token_urlsafe(24)
        self.etcd: _Server | None = None
        self.apiserver: _Server | None = None
        self.controller_manager: _Server | None = None

    @property
    def workdir(self) -> Path:
        if self._dir is None:
            raise ControlPlaneError("the control plane has not been started yet")
        return self._dir

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (group system:masters): for tests and harness set-up, not for kubepay."""
        return self.workdir / "kubeconfig"

    @property
    def url(self) -> str:
        assert self.apiserver is not None
        return self.apiserver.url

    def token_kubeconfig(self, path: Path, token: str, user: str, namespace: str = "") -> Path:
        """A kubeconfig that authenticates with `token` (e.g. a ServiceAccount's, from the TokenRequest API), as
        a pod's mounted token does."""
        return _kubeconfig(path, self.url, self.workdir / "ca.crt", token, user, namespace)

    def audit_events(self) -> list[dict[str, Any]]:
        """kube-apiserver's audit events (metadata only) of every request a ServiceAccount made: what each one
        really used (user.username, verb, objectRef, responseStatus)."""
        log = self.workdir / "audit.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [json.loads(line) for line in lines if line.strip()]

    async def start(self) -> None:
        """Start all three (etcd first), apply the CRDs and wait until they are Established."""
        binaries = await asyncio.to_thread(controlplane_bin)
        self._dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="kubepay-controlplane-"))
        try:
            await asyncio.to_thread(self._write_credentials)
            self.etcd = self._etcd(binaries)
            await self.etcd.start()
            self.apiserver = self._apiserver(binaries)
            await self.apiserver.start()
            _kubeconfig(self.kubeconfig, self.apiserver.url, self.workdir / "ca.crt", self._token)
            self.controller_manager = self._controller_manager(binaries)
            await asyncio.gather(self.controller_manager.start(), self._apply_crds())
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in (self.controller_manager, self.apiserver, self.etcd):
            if server is not None:
                await server.stop()
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None

    async def stop_apiserver(self) -> None:
        assert self.apiserver is not None
        await self.apiserver.stop()

    async def start_apiserver(self) -> None:
        """Back on the same address with the same data, once the CRDs' storage answers again (a restarted
        kube-apiserver is ready before its custom-resource storage is)."""
        assert self.apiserver is not None
        await self.apiserver.start()
        await self._until_served(self._crd_names)

    async def __aenter__(self) -> RealCluster:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- the three processes ---------------------------------------------------------------------------

    def _write_credentials(self) -> None:
        _serving_certificate(self.workdir)
        _service_account_keys(self.workdir)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self._token},{ADMIN},{ADMIN},"system:masters"\n')
        tokens.chmod(0o600)
        (self.workdir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))

    def _etcd(self, binaries: Path) -> _Server:
        client_url, peer_url = f"http://{HOST}:{free_port()}", f"http://{HOST}:{free_port()}"
        return _Server(binaries / "etcd", [
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync=true",  # throw-away data
            "--log-level=warn",
        ], client_url, "/health")

    def _apiserver(self, binaries: Path) -> _Server:
        assert self.etcd is not None
        port, work = free_port(), self.workdir
        ca = ssl.create_default_context(cafile=str(work / "ca.crt"))
        return _Server(binaries / "kube-apiserver", [
            f"--etcd-servers={self.etcd.url}",
            f"--bind-address={HOST}", f"--advertise-address={HOST}", f"--secure-port={port}",
            "--endpoint-reconciler-type=none",  # no default route needed; nothing routes to the service IP
            f"--cert-dir={work / 'apiserver-certs'}",
            f"--tls-cert-file={work / 'ca.crt'}", f"--tls-private-key-file={work / 'ca.key'}",
            f"--client-ca-file={work / 'ca.crt'}",
            f"--token-auth-file={work / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            # As hardened clusters (OpenShift, for one): blockOwnerDeletion needs update on the owner's finalizers.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={work / 'sa.pub'}",
            f"--service-account-signing-key-file={work / 'sa.key'}",
            "--allow-privileged=true",
            "--profiling=false",
            f"--audit-policy-file={work / 'audit-policy.yaml'}", f"--audit-log-path={work / 'audit.log'}",
            "--audit-log-mode=blocking",  # an entry is written before the response goes out
        ], f"https://{HOST}:{port}", "/readyz", ca)

    def _controller_manager(self, binaries: Path) -> _Server:
        port = free_port()
        return _Server(binaries / "kube-controller-manager", [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            f"--bind-address={HOST}", f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            f"--service-account-private-key-file={self.workdir / 'sa.key'}",
            f"--root-ca-file={self.workdir / 'ca.crt'}",
            "--leader-elect=false",
            "--profiling=false",
        ], f"https://{HOST}:{port}", "/healthz")

    # -- CRDs ----------------------------------------------------------------------------------------

    async def _apply_crds(self) -> None:
        async with await self._admin() as api:
            extensions = client.ApiextensionsV1Api(api)
            for path in self._crds:
                for crd in yaml.safe_load_all(await asyncio.to_thread(path.read_text)):
                    if not crd:
                        continue
                    self._crd_names.append(crd["metadata"]["name"])
                    await extensions.create_custom_resource_definition(crd)
        await self._until_served(self._crd_names)

    async def _admin(self) -> client.ApiClient:
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        return client.ApiClient(cfg)

    async def _until_served(self, names: Sequence[str]) -> None:
        async with await self._admin() as api:
            extensions, custom = client.ApiextensionsV1Api(api), client.CustomObjectsApi(api)
            deadline = time.monotonic() + ESTABLISHED_TIMEOUT
            for name in names:
                while not await _serving(extensions, custom, name):
                    if time.monotonic() > deadline:
                        raise ControlPlaneError(f"CRD {name} not Established and served within "
                                                f"{ESTABLISHED_TIMEOUT}s")
                    await asyncio.sleep(0.1)


async def _serving(extensions: Any, custom: Any, name: str) -> bool:
    """Established, and its storage answers: right after Established a list can still get 429
    "storage is (re)initializing", and right after a restart 404 until the CRD's handler is installed."""
    crd = await extensions.read_custom_resource_definition(name)
    if not _established(crd):
        return False
    try:
        await custom.list_cluster_custom_object(crd.spec.group, crd.spec.versions[0].name, crd.spec.names.plural,
                                                limit=1)
    except client.exceptions.ApiException as exc:
        if exc.status in (404, 429):
            return False
        raise
    return True


def _established(crd: Any) -> bool:
    return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))
