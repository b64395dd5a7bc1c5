"""Refunds: full, partial, partials summing to the total, and what must never reach Stripe."""

from __future__ import annotations

import time
from typing import Any

from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.helpers import (
    Kube,
    admission_review,
    create_refund,
    deliver,
    fetch,
    messages,
    pay,
    refund_phase_is,
    stripe_event,
    wait_for,
)

SPEC = {"amount": 1000, "currency": "usd", "userId": "u-7"}


async def _stripe_refunds(sandbox: Sandbox, intent_id: str) -> list[dict[str, Any]]:
    listing = await sandbox.stripe_client().v1.refunds.list_async({"payment_intent": intent_id, "limit": 100})
    return [r.to_dict() for r in listing.data]


async def _row(running: Running, query: str, *args: Any) -> list[dict[str, Any]]:
    return await fetch(running.tenant.database_url, query, *args)


async def test_full_refund(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    pi = await pay(sandbox.stripe_client(), kube, running, "full", {**SPEC, "orderId": "7001"})
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
    pi = await pay(sandbox.stripe_client(), kube, running, "parts", {**SPEC, "orderId": "7002"})
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
    pi = await pay(sandbox.stripe_client(), kube, running, "over", {**SPEC, "orderId": "7003"})
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
    await kube.wait_events(ns, "too-much", {"RefundRefused"}, type_="Warning")
    assert await _row(running, "SELECT * FROM refunds") == []

    fine = {**too_much, "metadata": {"name": "fine", "namespace": ns},
            "spec": {"paymentIntentName": "over", "amount": 1000}}
    assert (await admission_review(running, "validate-paymentrefund", "CREATE", fine))["allowed"] is True


async def test_refund_of_an_unpaid_payment_is_refused(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await kube.create_pi(ns, "unpaid", {**SPEC, "orderId": "7004"})
    unpaid = await kube.phase_is(ns, "unpaid", "Pending")
    refund = {"apiVersion": "kubepay.io/v1alpha1", "kind": "PaymentRefund",
              "metadata": {"name": "early", "namespace": ns}, "spec": {"paymentIntentName": "unpaid"}}
    answer = await admission_review(running, "validate-paymentrefund", "CREATE", refund)
    assert answer["allowed"] is False
    assert "has not succeeded (phase Pending)" in answer["status"]["message"]
    await create_refund(kube, ns, "early", refund["spec"])
    refused = await refund_phase_is(kube, ns, "early", "Failed")
    assert refused["status"]["failure"]["code"] == "payment_not_succeeded"
    intent_id = unpaid["status"]["stripe"]["paymentIntentId"]
    listing = await sandbox.stripe_client().v1.refunds.list_async({"limit": 100})
    assert [r.id for r in listing.data if r.payment_intent == intent_id] == []


async def test_refund_made_in_the_dashboard_arrives_as_charge_refunded(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    pi = await pay(sandbox.stripe_client(), kube, running, "dash", {**SPEC, "orderId": "7005"})
    intent_id = pi["status"]["stripe"]["paymentIntentId"]
    stripe_client = sandbox.stripe_client()
    await stripe_client.v1.refunds.create_async({"payment_intent": intent_id, "amount": 250})
    intent = (await stripe_client.v1.payment_intents.retrieve_async(
        intent_id, {"expand": ["latest_charge"]})).to_dict()
    charge = intent["latest_charge"]
    assert charge["amount_refunded"] == 250
    status, body = await deliver(running.tenant.webhook_url,
                                 stripe_event("charge.refunded", charge, created=int(time.time()) + 1),
                                 running.tenant.webhook_secret)
    assert (status, body["outcome"]) == (200, "applied")
    parent = await kube.wait_pi(ns, "dash", lambda o: o["status"].get("amountRefunded") == 250, what="250 back")
    assert parent["status"]["phase"] == "PartiallyRefunded"
    await wait_for(lambda: _row(running, "SELECT 1 FROM payments WHERE order_id = '7005' "
                                         "AND status = 'partially_refunded' AND amount_refunded = 250"),
                   what="row partially refunded")


async def test_refund_failing_after_success_is_reported(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await pay(sandbox.stripe_client(), kube, running, "late", {**SPEC, "orderId": "7006"})
    await create_refund(kube, ns, "late-back", {"paymentIntentName": "late", "amount": 300})
    refund = await refund_phase_is(kube, ns, "late-back", "Succeeded")
    stripe_refund = (await sandbox.stripe_client().v1.refunds.retrieve_async(
        refund["status"]["stripe"]["refundId"])).to_dict()
    failed = {**stripe_refund, "status": "failed", "failure_reason": "expired_or_canceled_card"}
    url, secret = running.tenant.webhook_url, running.tenant.webhook_secret
    older = stripe_event("refund.updated", {**stripe_refund, "status": "pending"}, created=int(time.time()) - 60)
    assert (await deliver(url, older, secret))[1]["outcome"] == "stale"
    event = stripe_event("refund.failed", failed, created=int(time.time()) + 5)
    assert (await deliver(url, event, secret))[1]["outcome"] == "applied"
    refund = await refund_phase_is(kube, ns, "late-back", "Failed")
    assert refund["status"]["failure"]["message"] == "expired_or_canceled_card"
    assert refund["status"]["stripe"]["lastEventId"] == event["id"]
    await wait_for(lambda: _row(running, "SELECT 1 FROM refunds WHERE status = 'failed' "
                                         "AND failure_reason = 'expired_or_canceled_card'"), what="refund row failed")
    await kube.wait_events(ns, "late-back", {"RefundFailed"}, type_="Warning")
