"""Session-wide sandbox (real PostgreSQL, Kafka protocol, Stripe fake, Kubernetes API emulator) and
per-test tenants: every test gets its own database, topics, namespace and webhook secret.

KUBEPAY_E2E_KUBECONFIG (+ KUBEPAY_E2E_CONTEXT) puts the tenants in a real cluster instead of the emulator
(KUBEPAY_E2E_REAL=1: a control plane and Apache Kafka that the sandbox starts itself),
KUBEPAY_E2E_STRIPE_KEY=sk_test_... uses Stripe test mode instead of the fake (kubepay_sandbox.targets);
tests marked needs_emulator / needs_fake_stripe are then skipped, and stops_kube_api with KUBEPAY_E2E_KUBECONFIG.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from kubepay_sandbox.processes import KubepayProcess
from kubepay_sandbox.stack import Sandbox, Targets, TargetsError, Tenant
from tests.helpers import Kube

TARGETS = pytest.StashKey[Targets]()
FAULTS = Path(__file__).parent / "faults"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The fault suite (minutes of crashes and outages) runs only when named: `make test-faults`."""
    if collection_path != FAULTS:
        return None
    named = [(config.invocation_params.dir / arg.split("::")[0]).resolve() for arg in config.args]
    return True if not any(path == FAULTS or FAULTS in path.parents for path in named) else None


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[TARGETS] = Targets.from_env()
    except TargetsError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> str | None:
    targets = config.stash[TARGETS]
    return f"kubepay e2e: {targets.describe()}" if targets.real_kube or targets.real_stripe else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    targets = config.stash[TARGETS]
    skips = {
        "needs_fake_stripe": targets.real_stripe and "needs the Stripe fake's test controls; "
                                                     "this run uses Stripe test mode (KUBEPAY_E2E_STRIPE_KEY)",
        "needs_emulator": targets.real_kube and "needs the Kubernetes API emulator's controls; "
                                                "this run uses a real cluster (KUBEPAY_E2E_KUBECONFIG or _REAL)",
        "stops_kube_api": targets.kubeconfig is not None and "stops the Kubernetes API server: only the emulator "
                                                             "or KUBEPAY_E2E_REAL's own control plane",
    }
    for item in items:
        for marker, reason in skips.items():
            if reason and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest_asyncio.fixture(scope="session")
async def sandbox(request: pytest.FixtureRequest) -> AsyncIterator[Sandbox]:
    async with Sandbox(request.config.stash[TARGETS]) as box:
        yield box


@pytest_asyncio.fixture()
async def tenant(sandbox: Sandbox) -> AsyncIterator[Tenant]:
    t = await sandbox.tenant()
    try:
        yield t
    finally:
        await t.stop_processes()
        await sandbox.release(t)


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
    marker = request.node.get_closest_marker("operator_env")
    operator = tenant.process("operator", **(marker.kwargs if marker else {}))
    webhook = tenant.process("webhook")
    await operator.start()
    await webhook.start()
    yield Running(tenant, operator, webhook)
    print_logs_if_failed(request, tenant)


def print_logs_if_failed(request: pytest.FixtureRequest, tenant: Tenant) -> None:
    """The tail of each of the tenant's process logs, when the test failed (pytest shows it with the failure)."""
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
