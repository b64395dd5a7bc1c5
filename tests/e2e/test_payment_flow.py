"""A PaymentIntent resource becomes one Stripe intent, a payments row and Kafka events, end to end."""

from __future__ import annotations

import base64
import json
from typing import Any

from kubepay.sandbox.stack import Sandbox
from kubepay.sandbox.stripe_fake import TEST_CARDS
from tests.conftest import Running
from tests.helpers import Kube, deliver, messages, payment_row, stripe_event, wait_for

SPEC = {"orderId": "1111", "userId": "user-42", "amount": 1200, "currency": "usd",
        "description": "Order 1111", "metadata": {"channel": "web"}}


async def _intents_for(sandbox: Sandbox, uid: str) -> list[dict[str, Any]]:
    listing = await sandbox.stripe.client().v1.payment_intents.list_async({"limit": 100})
    intents = [i.to_dict() for i in listing.data]
    return [i for i in intents if (i.get("metadata") or {}).get("kubepay_uid") == uid]


async def _created(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return await kube.wait_pi(namespace, name, lambda o: bool(o.get("status", {}).get("stripe", {})
                                                              .get("paymentIntentId")), what="a Stripe id")


async def _pay(sandbox: Sandbox, running: Running, intent_id: str, payment_method: str,
               expect_error: bool = False) -> dict[str, Any]:
    stripe_client = sandbox.stripe.client()
    try:
        await stripe_client.v1.payment_intents.confirm_async(
            intent_id, {"payment_method": payment_method, "return_url": "https://shop.example/return"})
    except Exception:
        if not expect_error:
            raise
    intent = (await stripe_client.v1.payment_intents.retrieve_async(intent_id)).to_dict()
    event_type = "payment_intent.succeeded" if intent["status"] == "succeeded" else "payment_intent.payment_failed"
    status, _ = await deliver(running.tenant.webhook_url, stripe_event(event_type, intent),
                              running.tenant.webhook_secret)
    assert status == 200
    return intent


async def test_paid_payment_flows_to_stripe_postgres_and_kafka(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, topics = running.namespace, running.tenant.topics
    created = await kube.create_pi(ns, "order-1111", SPEC)
    uid = created["metadata"]["uid"]

    pi = await _created(kube, ns, "order-1111")
    status = pi["status"]
    assert status["phase"] == "Pending"
    intents = await _intents_for(sandbox, uid)
    assert len(intents) == 1
    intent = intents[0]
    assert intent["id"] == status["stripe"]["paymentIntentId"]
    assert (intent["amount"], intent["currency"]) == (1200, "usd")
    assert intent["metadata"] == {"channel": "web", "kubepay_namespace": ns, "kubepay_name": "order-1111",
                                  "kubepay_uid": uid, "order_id": "1111", "user_id": "user-42"}

    # The client secret lives in the owned Secret, never in status.
    ref = status["clientSecretRef"]
    secret = await kube.core.read_namespaced_secret(ref["name"], ns)
    client_secret = base64.b64decode(secret.data[ref["key"]]).decode()
    assert client_secret == intent["client_secret"]
    assert secret.metadata.owner_references[0].uid == uid
    assert client_secret not in json.dumps(status)
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Ready": "False", "Synced": "True"}

    row = await wait_for(lambda: payment_row(running.tenant.database_url, uid), what="payments row")
    assert (row["status"], row["amount"], row["currency"], row["order_id"]) == ("pending", 1200, "usd", "1111")
    assert str(row["id"]) == status["paymentId"]
    [initiated] = await messages(sandbox.kafka, topics.initiated, "1111", 1)
    assert initiated.value["payment_id"] == status["paymentId"]
    assert (initiated.value["amount"], initiated.value["amount_minor"]) == ("12.00", 1200)

    await _pay(sandbox, running, intent["id"], TEST_CARDS["success"])

    pi = await kube.phase_is(ns, "order-1111", "Succeeded")
    assert pi["status"]["amountReceived"] == 1200
    assert {c["type"]: c["status"] for c in pi["status"]["conditions"]}["Ready"] == "True"
    row = await wait_for(lambda: _row_with_status(running, uid, "succeeded"), what="row succeeded")
    assert row["provider_payment_id"] == intent["id"]
    [succeeded] = await messages(sandbox.kafka, topics.succeeded, "1111", 1)
    assert succeeded.value == {
        "payment_id": status["paymentId"], "order_id": "1111", "user_id": "user-42", "amount": "12.00",
        "amount_minor": 1200, "currency": "USD", "payment_method": succeeded.value["payment_method"],
        "provider": "stripe", "provider_id": intent["id"], "status": "succeeded"}
    assert succeeded.headers["ce_specversion"] == "1.0"
    assert succeeded.headers["ce_type"] == "io.kubepay.payment.succeeded"
    assert succeeded.headers["ce_source"].endswith(f"/namespaces/{ns}/paymentintents/order-1111")
    [order] = await messages(sandbox.kafka, topics.order_status, "1111", 1)
    assert order.value["status"] == "COMPLETED"
    assert order.value["event_type"] == "OrderStatusUpdated"

    reasons = [e.reason for e in await kube.events(ns) if e.involved_object.name == "order-1111"]
    assert "StripeIntentCreated" in reasons
    assert "Succeeded" in reasons
    for process in (running.operator, running.webhook):
        assert client_secret not in process.logs()
        assert running.tenant.webhook_secret not in process.logs()
        assert sandbox.stripe.api_key not in process.logs()

    # A restarted controller with the watermark erased republishes with the same ce_id.
    await running.operator.stop()
    await kube.custom.patch_namespaced_custom_object_status(
        "kubepay.io", "v1alpha1", ns, "paymentintents", "order-1111", {"status": {"published": None}},
        _content_type="application/merge-patch+json")
    await running.tenant.process("operator").start()
    replayed = await messages(sandbox.kafka, topics.succeeded, "1111", 2)
    assert replayed[1].headers["ce_id"] == succeeded.headers["ce_id"]
    assert len(await _intents_for(sandbox, uid)) == 1


async def _row_with_status(running: Running, uid: str, status: str) -> dict[str, Any] | None:
    row = await payment_row(running.tenant.database_url, uid)
    return row if row and row["status"] == status else None


async def test_declined_card_fails_the_payment_and_cancels_the_order(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, topics = running.namespace, running.tenant.topics
    created = await kube.create_pi(ns, "order-2222", {**SPEC, "orderId": "2222"})
    pi = await _created(kube, ns, "order-2222")
    await _pay(sandbox, running, pi["status"]["stripe"]["paymentIntentId"], TEST_CARDS["decline"],
               expect_error=True)

    pi = await kube.phase_is(ns, "order-2222", "Failed")
    assert pi["status"]["failure"]["code"] == "card_declined"
    row = await wait_for(lambda: _row_with_status(running, created["metadata"]["uid"], "failed"),
                         what="row failed")
    assert row["failure_code"]
    [failed] = await messages(sandbox.kafka, topics.failed, "2222", 1)
    assert failed.value["code"] and failed.value["reason"]
    [order] = await messages(sandbox.kafka, topics.order_status, "2222", 1)
    assert order.value["status"] == "CANCELLED"
    events = await kube.events(ns)
    assert any(e.reason == "Failed" and e.type == "Warning" for e in events)
