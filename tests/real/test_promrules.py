"""The rule-file check (promrules.py): a good Prometheus rule file passes, one with a broken PromQL expression
or template is refused with the rule and the expression named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.real.promrules import check_rules

RULES = """\
groups:
  - name: kubepay
    rules:
      - alert: KubepayReconcileErrors
        expr: rate(kubepay_reconcile_errors_total[5m]) > 0
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.instance }} fails to reconcile"
      - record: kubepay:reconcile_errors:rate5m
        expr: sum by (namespace) (rate(kubepay_reconcile_errors_total[5m]))
"""

BROKEN_EXPR = "rate(kubepay_reconcile_errors_total[5m] > 0"  # the closing parenthesis is missing
BROKEN = f"""\
groups:
  - name: kubepay
    rules:
      - alert: KubepayBroken
        expr: {BROKEN_EXPR}
      - alert: KubepayBadTemplate
        expr: up == 0
        annotations:
          summary: "{{{{ $labels.instance "
"""


def test_check_rules_passes_a_valid_file(tmp_path: Path) -> None:
    (rules := tmp_path / "rules.yaml").write_text(RULES)
    assert "SUCCESS: 2 rules found" in check_rules(rules)


def test_check_rules_names_a_broken_expression_and_template(tmp_path: Path) -> None:
    (broken := tmp_path / "broken.yaml").write_text(BROKEN)
    with pytest.raises(AssertionError) as failure:
        check_rules(broken)
    message = str(failure.value)
    assert '"KubepayBroken": could not parse expression' in message
    assert f"expr: {BROKEN_EXPR}\n" in message
    assert '"KubepayBadTemplate": annotation "summary": template' in message
