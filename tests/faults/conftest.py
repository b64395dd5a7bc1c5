"""The fault suite's fixtures: every tenant's dependencies sit behind fault proxies; the figures print at the end.

Run it with `make test-faults` (or `pytest tests/faults`); `make test` leaves it out (tests/conftest.py).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from kubepay_sandbox.stack import Sandbox, Tenant
from tests.faults.harness import FIGURES, LOGS, Faults
from tests.helpers import Kube


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controlling process, not an xdist worker
        FIGURES.unlink(missing_ok=True)
        shutil.rmtree(LOGS, ignore_errors=True)


@pytest.hookimpl(trylast=True)  # after the durations: the figures end the run's output
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES.exists():
        terminalreporter.section("fault suite figures")
        for line in sorted(FIGURES.read_text().splitlines()):
            terminalreporter.write_line(line)


@pytest_asyncio.fixture()
async def faults(sandbox: Sandbox, request: pytest.FixtureRequest) -> AsyncIterator[Faults]:
    """Also keeps the processes' logs of the last run in .cache/faults/logs/<test>/."""
    tenant = await sandbox.tenant()
    try:
        async with Faults.around(sandbox, tenant) as proxied:
            try:
                yield proxied
            finally:
                await tenant.stop_processes()
                kept = LOGS / re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
                shutil.rmtree(kept, ignore_errors=True)
                kept.mkdir(parents=True)
                for process in tenant.processes:
                    if process.log_path.exists():
                        shutil.copy(process.log_path, kept / process.log_path.name)
    finally:
        await sandbox.release(tenant)


@pytest_asyncio.fixture()
async def tenant(faults: Faults) -> Tenant:
    """The suite's tenants are proxied: `running` starts the processes behind the fault proxies."""
    return faults.tenant


@pytest_asyncio.fixture()
async def kube(faults: Faults) -> AsyncIterator[Kube]:
    """The test's own client goes straight to the API server: it watches and creates during an outage."""
    client = await Kube.connect(faults.kubeconfig)
    yield client
    await client.close()
