"""The real tier: tests against Apache Kafka, stripe-mock and a real Kubernetes control plane, all run
locally from what `make kafka`, `make stripe-mock` and `make real-parts` put under .cache/.

They run only when KUBEPAY_REAL=1 (`make test-real` sets it); otherwise every test here is skipped, so
`make test` stays Python-only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_ENABLED = os.environ.get("KUBEPAY_REAL") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    skip = pytest.mark.skip(reason="needs the real parts under .cache/: run `make test-real` (KUBEPAY_REAL=1)")
    for item in items:
        if not REAL_ENABLED and Path(str(item.fspath)).resolve().parent == here:
            item.add_marker(skip)
