"""Refunds: full, partial, partials summing to the total, and what must never reach Stripe."""

from __future__ import annotations

from typing import Any

from kubepay.sandbox.stack import Sandbox
from tests.conftest import Running
from tests.helpers import Kube, admission_review, create_refund, fetch, messages, pay, refund_phase_is, wait_for

SPEC = {"amount": 1000, "currency": "usd", "userId": "u-7"}


async def _stripe_refunds(sandbox: Sandbox, intent_id: str) -> list[dict[str, Any]]:
    listing = await sandbox.stripe.client().v1.refunds.list_async({"payment_intent": intent_id, "limit": 100})
    return [r.to_dict() for r in listing.data]


async def _row(running: Running, query: str, *args: Any) -> list[dict[str, Any]]:
    return await fetch(running.tenant.database_url, query, *args)


async def test_full_refund(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    pi = await pay(sandbox.stripe.client(), kube, running, "full", {**SPEC, "orderId": "7001"})
    intent_id = pi["status"]["stripe"]["paymentIntentId"]
    await create_refund(kube, ns, "full-back", {"paymentIntentName": "full", "reason": "requested_by_customer"})

    refund = await refund_phase_is(kube, ns, "full-back", "Succeeded")
    assert refund["status"]["amount"] == 1000
    [stripe_refund] = await _stripe_refunds(sandbox, intent_id)
    assert (stripe_refund["id"], stripe_refund["amount"]) == (refund["status"]["stripe"]["refundId"], 1000)
    assert stripe_refund["reason"] == "requested_by_customer"
    parent = await kube.wait_pi(ns, "full", lambda o: o["status"].get("phase") == "Refunded", what="Refunded")
    assert parent["status"]["amountRefunded"] == 1000
    await wait_for(lambda: _row(running, "SELECT 1 FROM payments WHERE order_id = '7001' AND status = 'refunded' "
                                         "AND amount_refunded = 1000"), what="payments row refunded")
    rows = await wait_for(lambda: _row(running, "SELECT status, amount, reason, provider_refund_id FROM refunds"),
                          what="refunds row")
    assert rows == [{"status": "succeeded", "amount": 1000, "reason": "requested_by_customer",
                     "provider_refund_id": stripe_refund["id"]}]
    [message] = await messages(sandbox.kafka, running.tenant.topics.refunded, "7001", 1)
    assert message.value["amount_refunded"] == "10.00"
    assert message.value["amount_refunded_minor"] == 1000
    assert message.value["provider_refund_id"] == stripe_refund["id"]
    assert message.value["refund_id"] == refund["status"]["refundId"]
    assert message.headers["ce_type"] == "io.kubepay.payment.refunded"


async def test_partial_refunds_add_up_to_refunded(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    pi = await pay(sandbox.stripe.client(), kube, running, "parts", {**SPEC, "orderId": "7002"})
    await create_refund(kube, ns, "part-1", {"paymentIntentName": "parts", "amount": 600})
    await refund_phase_is(kube, ns, "part-1", "Succeeded")
    parent = await kube.wait_pi(ns, "parts", lambda o: o["status"].get("amountRefunded") == 600, what="600 back")
    assert parent["status"]["phase"] == "PartiallyRefunded"
    await wait_for(lambda: _row(running, "SELECT 1 FROM payments WHERE order_id = '7002' "
                                         "AND status = 'partially_refunded'"), what="row partially refunded")

    await create_refund(kube, ns, "part-2", {"paymentIntentName": "parts", "amount": 400})
    await refund_phase_is(kube, ns, "part-2", "Succeeded")
    parent = await kube.wait_pi(ns, "parts", lambda o: o["status"].get("phase") == "Refunded", what="Refunded")
    assert parent["status"]["amountRefunded"] == 1000
    assert sorted(r["amount"] for r in await _stripe_refunds(
        sandbox, pi["status"]["stripe"]["paymentIntentId"])) == [400, 600]
    refunded = await messages(sandbox.kafka, running.tenant.topics.refunded, "7002", 2)
    assert sorted(m.value["amount_refunded_minor"] for m in refunded) == [400, 600]
    assert len({m.headers["ce_id"] for m in refunded}) == 2
    await wait_for(lambda: _row(running, "SELECT 1 FROM payments WHERE order_id = '7002' AND status = 'refunded'"),
                   what="row refunded")


async def test_over_refund_is_refused_by_admission_and_by_the_controller(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    pi = await pay(sandbox.stripe.client(), kube, running, "over", {**SPEC, "orderId": "7003"})
    too_much = {"apiVersion": "kubepay.io/v1alpha1", "kind": "PaymentRefund",
                "metadata": {"name": "too-much", "namespace": ns},
                "spec": {"paymentIntentName": "over", "amount": 1001}}
    answer = await admission_review(running, "validate-paymentrefund", "CREATE", too_much)
    assert answer["allowed"] is False
    assert "exceeds the 1000 still refundable" in answer["status"]["message"]

    # Admission can be bypassed (it is not in the way here): the controller refuses too, before Stripe.
    await create_refund(kube, ns, "too-much", too_much["spec"])
    refused = await refund_phase_is(kube, ns, "too-much", "Failed")
    assert refused["status"]["failure"]["code"] == "exceeds_refundable_amount"
    assert await _stripe_refunds(sandbox, pi["status"]["stripe"]["paymentIntentId"]) == []
    events = [e for e in await kube.events(ns) if e.involved_object.name == "too-much"]
    assert any(e.type == "Warning" and e.reason == "RefundRefused" for e in events)
    assert await _row(running, "SELECT * FROM refunds") == []

    fine = {**too_much, "metadata": {"name": "fine", "namespace": ns},
            "spec": {"paymentIntentName": "over", "amount": 1000}}
    assert (await admission_review(running, "validate-paymentrefund", "CREATE", fine))["allowed"] is True


async def test_refund_of_an_unpaid_payment_is_refused(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await kube.create_pi(ns, "unpaid", {**SPEC, "orderId": "7004"})
    await kube.phase_is(ns, "unpaid", "Pending")
    refund = {"apiVersion": "kubepay.io/v1alpha1", "kind": "PaymentRefund",
              "metadata": {"name": "early", "namespace": ns}, "spec": {"paymentIntentName": "unpaid"}}
    answer = await admission_review(running, "validate-paymentrefund", "CREATE", refund)
    assert answer["allowed"] is False
    assert "has not succeeded (phase Pending)" in answer["status"]["message"]
    await create_refund(kube, ns, "early", refund["spec"])
    refused = await refund_phase_is(kube, ns, "early", "Failed")
    assert refused["status"]["failure"]["code"] == "payment_not_succeeded"
    refunds = await sandbox.stripe.requests_log()
    assert not [r for r in refunds if r["path"] == "/v1/refunds" and "early" in str(r.get("idempotency_key"))]
