"""The kubepay checkout the sandbox works from: its CRDs, examples, and the real parts `make` builds under .cache/.

kubepay-sandbox is installed editable from a checkout (``pip install -e ./sandbox``, as ``make venv`` does), so
this file sits at ``<checkout>/sandbox/kubepay_sandbox/checkout.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["CRD_DIR", "PEERING_CRD_DIR", "REPO"]

REPO: Final = Path(__file__).resolve().parents[2]
CRD_DIR: Final = REPO / "crds"
# kopf's peering CRDs, as the chart installs them: a sandbox cluster serves them for controllers that peer.
PEERING_CRD_DIR: Final = REPO / "helm" / "kubepay" / "files" / "kopf-peering"
