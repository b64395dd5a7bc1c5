"""The chart's PrometheusRule checked with Prometheus's own code, through `make promrules`: its rule-file checks
(model/rulefmt, what `promtool check rules` runs: group structure, PromQL, label and annotation templates), and
its PromQL engine evaluating each alert's expression over series shaped as kubepay's processes export them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.chart.monitoring import NAMESPACE, RELEASE, rendered, rules
from tests.real import promrules


def test_prometheus_accepts_the_charts_rules(tmp_path: Path) -> None:
    [rule] = [o for o in rendered() if o["kind"] == "PrometheusRule"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    output = promrules.check_rules(tmp_path / "rules.yaml")
    assert f"SUCCESS: {len(rules([rule]))} rules found" in output, output
    assert "WARNING" not in output, output


CONTROLLER = f'job="{RELEASE}-kubepay-controller",namespace="{NAMESPACE}"'
RECEIVER = f'job="{RELEASE}-kubepay-receiver",namespace="{NAMESPACE}"'
# 30 minutes a minute apart, as this release's processes export them: Kafka stalls after minute 4, a payment is
# stuck from minute 10, the receiver rejects 6 deliveries a minute (0.1/s) among 600 good ones, Stripe answers
# 429 three times a minute from minute 11, two ledgered events stay unprocessed from minute 11, and the active
# controller disappears after minute 9 (its standby keeps reporting 0). Another release's series must not count.
SERIES = f"""\
load 1m
  kubepay_oldest_unpublished_milestone_age_seconds{{{CONTROLLER}}} 0x4 0+60x25
  kubepay_oldest_unpublished_milestone_age_seconds{{job="other-kubepay-controller",namespace="{NAMESPACE}"}} 9999x30
  kubepay_payments_stuck{{{CONTROLLER},phase="Processing"}} 0x9 1x20
  kubepay_payments_stuck{{{CONTROLLER},phase="Pending"}} 0x30
  kubepay_webhook_duration_seconds_count{{{RECEIVER},status="200"}} 0+600x30
  kubepay_webhook_duration_seconds_count{{{RECEIVER},status="400"}} 0+6x30
  kubepay_webhook_duration_seconds_count{{{RECEIVER},status="503"}} 0x30
  kubepay_stripe_requests_total{{{CONTROLLER},operation="create_intent",outcome="ok"}} 0+60x30
  kubepay_stripe_requests_total{{{CONTROLLER},operation="create_intent",outcome="rate_limited"}} 0x10 0+3x19
  kubepay_stripe_requests_total{{{CONTROLLER},operation="create_intent",outcome="unavailable"}} 0x30
  kubepay_ledger_unprocessed_events{{{CONTROLLER}}} 0x10 2x19
  kubepay_controller_active{{{CONTROLLER},pod="active"}} 1x9
  kubepay_controller_active{{{CONTROLLER},pod="standby"}} 0x30
"""
# (alert, minute, the expected result: "" for none, else the sample the alert's expression returns)
EVALS = [
    ("KubepayKafkaPublishLag", 6, ""), ("KubepayKafkaPublishLag", 15, "{} 600"),
    ("KubepayPaymentsStuck", 5, ""), ("KubepayPaymentsStuck", 20, '{phase="Processing"} 1'),
    ("KubepayWebhookRejections", 20, "{} 0.1"), ("KubepayWebhookUnavailable", 20, ""),
    ("KubepayStripeRateLimited", 5, ""), ("KubepayStripeRateLimited", 20, "{} 0.05"),
    ("KubepayStripeErrors", 20, ""),
    ("KubepayLedgerUnprocessed", 5, ""), ("KubepayLedgerUnprocessed", 20, "{} 2"),
    ("KubepayControllerDown", 12, ""),  # the last sample counts for the 5-minute lookback
    ("KubepayControllerDown", 20, "{} 0"),
]


def test_each_alert_expression_holds_when_its_trouble_is_there_and_not_before(tmp_path: Path) -> None:
    expressions = {r["alert"]: r["expr"] for r in rules(rendered())}
    assert {alert for alert, _, _ in EVALS} == set(expressions)
    script = SERIES + "".join(f"\neval instant at {minute}m {expressions[alert]}\n" + (f"  {want}\n" if want else "")
                              for alert, minute, want in EVALS)
    (tmp_path / "alerts.test").write_text(script)
    promrules.eval_promql(tmp_path / "alerts.test")
    # The evaluation is real: a wrong value, or a result where none is expected, fails.
    lag = expressions["KubepayKafkaPublishLag"]
    for wrong, refusal in (("  {} 601\n", "601"), ("", "unexpected metric")):
        (tmp_path / "wrong.test").write_text(f"{SERIES}\neval instant at 15m {lag}\n{wrong}")
        with pytest.raises(AssertionError, match=refusal):
            promrules.eval_promql(tmp_path / "wrong.test")
