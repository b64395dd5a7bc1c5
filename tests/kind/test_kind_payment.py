"""A PaymentIntent through the deployed release: created in Stripe, confirmed with a test card, Ready."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def run(kubectl: list[str], *args: str, stdin: str | None = None, timeout: float = 60) -> str:
    result = subprocess.run([*kubectl, *args], input=stdin, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def get(kubectl: list[str], name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(run(kubectl, "get", "paymentintent", name, "-o", "json"))
    return obj


def wait_for(kubectl: list[str], name: str, what: str, check: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj = get(kubectl, name)
    while not check(obj):
        if time.monotonic() > deadline:
            pytest.fail(f"{name}: no {what} after {timeout:.0f}s; status: {json.dumps(obj.get('status'), indent=1)}")
        time.sleep(2)
        obj = get(kubectl, name)
    return obj


@pytest.fixture()
def payment(kubectl: list[str]) -> Any:
    example = yaml.safe_load((REPO / "examples" / "paymentintent.yaml").read_text())
    suffix = uuid.uuid4().hex[:8]
    example["metadata"]["name"] = f"e2e-{suffix}"
    example["spec"]["orderId"] = f"e2e-{suffix}"
    run(kubectl, "apply", "-f", "-", stdin=yaml.safe_dump(example))
    yield example["metadata"]["name"]
    run(kubectl, "delete", "paymentintent", example["metadata"]["name"], "--ignore-not-found", "--wait=false")


def test_example_gets_a_stripe_id_and_is_paid(kubectl: list[str], payment: str) -> None:
    obj = wait_for(
        kubectl, payment, "Stripe id in status",
        lambda o: o.get("status", {}).get("stripe", {}).get("paymentIntentId", "").startswith("pi_"),
        timeout=120,
    )
    stripe_id = obj["status"]["stripe"]["paymentIntentId"]
    assert obj["status"].get("clientSecretRef"), "the client secret's Secret is not referenced in status"

    key = os.environ.get("STRIPE_SECRET_KEY", "")
    if not key.startswith("sk_test_"):
        pytest.skip("set STRIPE_SECRET_KEY=sk_test_... to confirm the payment with pm_card_visa")
    import stripe

    client = stripe.StripeClient(key)
    client.v1.payment_intents.confirm(
        stripe_id, params={"payment_method": "pm_card_visa", "return_url": "https://example.com/return"}
    )
    # The receiver applies Stripe's webhook (with `stripe listen --forward-to`), or the controller's
    # resync reads Stripe (resyncSeconds is 30 in deploy/values-kind.yaml).
    run(kubectl, "wait", f"paymentintent/{payment}", "--for=condition=Ready", "--timeout=300s", timeout=320)
    assert get(kubectl, payment)["status"]["phase"] == "Succeeded"
