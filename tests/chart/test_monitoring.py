"""The chart's alerts and dashboard, rendered: what they select, that each alert has its runbook, and that they
query only metrics kubepay exports (the real tier checks the names against a scrape of running processes)."""

from __future__ import annotations

from prometheus_client import REGISTRY

import kubepay.metrics  # noqa: F401 - registers every kubepay metric
from tests.chart.conftest import RELEASE, VALUES_REQUIRED, Doc, Render, find, one
from tests.chart.monitoring import dashboard, queried, rules
from tests.chart.tools import REPO

ALERTS = {"KubepayWebhookRejections", "KubepayWebhookUnavailable", "KubepayStripeErrors", "KubepayStripeRateLimited",
          "KubepayPaymentsStuck", "KubepayKafkaPublishLag", "KubepayLedgerUnprocessed", "KubepayControllerDown"}


def test_alerts_and_dashboard_are_off_by_default(default_objects: list[Doc]) -> None:
    assert not find(default_objects, "PrometheusRule")
    assert not find(default_objects, "ConfigMap", "-dashboard")


def test_every_alert_selects_this_release_and_has_a_runbook_section(all_objects: list[Doc]) -> None:
    rule = one(all_objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"  # prometheusRule.labels, for ruleSelector
    alerts = {r["alert"]: r for r in rules(all_objects)}
    assert set(alerts) == ALERTS
    readme = (REPO / "README.md").read_text()
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        assert f'job="{RELEASE}-kubepay-' in alert["expr"] and 'namespace="kubepay-system"' in alert["expr"], name
        anchor = alert["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == name.lower() and f"\n#### {name}\n" in readme, name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
    assert "> 120" in alerts["KubepayKafkaPublishLag"]["expr"]  # values-all's prometheusRule.kafkaLagSeconds


def test_the_dashboard_configmap_is_labelled_for_grafanas_sidecar(all_objects: list[Doc], render: Render) -> None:
    config_map = one(all_objects, "ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Payments"}
    board = dashboard(all_objects)
    assert board["uid"] == "kubepay" and len(board["panels"]) >= 15
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    assert all(t["datasource"]["uid"] == "${datasource}" for t in board["panels"])
    elsewhere = render(VALUES_REQUIRED, sets=["grafanaDashboard.enabled=true", "grafanaDashboard.namespace=grafana"])
    assert one(elsewhere, "ConfigMap", "-dashboard")["metadata"]["namespace"] == "grafana"


def test_alerts_and_panels_query_only_metrics_kubepay_exports(all_objects: list[Doc]) -> None:
    exported = {sample.name for family in REGISTRY.collect() if family.name.startswith("kubepay_")
                for sample in family.samples} | {
        f"{family.name}{suffix}" for family in REGISTRY.collect() if family.name.startswith("kubepay_")
        for suffix in ("", "_total", "_bucket", "_count", "_sum")}
    assert queried(all_objects) - exported == set()
