"""Offline checks of the Helm chart with the real helm binary (fetched by tests/chart/tools.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.tools import KUBERNETES_VERSION, REPO, ensure_tools

CHART = REPO / "helm" / "kubepay"
HERE = Path(__file__).resolve().parent
VALUES_REQUIRED = HERE / "values-required.yaml"
VALUES_ALL = HERE / "values-all.yaml"
RELEASE = "kp"
NAMESPACE = "kubepay-system"

Doc = dict[str, Any]
Render = Callable[..., list[Doc]]


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_tools()["helm"]


def run_helm(helm: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *map(str, args)], capture_output=True, text=True, timeout=120)


def template_args(values: Sequence[Path], sets: Sequence[str], include_crds: bool) -> list[str | Path]:
    args: list[str | Path] = ["template", RELEASE, CHART, "--namespace", NAMESPACE]
    args += ["--kube-version", KUBERNETES_VERSION]
    if include_crds:
        args.append("--include-crds")
    for v in values:
        args += ["--values", v]
    for s in sets:
        args += ["--set", s]
    return args


@pytest.fixture(scope="session")
def render(helm: Path) -> Render:
    """render(values..., sets=[...]) -> the rendered objects (hooks included), or AssertionError with helm's stderr."""
    cache: dict[tuple[Any, ...], list[Doc]] = {}

    def _render(*values: Path, sets: Sequence[str] = (), include_crds: bool = True) -> list[Doc]:
        key = (values, tuple(sets), include_crds)
        if key not in cache:
            result = run_helm(helm, *template_args(values, sets, include_crds))
            assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
            cache[key] = [d for d in yaml.safe_load_all(result.stdout) if d]
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def default_objects(render: Render) -> list[Doc]:
    return render(VALUES_REQUIRED)


@pytest.fixture(scope="session")
def all_objects(render: Render) -> list[Doc]:
    return render(VALUES_ALL)


def find(objects: Sequence[Doc], kind: str, name_suffix: str = "") -> list[Doc]:
    return [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]


def one(objects: Sequence[Doc], kind: str, name_suffix: str = "") -> Doc:
    found = find(objects, kind, name_suffix)
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_spec(obj: Doc) -> Doc:
    spec: Doc = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
    return spec


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}
