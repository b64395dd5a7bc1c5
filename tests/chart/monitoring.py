"""What the chart's PrometheusRule and Grafana dashboard query, for the offline chart tests and the real tier."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Iterable
from typing import Any

import yaml

from tests.chart.tools import KUBERNETES_VERSION, REPO, ensure_tools

METRIC = re.compile(r"\bkubepay_[a-z_]+\b")

Doc = dict[str, Any]
RELEASE, NAMESPACE = "kp", "kubepay-system"


@functools.cache
def rendered() -> list[Doc]:
    """The chart with tests/chart/values-all.yaml (alerts and dashboard on), for the real tier."""
    helm = ensure_tools()["helm"]
    out = subprocess.run([str(helm), "template", RELEASE, str(REPO / "helm" / "kubepay"), "--namespace", NAMESPACE,
                          "--kube-version", KUBERNETES_VERSION, "--values",
                          str(REPO / "tests" / "chart" / "values-all.yaml")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def rules(objects: Iterable[Doc]) -> list[Doc]:
    """Every alerting rule of the rendered PrometheusRule(s)."""
    return [rule for o in objects if o["kind"] == "PrometheusRule"
            for group in o["spec"]["groups"] for rule in group["rules"]]


def dashboard(objects: Iterable[Doc]) -> Doc:
    [config_map] = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    parsed: Doc = json.loads(config_map["data"]["kubepay.json"])
    return parsed


def expressions(objects: list[Doc]) -> list[str]:
    """Every PromQL expression: the alerts', the dashboard's panels' and its variables'."""
    board = dashboard(objects)
    panels = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    variables = [v["definition"] for v in board["templating"]["list"] if v.get("definition")]
    return [rule["expr"] for rule in rules(objects)] + panels + variables


def queried(objects: list[Doc]) -> set[str]:
    """The sample names queried (a histogram's `_bucket`, `_count`, a counter's `_total`)."""
    return {name for expr in expressions(objects) for name in METRIC.findall(expr)}
