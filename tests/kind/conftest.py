"""End-to-end tests against a real cluster with kubepay deployed by `make deploy` (kind).

They run only when KUBEPAY_KIND=1 (`make e2e-kind` sets it); otherwise every test here is skipped.
Settings (all set by `make e2e-kind`):
    KUBEPAY_KIND_CONTEXT     kubeconfig context (default kind-kubepay); never the current context implicitly
    KUBEPAY_KIND_NAMESPACE   namespace for the test's PaymentIntents (default default)
    KUBECTL                  kubectl binary (default: the cached one from tests/chart/tools.py)
    STRIPE_SECRET_KEY        a Stripe *test* key (sk_test_...): needed to confirm the payment
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

KIND_ENABLED = os.environ.get("KUBEPAY_KIND") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    skip = pytest.mark.skip(reason="needs a kind cluster with kubepay deployed: run `make e2e-kind` (KUBEPAY_KIND=1)")
    for item in items:
        if Path(str(item.fspath)).resolve().parent == here:
            item.add_marker(pytest.mark.kind)
            if not KIND_ENABLED:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def kubectl() -> list[str]:
    binary = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not binary:
        from tests.chart.tools import ensure_tools

        binary = str(ensure_tools()["kubectl"])
    context = os.environ.get("KUBEPAY_KIND_CONTEXT", "kind-kubepay")
    namespace = os.environ.get("KUBEPAY_KIND_NAMESPACE", "default")
    return [binary, "--context", context, "--namespace", namespace]
