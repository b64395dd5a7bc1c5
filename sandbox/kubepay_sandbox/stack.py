"""The whole sandbox: real PostgreSQL and Kafka, a Stripe fake and a Kubernetes API emulator.

One harness serves the tests, `kubepay-sandbox up`, `kubepay-sandbox demo` and the benchmarks. Each user of it
takes a Tenant: its own database (migrated), topics, namespace and webhook secret, so parallel
users never see each other's data. With :class:`~kubepay_sandbox.targets.Targets` naming a real
cluster and/or Stripe test mode (the e2e suite's KUBEPAY_E2E_* settings), those replace the emulator
and/or the fake; nothing else changes. With ``real_parts`` the sandbox starts a real control plane
(:mod:`~kubepay_sandbox.realcluster`) and Apache Kafka itself, and kubepay runs with its production
Kafka settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from stripe import AIOHTTPClient, HTTPClient, RequestsClient, StripeClient

from kubepay import migrate
from kubepay.config import Topics
from kubepay_sandbox.apache_kafka import ApacheKafka
from kubepay_sandbox.certs import write_self_signed
from kubepay_sandbox.checkout import CRD_DIR, PEERING_CRD_DIR, REPO
from kubepay_sandbox.child import free_port
from kubepay_sandbox.kafka import KafkaBroker
from kubepay_sandbox.kube_controls import ClusterControls, EmulatorControls, KubeControls
from kubepay_sandbox.kube_emulator import KubeEmulator
from kubepay_sandbox.postgres import PostgresServer
from kubepay_sandbox.processes import KubepayProcess
from kubepay_sandbox.realcluster import RealCluster
from kubepay_sandbox.stripe_fake import StripeFake
from kubepay_sandbox.targets import Targets, TargetsError, tenant_kubeconfig

_counter = itertools.count(1)

__all__ = ["CRD_DIR", "REPO", "Sandbox", "Targets", "TargetsError", "Tenant", "free_port"]
# The kinds kubepay needs, as the CRDs in crds/ define them (group kubepay.io, version v1alpha1).
CRD_PLURALS = ("paymentintents", "paymentrefunds")
# What the sandbox's own cluster (the emulator or the real control plane) serves: those CRDs, and kopf's peering CRDs
# for controllers that peer (KUBEPAY_PEERING_NAME), as the chart installs them.
CLUSTER_CRDS = (*sorted(CRD_DIR.glob("*.yaml")), *sorted(PEERING_CRD_DIR.glob("*.yaml")))


@dataclass
class Tenant:
    """One isolated slice of the sandbox and the environment kubepay's processes need to use it."""

    name: str
    namespace: str
    database_url: str
    topics: Topics
    webhook_secret: str
    env: dict[str, str]
    workdir: Path
    processes: list[KubepayProcess] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['KUBEPAY_API_PORT']}"

    @property
    def api_token(self) -> str:
        return self.env["KUBEPAY_API_TOKEN"]

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.env['PAYMENT_HTTP_PORT']}/payments/webhook"

    def process(self, command: str, **overrides: str) -> KubepayProcess:
        """A process of the tenant; it counts as started once its /readyz answers. Each gets a metrics port of
        its own (`process.env["KUBEPAY_METRICS_PORT"]`) unless `overrides` name one."""
        env = {**self.env, **overrides}
        if command == "orders-consumer" and "KUBEPAY_HEALTH_PORT" not in overrides:
            env["KUBEPAY_HEALTH_PORT"] = str(free_port())  # may run next to the operator, which has this one
        if "KUBEPAY_METRICS_PORT" not in overrides:
            env["KUBEPAY_METRICS_PORT"] = str(free_port())
        port = {"webhook": env["PAYMENT_HTTP_PORT"], "api": env["KUBEPAY_API_PORT"]}.get(
            command, env["KUBEPAY_HEALTH_PORT"]
        )
        probe = "healthz" if command == "orders-consumer" else "readyz"
        proc = KubepayProcess(
            command, env, f"http://127.0.0.1:{port}/{probe}", self.workdir / f"{command}-{len(self.processes)}.log"
        )
        self.processes.append(proc)
        return proc

    async def stop_processes(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes))


