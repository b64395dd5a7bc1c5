"""The CRD rejects invalid PaymentIntents with a message naming the field, as the API server would."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepay_sandbox.kube_emulator import validate_custom_resource

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "paymentintents.kubepay.io.yaml").read_text())
VALID = {"apiVersion": "kubepay.io/v1alpha1", "kind": "PaymentIntent", "metadata": {"name": "x"},
         "spec": {"orderId": "1111", "amount": 1200, "currency": "usd"}}


def _with(**spec: Any) -> dict[str, Any]:
    merged = {**VALID["spec"], **spec}
    return {**VALID, "spec": {k: v for k, v in merged.items() if v is not None}}


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("paymentintent*.yaml")))
def test_examples_are_valid(path: Path) -> None:
    assert validate_custom_resource(CRD, yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize(("obj", "field", "why"), [
    (_with(amount=0), "spec.amount", "greater than or equal to 1"),
    (_with(amount=12.5), "spec.amount", "integer"),
    (_with(amount=100_000_000), "spec.amount", "less than or equal to 99999999"),
    (_with(currency="US"), "spec.currency", "^[a-z]{3}$"),
    (_with(currency="USD"), "spec.currency", "^[a-z]{3}$"),
    (_with(currency="usd\n"), "spec.currency", "^[a-z]{3}$"),  # Go's `$` is the end of the text
    (_with(orderId=None), "spec.orderId", "Required value"),
    (_with(orderId=""), "spec.orderId", "at least 1"),
    (_with(orderId="11\x0011"), "spec.orderId", "^[^\\x00-\\x1F\\x7F]+$"),
    (_with(userId="user\n42"), "spec.userId", "^[^\\x00-\\x1F\\x7F]*$"),
    (_with(captureMethod="later"), "spec.captureMethod", "automatic"),
])
def test_invalid_resources_are_rejected_naming_the_field(obj: dict[str, Any], field: str, why: str) -> None:
    errors = validate_custom_resource(CRD, obj)
    assert errors, f"{obj['spec']} was accepted"
    assert any(e.startswith(field) and why in e for e in errors), errors


def test_order_id_and_currency_are_immutable() -> None:
    changed = _with(orderId="2222", currency="eur")
    errors = validate_custom_resource(CRD, changed, old=VALID)
    assert any("orderId is immutable" in e for e in errors)
    assert any("currency is immutable" in e for e in errors)
    assert validate_custom_resource(CRD, _with(amount=1500), old=VALID) == []


def _walk(schema: dict[str, Any], path: str) -> list[str]:
    missing = [] if schema.get("description") or path in ("", ".metadata") else [path or "<root>"]
    for name, child in (schema.get("properties") or {}).items():
        missing += _walk(child, f"{path}.{name}")
    if "items" in schema:
        missing += [m for m in _walk(schema["items"], f"{path}[]") if m != f"{path}[]"]
    return missing


def test_every_field_has_a_description_for_kubectl_explain() -> None:
    version = CRD["spec"]["versions"][0]
    assert _walk(version["schema"]["openAPIV3Schema"], "") == []
    assert [(c["name"], c.get("priority", 0)) for c in version["additionalPrinterColumns"]] == [
        ("Order", 0), ("Amount", 0), ("Currency", 0), ("Phase", 0), ("Ready", 0), ("Synced", 0), ("Stripe ID", 0),
        ("Age", 0), ("Stripe Amount", 1), ("Received", 1), ("Refunded", 1), ("Message", 1)]
    assert CRD["spec"]["names"]["shortNames"] == ["pi"]
    assert version["subresources"] == {"status": {}}
