"""A PaymentIntent resource becomes one Stripe intent, a payments row and Kafka events, end to end."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from kubepay_sandbox.stack import Sandbox
from kubepay_sandbox.stripe_fake import TEST_CARDS
from tests.conftest import Running
from tests.helpers import Kube, confirm_and_notify, intents_for, messages, payment_row, stripe_id, wait_for

SPEC = {"orderId": "1111", "userId": "user-42", "amount": 1200, "currency": "usd",
        "description": "Order 1111", "metadata": {"channel": "web"}}


async def test_paid_payment_flows_to_stripe_postgres_and_kafka(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, topics = running.namespace, running.tenant.topics
    created = await kube.create_pi(ns, "order-1111", SPEC)
    uid = created["metadata"]["uid"]

    await stripe_id(kube, ns, "order-1111")
    pi = await kube.get_pi(ns, "order-1111")
    assert pi is not None
    status = pi["status"]
    assert status["phase"] == "Pending"
    intents = await intents_for(sandbox.stripe_client(), uid)
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
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Failed": "False", "Ready": "False",
                                                                       "Synced": "True"}

    row = await wait_for(lambda: payment_row(running.tenant.database_url, uid), what="payments row")
    assert (row["status"], row["amount"], row["currency"], row["order_id"]) == ("pending", 1200, "usd", "1111")
    assert str(row["id"]) == status["paymentId"]
    [initiated] = await messages(sandbox.kafka, topics.initiated, "1111", 1)
    assert initiated.value["payment_id"] == status["paymentId"]
    assert (initiated.value["amount"], initiated.value["amount_minor"]) == ("12.00", 1200)

    await confirm_and_notify(sandbox.stripe_client(), intent["id"], TEST_CARDS["success"],
                             running.tenant.webhook_url, running.tenant.webhook_secret)

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

    events = await kube.wait_events(ns, "order-1111", {"StripeIntentCreated", "Succeeded"})
    for event in events:  # as `kubectl describe` shows them: From kubepay-controller, a sentence each
        assert (event.reporting_component, event.source.component) == ("kubepay-controller", "kubepay-controller")
        assert re.fullmatch(r"[A-Z].*[.!?]", event.message), event.message
    assert re.fullmatch(r"The phase (changed from Pending to|is) Succeeded \(Stripe: succeeded\)\.",
                        {e.reason: e.message for e in events}["Succeeded"])
    for process in (running.operator, running.webhook):
        assert client_secret not in process.logs()
        assert running.tenant.webhook_secret not in process.logs()
        assert sandbox.stripe_key not in process.logs()

    # A restarted controller with the watermark erased republishes with the same ce_id.
    await running.operator.stop()
    await kube.custom.patch_namespaced_custom_object_status(
        "kubepay.io", "v1alpha1", ns, "paymentintents", "order-1111", {"status": {"published": None}},
        _content_type="application/merge-patch+json")
    await running.tenant.process("operator").start()
    replayed = await messages(sandbox.kafka, topics.succeeded, "1111", 2)
    assert replayed[1].headers["ce_id"] == succeeded.headers["ce_id"]
    assert len(await intents_for(sandbox.stripe_client(), uid)) == 1


async def _row_with_status(running: Running, uid: str, status: str) -> dict[str, Any] | None:
    row = await payment_row(running.tenant.database_url, uid)
    return row if row and row["status"] == status else None


async def test_declined_card_fails_the_payment_and_cancels_the_order(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, topics = running.namespace, running.tenant.topics
    created = await kube.create_pi(ns, "order-2222", {**SPEC, "orderId": "2222"})
    intent_id = await stripe_id(kube, ns, "order-2222")
    await confirm_and_notify(sandbox.stripe_client(), intent_id, TEST_CARDS["decline"],
                             running.tenant.webhook_url, running.tenant.webhook_secret, expect_error=True)

    pi = await kube.phase_is(ns, "order-2222", "Failed")
    assert pi["status"]["failure"]["code"] == "card_declined"
    # Declined, but the customer may pay again with another card: not Failed for good.
    failed = {c["type"]: c for c in pi["status"]["conditions"]}["Failed"]
    assert (failed["status"], failed["reason"]) == ("False", "Retryable")
    row = await wait_for(lambda: _row_with_status(running, created["metadata"]["uid"], "failed"),
                         what="row failed")
    assert row["failure_code"]
    [failed] = await messages(sandbox.kafka, topics.failed, "2222", 1)
    assert failed.value["code"] and failed.value["reason"]
    [order] = await messages(sandbox.kafka, topics.order_status, "2222", 1)
    assert order.value["status"] == "CANCELLED"
    [declined] = await kube.wait_events(ns, "order-2222", {"Failed"}, type_="Warning")
    assert re.fullmatch(r"The phase (changed from Pending to|is) Failed \(Stripe: requires_payment_method\)\. "
                        r"Your card was declined\.", declined.message), declined.message