class Sandbox:
    def __init__(self, targets: Targets | None = None) -> None:
        self.targets = targets or Targets()
        self.workdir = Path(tempfile.mkdtemp(prefix="kubepay-sandbox-"))
        self.postgres = PostgresServer()
        self.kafka = ApacheKafka() if self.targets.real_parts else KafkaBroker()
        self._stripe = None if self.targets.real_stripe else StripeFake()
        self._kube = None if self.targets.real_kube else KubeEmulator(CLUSTER_CRDS)
        self.control_plane = RealCluster(CLUSTER_CRDS) if self.targets.real_parts else None
        self.kubeconfig = self.workdir / "kubeconfig"
        self._cluster: client.ApiClient | None = None  # a real cluster's API client
        self._namespaces: set[str] = set()  # tenant namespaces made in a real cluster, deleted by release()
        self._stripe_client: StripeClient | None = None  # the Stripe test-mode client
        self._stripe_http: HTTPClient | None = None

    @property
    def stripe(self) -> StripeFake:
        """The Stripe fake and its test controls (hold, fail, requests_log, ...); not in Stripe test mode."""
        if self._stripe is None:
            raise RuntimeError("sandbox.stripe is the Stripe fake, but this run uses Stripe test mode "
                               "(KUBEPAY_E2E_STRIPE_KEY): mark the test @pytest.mark.needs_fake_stripe")
        return self._stripe

    @property
    def kube(self) -> KubeEmulator:
        """The Kubernetes API emulator (stop/start, get, ...); not against a real cluster."""
        if self._kube is None:
            raise RuntimeError("sandbox.kube is the Kubernetes API emulator, but this run uses a real cluster "
                               "(KUBEPAY_E2E_KUBECONFIG or KUBEPAY_E2E_REAL): "
                               "mark the test @pytest.mark.needs_emulator")
        return self._kube

    @property
    def kube_controls(self) -> KubeControls:
        """Deny writes, issue ServiceAccount tokens, grant access, stop and start the API: in the emulator, or
        through a real cluster's API (stopping only the control plane KUBEPAY_E2E_REAL starts)."""
        if self._kube is not None:
            return EmulatorControls(self._kube)
        assert self._cluster is not None, "the sandbox is not started"
        return ClusterControls(self._cluster, self.control_plane)

    @property
    def stripe_key(self) -> str:
        """The Stripe secret key kubepay's processes get."""
        return self.targets.stripe_key or self.stripe.api_key

    def stripe_env(self) -> dict[str, str]:
        """The Stripe settings kubepay's processes get: the fake's key and URL, or just the test-mode key."""
        if self._stripe is None:
            return {"STRIPE_SECRET_KEY": self.stripe_key}
        return {"STRIPE_SECRET_KEY": self._stripe.api_key, "KUBEPAY_STRIPE_API_BASE": self._stripe.url}

    def stripe_client(self) -> StripeClient:
        """A stripe SDK client (sync and ``*_async``) for the Stripe the processes use: the fake or test mode."""
        if self._stripe is not None:
            return self._stripe.client()
        if self._stripe_client is None:
            self._stripe_http = RequestsClient(async_fallback_client=AIOHTTPClient())
            self._stripe_client = StripeClient(self.stripe_key, http_client=self._stripe_http)
        return self._stripe_client

    async def start(self) -> None:
        try:
            if self.targets.real_kube and self.control_plane is None:
                await self._connect_cluster()  # first: a cluster without the CRDs fails before anything starts
            await asyncio.gather(self.postgres.start(), self.kafka.start(),
                                 *(c.start() for c in (self._stripe, self._kube, self.control_plane) if c is not None))
            if self.control_plane is not None:
                await self._connect_cluster()
        except BaseException:
            await self.stop()
            raise
        if self._kube is not None:
            self._kube.write_kubeconfig(self.kubeconfig)

    async def stop(self) -> None:
        for namespace in sorted(self._namespaces):
            with contextlib.suppress(Exception):
                await self._delete_namespace(namespace)
        await asyncio.gather(
            self.postgres.close(), self.kafka.stop(),
            *(c.stop() for c in (self._stripe, self._kube, self.control_plane) if c is not None),
            return_exceptions=True
        )
        if self._stripe_http is not None:
            with contextlib.suppress(Exception):
                await cast(Any, self._stripe_http).close_async()  # untyped in stripe
        if self._cluster is not None:
            await self._cluster.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def release(self, tenant: Tenant) -> None:
        """After the tenant's processes stopped: delete its namespace from a real cluster (the emulator's
        data goes with the sandbox)."""
        if tenant.namespace in self._namespaces:
            await self._delete_namespace(tenant.namespace)

    # -- a real cluster ------------------------------------------------------------------------------

    @property
    def _cluster_kubeconfig(self) -> Path:
        """The real cluster's kubeconfig: the one the sandbox started, or KUBEPAY_E2E_KUBECONFIG's."""
        source = self.control_plane.kubeconfig if self.control_plane is not None else self.targets.kubeconfig
        assert source is not None
        return source

    async def _connect_cluster(self) -> None:
        tenant_kubeconfig(self._cluster_kubeconfig, self.targets.context, "default", self.kubeconfig)
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        self._cluster = client.ApiClient(cfg)
        try:
            found = {r.name for r in (await client.CustomObjectsApi(self._cluster).get_api_resources(
                "kubepay.io", "v1alpha1")).resources}
        except ApiException as exc:
            if exc.status != 404:
                raise
            found = set()
        if missing := [p for p in CRD_PLURALS if p not in found]:
            raise TargetsError(
                f"the cluster of KUBEPAY_E2E_KUBECONFIG (context {self.targets.context_name}) lacks the "
                f"CRDs {', '.join(f'{p}.kubepay.io' for p in missing)}: install them with `kubectl apply -f crds/`")

    async def _create_namespace(self, namespace: str) -> None:
        assert self._cluster is not None
        labels = {"app.kubernetes.io/created-by": "kubepay-e2e"}  # leftovers: kubectl delete ns -l ...
        await client.CoreV1Api(self._cluster).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=labels)))
        self._namespaces.add(namespace)

    async def _delete_namespace(self, namespace: str) -> None:
        """Drop the finalizers nobody is left to handle (the controller has stopped), then the namespace."""
        assert self._cluster is not None
        self._namespaces.discard(namespace)
        custom = client.CustomObjectsApi(self._cluster)
        for plural in CRD_PLURALS:
            listing = await custom.list_namespaced_custom_object("kubepay.io", "v1alpha1", namespace, plural)
            for obj in listing["items"]:
                if obj["metadata"].get("finalizers"):
                    with contextlib.suppress(ApiException):  # already gone
                        await custom.patch_namespaced_custom_object(
                            "kubepay.io", "v1alpha1", namespace, plural, obj["metadata"]["name"],
                            {"metadata": {"finalizers": None}},
                            _content_type="application/merge-patch+json",  # type: ignore[call-arg]
                        )
        with contextlib.suppress(ApiException):
            await client.CoreV1Api(self._cluster).delete_namespace(namespace)

    async def tenant(self, prefix: str = "t", resync_seconds: float = 600.0) -> Tenant:
        name = f"{prefix}{next(_counter)}{secrets.token_hex(2)}".lower()
        database_url = await self.postgres.create_database(name)
        await asyncio.to_thread(migrate.upgrade, database_url)
        topics = Topics(**{key: f"{name}.{value}" for key, value in Topics().__dict__.items()})
        await self.kafka.create_topics([*topics.all(), topics.orders_created, topics.orders_dlq])
        webhook_secret = "whsec_" + secrets.token_hex(16)
        workdir = self.workdir / name
        workdir.mkdir()
        if self._kube is not None:
            namespace = name
            kubeconfig = self._kube.write_kubeconfig(workdir / "kubeconfig", namespace=namespace)
        else:
            namespace = f"kubepay-e2e-{name}"
            kubeconfig = tenant_kubeconfig(self._cluster_kubeconfig, self.targets.context, namespace,
                                           workdir / "kubeconfig")
            await self._create_namespace(namespace)
        env = {
            "DATABASE_URL": database_url,
            "KAFKA_BROKER_URL": self.kafka.bootstrap_servers,
            **self._kafka_env(),
            **self.stripe_env(),
            "STRIPE_WEBHOOK_SECRET": webhook_secret,
            "KUBECONFIG": str(kubeconfig),
            "KUBEPAY_NAMESPACE": namespace,
            "PAYMENT_HTTP_PORT": str(free_port()),
            "KUBEPAY_HEALTH_PORT": str(free_port()),
            "KUBEPAY_ADMISSION_PORT": str(free_port()),
            "KUBEPAY_ADMISSION_CERT_DIR": str(await asyncio.to_thread(write_self_signed, workdir / "admission")),
            "KUBEPAY_RESYNC_SECONDS": str(resync_seconds),
            "KUBEPAY_LOG_LEVEL": "INFO",
            "SRV_ENV": "sandbox",
            "KUBEPAY_API_PORT": str(free_port()),
            "KUBEPAY_API_TOKEN": secrets.token_urlsafe(24),
            "KUBEPAY_API_NAMESPACE": namespace,
            **{f"KUBEPAY_TOPIC_{key.upper()}": value for key, value in topics.__dict__.items()},
        }
        return Tenant(name, namespace, database_url, topics, webhook_secret, env, workdir)

    def _kafka_env(self) -> dict[str, str]:
        """Apache Kafka gets kubepay's production settings; tansu needs two concessions."""
        if isinstance(self.kafka, ApacheKafka):
            return {}
        return {
            "KUBEPAY_KAFKA_IDEMPOTENCE": "false",  # tansu lacks InitProducerId v0+
            "KUBEPAY_ORDERS_SESSION_TIMEOUT_MS": "1000",  # tansu's group joins are slow otherwise
            "KUBEPAY_ORDERS_HEARTBEAT_MS": "300",
        }
