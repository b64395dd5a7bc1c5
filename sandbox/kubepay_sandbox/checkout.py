"""The kubepay checkout the sandbox works from: its CRDs, examples, and the real parts `make` builds under .cache/.

kubepay-sandbox is installed editable from a checkout (``pip install -e ./sandbox``, as ``make venv`` does), so
this file sits at ``<checkout>/sandbox/kubepay_sandbox/checkout.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = ["CRD_DIR", "PEERING_CRD_DIR", "REPO", "built"]

REPO: Final = Path(__file__).resolve().parents[2]
CRD_DIR: Final = REPO / "crds"
# kopf's peering CRDs, as the chart installs them: a sandbox cluster serves them for controllers that peer.
PEERING_CRD_DIR: Final = REPO / "helm" / "kubepay" / "files" / "kopf-peering"


def built(name: str, env_var: str, missing: type[Exception]) -> Path:
    """$`env_var`, or the binary `make NAME` built into .cache/NAME/bin/NAME; `missing` (naming the make target to
    run) when there is none. Nothing here builds it."""
    configured = os.environ.get(env_var, "").strip()
    binary = Path(configured) if configured else REPO / ".cache" / name / "bin" / name
    if not binary.is_file():
        raise missing(f"no {name} at {binary}: run `make {name}` (or set {env_var})")
    return binary
