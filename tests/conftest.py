"""Session-wide sandbox (real PostgreSQL, Kafka protocol, Stripe fake, Kubernetes API emulator) and
per-test tenants: every test gets its own database, topics, namespace and webhook secret."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from kubepay.sandbox.processes import KubepayProcess
from kubepay.sandbox.stack import Sandbox, Tenant
from tests.helpers import Kube


@pytest_asyncio.fixture(scope="session")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox() as box:
        yield box


@pytest_asyncio.fixture()
async def tenant(sandbox: Sandbox) -> AsyncIterator[Tenant]:
    t = await sandbox.tenant()
    try:
        yield t
    finally:
        await t.stop_processes()


@pytest_asyncio.fixture()
async def kube(tenant: Tenant) -> AsyncIterator[Kube]:
    k = await Kube.connect(tenant.env["KUBECONFIG"])
    yield k
    await k.close()


@dataclass
class Running:
    """A tenant with the controller and the receiver running as processes."""

    tenant: Tenant
    operator: KubepayProcess
    webhook: KubepayProcess

    @property
    def namespace(self) -> str:
        return self.tenant.namespace


@pytest_asyncio.fixture()
async def running(tenant: Tenant, request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    operator = tenant.process("operator")
    webhook = tenant.process("webhook")
    await operator.start()
    await webhook.start()
    yield Running(tenant, operator, webhook)
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for process in tenant.processes:
            print(f"--- {process.command} log ({process.log_path.name}) ---\n{process.logs()[-15000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
