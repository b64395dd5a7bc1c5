"""The chart's PrometheusRule checked with Prometheus's own rule-file code (model/rulefmt, what `promtool check
rules` runs: group structure, PromQL, label and annotation templates), through `make promrules`."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.chart.monitoring import rendered, rules
from tests.real import promrules


def test_prometheus_accepts_the_charts_rules(tmp_path: Path) -> None:
    [rule] = [o for o in rendered() if o["kind"] == "PrometheusRule"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    output = promrules.check_rules(tmp_path / "rules.yaml")
    assert f"SUCCESS: {len(rules([rule]))} rules found" in output, output
    assert "WARNING" not in output, output
