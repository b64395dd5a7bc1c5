"""Prometheus rule-file checks for tests: ``check_rules(path)`` validates a rule file as ``promtool check rules``
does (group structure, PromQL expressions, label and annotation templates), with Prometheus's own code.

`make promrules` builds the checker (tools/promrules/main.go, Prometheus's model/rulefmt at the version
tools/promrules/go.mod pins) into .cache/promrules/bin; `make real-parts` includes it. Tests here never build
it. As for stripe-mock and the control plane: the real tier is skipped unless KUBEPAY_REAL=1 (conftest.py), and
with KUBEPAY_REAL=1 a missing binary is an error that names the target to run.

promtool itself is not built (about 16 minutes cold on two cores), so there is no ``promtool test rules``
(rule unit tests) here; ``eval_promql`` runs promqltest scripts on Prometheus's PromQL engine instead (the
module's test binary, promql-eval). For a PrometheusRule resource, write its ``spec`` (``groups:``) to a file
first.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from kubepay_sandbox.checkout import built

__all__ = ["ENV_BINARY", "PromrulesMissing", "check_rules", "eval_promql", "promrules"]

ENV_BINARY = "KUBEPAY_PROMRULES"  # a promrules binary, instead of .cache/promrules/bin/promrules
TIMEOUT = 60.0


class PromrulesMissing(RuntimeError):
    """No promrules binary: the message names the make target that builds it."""


def promrules() -> Path:
    """$KUBEPAY_PROMRULES, or what `make promrules` built."""
    return built("promrules", ENV_BINARY, PromrulesMissing)


def eval_promql(script: str | os.PathLike[str]) -> str:
    """Runs a promqltest script (``load`` series, then ``eval instant at T EXPR`` and the result expected) with
    Prometheus's PromQL engine, in the test binary `make promrules` builds as promql-eval; its output, or
    AssertionError with the output naming each eval that did not match."""
    binary = built("promrules", ENV_BINARY, PromrulesMissing).with_name("promql-eval")
    result = subprocess.run([str(binary), "-test.run", "^TestScript$", "-test.v"], capture_output=True, text=True,
                            timeout=TIMEOUT, check=False, env={**os.environ, "PROMQL_SCRIPT": str(script)})
    output = result.stdout + result.stderr
    if result.returncode != 0 or "--- PASS: TestScript" not in output:
        raise AssertionError(f"PromQL evaluation of {script} failed (exit {result.returncode}):\n{output}")
    return output


def check_rules(path: str | os.PathLike[str]) -> str:
    """Checks the rule file at ``path`` as ``promtool check rules`` does and returns the checker's output
    ("SUCCESS: N rules found"); raises AssertionError carrying that output (each error with its file, line,
    group, rule and, for PromQL errors, the expression) if the file is refused."""
    file = Path(path)
    result = subprocess.run([str(promrules()), "check", str(file)], capture_output=True, text=True,
                            timeout=TIMEOUT, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"rule check of {file} failed (exit {result.returncode}):\n{output}")
    return output
