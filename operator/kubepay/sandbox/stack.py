"""The whole sandbox: real PostgreSQL and Kafka, a Stripe fake and a Kubernetes API emulator.

One harness serves the tests, `kubepay sandbox`, `make demo` and the benchmarks. Each user of it
takes a Tenant: its own database (migrated), topics, namespace and webhook secret, so parallel
users never see each other's data.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from kubepay import migrate
from kubepay.config import Topics
from kubepay.sandbox.certs import write_self_signed
from kubepay.sandbox.child import free_port
from kubepay.sandbox.kafka import KafkaBroker
from kubepay.sandbox.kube import KubeEmulator
from kubepay.sandbox.postgres import PostgresServer
from kubepay.sandbox.processes import KubepayProcess
from kubepay.sandbox.stripe_fake import StripeFake

REPO = Path(__file__).resolve().parents[3]
CRD_DIR = REPO / "crds"
_counter = itertools.count(1)

__all__ = ["CRD_DIR", "REPO", "Sandbox", "Tenant", "free_port"]


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
        env = {**self.env, **overrides}
        if command == "orders-consumer" and "KUBEPAY_HEALTH_PORT" not in overrides:
            env["KUBEPAY_HEALTH_PORT"] = str(free_port())  # may run next to the operator, which has this one
        port = {"webhook": env["PAYMENT_HTTP_PORT"], "api": env["KUBEPAY_API_PORT"]}.get(
            command, env["KUBEPAY_HEALTH_PORT"]
        )
        proc = KubepayProcess(
            command, env, f"http://127.0.0.1:{port}/healthz", self.workdir / f"{command}-{len(self.processes)}.log"
        )
        self.processes.append(proc)
        return proc

    async def stop_processes(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes))


class Sandbox:
    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="kubepay-sandbox-"))
        self.postgres = PostgresServer()
        self.kafka = KafkaBroker()
        self.stripe = StripeFake()
        self.kube = KubeEmulator(sorted(CRD_DIR.glob("*.yaml")))
        self.kubeconfig = self.workdir / "kubeconfig"

    async def start(self) -> None:
        try:
            await asyncio.gather(self.postgres.start(), self.kafka.start(), self.stripe.start(), self.kube.start())
        except BaseException:
            await self.stop()
            raise
        self.kube.write_kubeconfig(self.kubeconfig)

    async def stop(self) -> None:
        await asyncio.gather(
            self.postgres.close(), self.kafka.stop(), self.stripe.stop(), self.kube.stop(), return_exceptions=True
        )
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def tenant(self, prefix: str = "t", resync_seconds: float = 600.0) -> Tenant:
        name = f"{prefix}{next(_counter)}{secrets.token_hex(2)}".lower()
        database_url = await self.postgres.create_database(name)
        await asyncio.to_thread(migrate.upgrade, database_url)
        topics = Topics(**{key: f"{name}.{value}" for key, value in Topics().__dict__.items()})
        await self.kafka.create_topics([*topics.all(), topics.orders_created, topics.orders_dlq])
        webhook_secret = "whsec_" + secrets.token_hex(16)
        workdir = self.workdir / name
        workdir.mkdir()
        kubeconfig = self.kube.write_kubeconfig(workdir / "kubeconfig", namespace=name)
        env = {
            "DATABASE_URL": database_url,
            "KAFKA_BROKER_URL": self.kafka.bootstrap_servers,
            "KUBEPAY_KAFKA_IDEMPOTENCE": "false",  # the test broker lacks InitProducerId v0+
            "STRIPE_SECRET_KEY": self.stripe.api_key,
            "KUBEPAY_STRIPE_API_BASE": self.stripe.url,
            "STRIPE_WEBHOOK_SECRET": webhook_secret,
            "KUBECONFIG": str(kubeconfig),
            "KUBEPAY_NAMESPACE": name,
            "PAYMENT_HTTP_PORT": str(free_port()),
            "KUBEPAY_HEALTH_PORT": str(free_port()),
            "KUBEPAY_METRICS_PORT": str(free_port()),
            "KUBEPAY_ADMISSION_PORT": str(free_port()),
            "KUBEPAY_ADMISSION_CERT_DIR": str(await asyncio.to_thread(write_self_signed, workdir / "admission")),
            "KUBEPAY_RESYNC_SECONDS": str(resync_seconds),
            "KUBEPAY_LOG_LEVEL": "INFO",
            "SRV_ENV": "sandbox",
            "KUBEPAY_API_PORT": str(free_port()),
            "KUBEPAY_API_TOKEN": secrets.token_urlsafe(24),
            "KUBEPAY_API_NAMESPACE": name,
            "KUBEPAY_ORDERS_SESSION_TIMEOUT_MS": "1000",  # the test broker's group joins are slow otherwise
            "KUBEPAY_ORDERS_HEARTBEAT_MS": "300",
            **{f"KUBEPAY_TOPIC_{key.upper()}": value for key, value in topics.__dict__.items()},
        }
        return Tenant(name, name, database_url, topics, webhook_secret, env, workdir)
