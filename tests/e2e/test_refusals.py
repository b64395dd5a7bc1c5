"""What Kubernetes or Stripe would refuse ends visibly and once: long names, 422s, Stripe's currency rules."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from kubepay.model.labels import PAYMENT_INTENT
from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.helpers import Kube, admission_review, intents_for, messages, stays, stripe_id

LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def _conditions(pi: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (pi.get("status") or {}).get("conditions") or []}


async def test_a_name_too_long_for_a_label_value_still_gets_its_intent_and_secret(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    name = "quarterly-subscription-renewal-for-customer-4711-in-the-eu-region-2025"
    assert len(name) > 63
    created = await kube.create_pi(ns, name, {"orderId": "9101", "amount": 1200, "currency": "usd"})
    intent_id = await stripe_id(kube, ns, name)

    [intent] = await intents_for(sandbox.stripe_client(), created["metadata"]["uid"])
    assert intent["id"] == intent_id
    pi = await kube.get_pi(ns, name)
    assert pi is not None
    ref = pi["status"]["clientSecretRef"]
    secret = await kube.core.read_namespaced_secret(ref["name"], ns)
    assert base64.b64decode(secret.data[ref["key"]]).decode() == intent["client_secret"]
    labels = secret.metadata.labels
    assert all(len(value) <= 63 and LABEL_VALUE.fullmatch(value) for value in labels.values()), labels
    assert labels[PAYMENT_INTENT].startswith("quarterly-subscription-renewal-for-customer-4711")
    assert secret.metadata.annotations[PAYMENT_INTENT] == name
    selected = await kube.core.list_namespaced_secret(ns, label_selector=f"{PAYMENT_INTENT}={labels[PAYMENT_INTENT]}")
    assert [s.metadata.name for s in selected.items] == [ref["name"]]
    assert _conditions(pi)["Synced"]["status"] == "True"


async def test_a_write_the_api_server_refuses_ends_in_synced_false_and_one_warning(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await sandbox.kube_controls.deny("secrets", ns, "Secrets in this namespace need the label team")
    try:
        created = await kube.create_pi(ns, "policed", {"orderId": "9102", "amount": 1200, "currency": "usd"})
        pi = await kube.wait_pi(ns, "policed", lambda o: _conditions(o).get("Synced", {}).get("status") == "False",
                                what="Synced=False")
        synced = _conditions(pi)["Synced"]
        assert synced["reason"] == "Invalid"
        assert synced["message"].startswith("The Kubernetes API server refused a write: secrets \"policed-client-")
        assert synced["message"].endswith("denied request: Secrets in this namespace need the label team.")
        [warning] = await kube.wait_events(ns, "policed", {"Invalid"}, type_="Warning")
        assert warning.message == synced["message"]

        async def one_warning_and_one_intent() -> bool:
            warnings = [e for e in await kube.events(ns) if e.involved_object.name == "policed" and e.type == "Warning"]
            intents = await intents_for(sandbox.stripe_client(), created["metadata"]["uid"])
            return len(warnings) == 1 and len(intents) == 1
        await stays(one_warning_and_one_intent, 3.0, "a single Warning and a single Stripe intent (no retry loop)")
    finally:
        await sandbox.kube_controls.deny("secrets", ns, None)


@pytest.mark.parametrize(("currency", "amount", "rule"), [
    ("isk", 550, "must be a multiple of 100 for ISK: Stripe takes ISK in whole units"),
    ("kwd", 1235, "must be a multiple of 10 for KWD: Stripe needs the last digit of a three-decimal amount to be 0"),
])
async def test_an_amount_stripe_would_refuse_fails_without_reaching_stripe(
        sandbox: Sandbox, running: Running, kube: Kube, currency: str, amount: int, rule: str) -> None:
    ns, order_id = running.namespace, f"93{amount}"
    created = await kube.create_pi(ns, "odd", {"orderId": order_id, "amount": amount, "currency": currency})
    pi = await kube.phase_is(ns, "odd", "Failed")
    conditions = _conditions(pi)
    assert (conditions["Synced"]["status"], conditions["Synced"]["reason"]) == ("False", "SpecInvalid")
    assert (conditions["Failed"]["status"], conditions["Failed"]["reason"]) == ("True", "SpecInvalid")
    assert f"spec.amount: {rule}" in conditions["Synced"]["message"]
    assert pi["status"]["failure"]["code"] == "spec_invalid"
    await kube.wait_events(ns, "odd", {"SpecInvalid"}, type_="Warning")
    [order] = await messages(sandbox.kafka, running.tenant.topics.order_status, order_id, 1)
    assert order.value["status"] == "CANCELLED"
    assert await intents_for(sandbox.stripe_client(), created["metadata"]["uid"]) == []


async def test_admission_refuses_amounts_stripe_would_refuse(running: Running) -> None:
    pi = {"apiVersion": "kubepay.io/v1alpha1", "kind": "PaymentIntent",
          "metadata": {"name": "krona", "namespace": running.namespace},
          "spec": {"orderId": "9104", "amount": 550, "currency": "isk"}}
    answer = await admission_review(running, "validate-paymentintent", "CREATE", pi)
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 422
    assert answer["status"]["message"].startswith("spec.amount: must be a multiple of 100 for ISK: ")
    whole = {**pi, "spec": {**pi["spec"], "amount": 500}}
    assert (await admission_review(running, "validate-paymentintent", "CREATE", whole))["allowed"] is True
    capture = {**whole, "spec": {**whole["spec"], "capture": True, "amountToCapture": 400}}
    answer = await admission_review(running, "validate-paymentintent", "UPDATE", capture, old=whole)
    assert answer["allowed"] is True
    capture["spec"]["amountToCapture"] = 425
    answer = await admission_review(running, "validate-paymentintent", "UPDATE", capture, old=whole)
    assert answer["allowed"] is False and answer["status"]["message"].startswith("spec.amountToCapture: must be")
    # An update that leaves the amount alone (a finalizer going away) passes even if the amount is refused.
    leaving = {**pi, "metadata": {**pi["metadata"], "finalizers": []}}
    assert (await admission_review(running, "validate-paymentintent", "UPDATE", leaving, old=pi))["allowed"] is True
