"""Day-2 operations: manual capture, deletion policies, amount changes, adoption, drift repair, pause."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.helpers import (
    Kube,
    admission_review,
    confirm_and_notify,
    fetch,
    intents_for,
    messages,
    no_messages,
    pay,
    stays,
    stripe_id,
    wait_for,
)

SPEC = {"amount": 1000, "currency": "usd"}
MERGE = "application/merge-patch+json"


async def _patch(kube: Kube, ns: str, name: str, body: dict[str, Any]) -> None:
    await kube.custom.patch_namespaced_custom_object("kubepay.io", "v1alpha1", ns, "paymentintents", name, body,
                                                     _content_type=MERGE)


async def _intent(sandbox: Sandbox, intent_id: str) -> dict[str, Any]:
    result: dict[str, Any] = (await sandbox.stripe_client().v1.payment_intents.retrieve_async(intent_id)).to_dict()
    return result


async def _row_where(running: Running, order_id: str, **expected: Any) -> dict[str, Any] | None:
    """The order's payments row once its columns have the expected values."""
    row = await _row(running, order_id)
    return row if row and all(row[k] == v for k, v in expected.items()) else None


async def _row(running: Running, order_id: str) -> dict[str, Any] | None:
    rows = await fetch(running.tenant.database_url, "SELECT * FROM payments WHERE order_id = $1", order_id)
    return rows[0] if rows else None


async def _gone(kube: Kube, ns: str, name: str) -> bool:
    return await kube.get_pi(ns, name) is None


async def test_partial_manual_capture(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    pi = await pay(sandbox.stripe_client(), kube, running, "hold",
                   {**SPEC, "orderId": "8001", "captureMethod": "manual"}, phase="RequiresCapture")
    intent_id = pi["status"]["stripe"]["paymentIntentId"]
    assert pi["status"]["amountCapturable"] == 1000
    await _patch(kube, ns, "hold", {"spec": {"capture": True, "amountToCapture": 600}})

    pi = await kube.phase_is(ns, "hold", "Succeeded")
    assert pi["status"]["amountReceived"] == 600
    intent = await _intent(sandbox, intent_id)
    assert (intent["status"], intent["amount_received"]) == ("succeeded", 600)
    row = await wait_for(lambda: _row_where(running, "8001", status="succeeded", amount_received=600),
                         what="row succeeded")
    [succeeded] = await messages(sandbox.kafka, running.tenant.topics.succeeded, "8001", 1)
    assert succeeded.value["amount_minor"] == 1000
    assert row["amount"] == 1000
    await kube.wait_events(ns, "hold", {"SpecApplied"})


async def test_delete_with_cancel_cancels_in_stripe_and_keeps_the_row(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await kube.create_pi(ns, "drop", {**SPEC, "orderId": "8002", "deletionPolicy": "Cancel"})
    intent_id = await stripe_id(kube, ns, "drop")
    await wait_for(lambda: _row(running, "8002"), what="row")
    await kube.custom.delete_namespaced_custom_object("kubepay.io", "v1alpha1", ns, "paymentintents", "drop")
    await wait_for(lambda: _gone(kube, ns, "drop"), what="the resource to be deleted")

    assert (await _intent(sandbox, intent_id))["status"] == "canceled"
    row = await _row(running, "8002")
    assert row is not None
    assert row["status"] == "canceled"
    [canceled] = await messages(sandbox.kafka, running.tenant.topics.canceled, "8002", 1)
    assert canceled.value["provider_id"] == intent_id
    [order] = await messages(sandbox.kafka, running.tenant.topics.order_status, "8002", 1)
    assert order.value["status"] == "CANCELLED"


async def test_delete_with_orphan_leaves_stripe_alone(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await kube.create_pi(ns, "keep", {**SPEC, "orderId": "8003", "deletionPolicy": "Orphan"})
    intent_id = await stripe_id(kube, ns, "keep")
    await wait_for(lambda: _row(running, "8003"), what="row")
    await kube.custom.delete_namespaced_custom_object("kubepay.io", "v1alpha1", ns, "paymentintents", "keep")
    await wait_for(lambda: _gone(kube, ns, "keep"), what="the resource to be deleted")
    assert (await _intent(sandbox, intent_id))["status"] == "requires_payment_method"
    row = await _row(running, "8003")
    assert row is not None
    assert row["status"] == "pending"
    await messages(sandbox.kafka, running.tenant.topics.initiated, "8003", 1)
    await no_messages(sandbox.kafka, running.tenant.topics.canceled, "8003")


@pytest.mark.needs_fake_stripe  # no request at all about the intent: only the fake's log can tell
async def test_delete_of_a_succeeded_payment_does_not_touch_stripe(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    pi = await pay(sandbox.stripe_client(), kube, running, "paid", {**SPEC, "orderId": "8004"})
    intent_id = pi["status"]["stripe"]["paymentIntentId"]
    await wait_for(lambda: _row(running, "8004"), what="row")
    await sandbox.stripe.clear_requests_log()
    await kube.custom.delete_namespaced_custom_object("kubepay.io", "v1alpha1", ns, "paymentintents", "paid")
    await wait_for(lambda: _gone(kube, ns, "paid"), what="the resource to be deleted")
    assert not [r for r in await sandbox.stripe.requests_log() if intent_id in r["path"]]
    row = await _row(running, "8004")
    assert row is not None
    assert row["status"] == "succeeded"
    await messages(sandbox.kafka, running.tenant.topics.succeeded, "8004", 1)
    await no_messages(sandbox.kafka, running.tenant.topics.canceled, "8004")


async def test_amount_change_before_and_after_confirmation(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await kube.create_pi(ns, "grow", {**SPEC, "orderId": "8005"})
    intent_id = await stripe_id(kube, ns, "grow")
    await _patch(kube, ns, "grow", {"spec": {"amount": 1500}})
    pi = await kube.wait_pi(ns, "grow", lambda o: o["status"].get("observedGeneration") == 2, what="generation 2")
    assert (await _intent(sandbox, intent_id))["amount"] == 1500
    synced = {c["type"]: c for c in pi["status"]["conditions"]}["Synced"]
    assert synced["status"] == "True"
    await wait_for(lambda: _row_where(running, "8005", amount=1500), what="row amount 1500")

    await confirm_and_notify(sandbox.stripe_client(), intent_id, "pm_card_visa", running.tenant.webhook_url,
                             running.tenant.webhook_secret)
    paid = await kube.phase_is(ns, "grow", "Succeeded")
    changed = {**paid, "spec": {**paid["spec"], "amount": 2000}}
    answer = await admission_review(running, "validate-paymentintent", "UPDATE", changed, old=paid)
    assert answer["allowed"] is False
    assert "spec.amount can no longer change: the Stripe payment is succeeded" in answer["status"]["message"]

    await _patch(kube, ns, "grow", {"spec": {"amount": 2000}})  # admission bypassed
    pi = await kube.wait_pi(ns, "grow", lambda o: o["status"].get("observedGeneration") == 3, what="generation 3")
    synced = {c["type"]: c for c in pi["status"]["conditions"]}["Synced"]
    assert (synced["status"], synced["reason"]) == ("False", "AmountLocked")
    assert "succeeded" in synced["message"]
    assert (await _intent(sandbox, intent_id))["amount"] == 1500
    row = await _row(running, "8005")
    assert row is not None
    assert (row["amount"], row["status"]) == (1500, "succeeded")
    [succeeded] = await messages(sandbox.kafka, running.tenant.topics.succeeded, "8005", 1)
    assert succeeded.value["amount_minor"] == 1500


async def test_adoption_of_an_existing_intent_and_refusal_on_mismatch(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    stripe_client = sandbox.stripe_client()
    outside = (await stripe_client.v1.payment_intents.create_async(
        {"amount": 800, "currency": "usd", "metadata": {"origin": "legacy"}})).to_dict()
    created = await kube.create_pi(ns, "adopted", {"orderId": "8006", "amount": 800, "currency": "usd",
                                                   "stripePaymentIntentId": outside["id"]})
    pi = await kube.phase_is(ns, "adopted", "Pending")
    assert pi["status"]["stripe"]["paymentIntentId"] == outside["id"]
    metadata = (await _intent(sandbox, outside["id"]))["metadata"]
    assert metadata["kubepay_uid"] == created["metadata"]["uid"]
    assert metadata["origin"] == "legacy"
    # No intent of its own: the only one naming this resource is the adopted one.
    assert [i["id"] for i in await intents_for(stripe_client, created["metadata"]["uid"])] == [outside["id"]]
    await confirm_and_notify(stripe_client, outside["id"], "pm_card_visa", running.tenant.webhook_url,
                             running.tenant.webhook_secret)
    await kube.phase_is(ns, "adopted", "Succeeded")
    [succeeded] = await messages(sandbox.kafka, running.tenant.topics.succeeded, "8006", 1)
    assert succeeded.value["provider_id"] == outside["id"]
    row = await wait_for(lambda: _row_where(running, "8006", status="succeeded"), what="row succeeded")
    assert row["provider_payment_id"] == outside["id"]

    other = (await stripe_client.v1.payment_intents.create_async({"amount": 900, "currency": "usd"})).to_dict()
    await kube.create_pi(ns, "mismatch", {"orderId": "8007", "amount": 800, "currency": "usd",
                                          "stripePaymentIntentId": other["id"]})
    refused = await kube.wait_pi(ns, "mismatch", lambda o: any(
        c["type"] == "Synced" and c["reason"] == "AdoptionRefused" for c in o.get("status", {}).get("conditions", [])),
        what="AdoptionRefused")
    assert "phase" not in refused["status"]
    message = {c["type"]: c for c in refused["status"]["conditions"]}["Synced"]["message"]
    assert "900 usd" in message and "800 usd" in message
    assert "kubepay_uid" not in (await _intent(sandbox, other["id"]))["metadata"]
    assert await _row(running, "8007") is None
    await no_messages(sandbox.kafka, running.tenant.topics.initiated, "8007")
    await kube.wait_events(ns, "mismatch", {"AdoptionRefused"}, type_="Warning")


@pytest.mark.operator_env(KUBEPAY_RESYNC_SECONDS="2")
async def test_lost_webhook_is_repaired_by_the_resync(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await kube.create_pi(ns, "quiet", {**SPEC, "orderId": "8008"})
    intent_id = await stripe_id(kube, ns, "quiet")
    await sandbox.stripe_client().v1.payment_intents.confirm_async(
        intent_id, {"payment_method": "pm_card_visa", "return_url": "https://shop.example/return"})
    # No webhook is delivered: only the resync can notice.
    pi = await kube.phase_is(ns, "quiet", "Succeeded", timeout=15)
    assert pi["status"]["stripe"].get("lastEventId") is None
    [succeeded] = await messages(sandbox.kafka, running.tenant.topics.succeeded, "8008", 1)
    assert succeeded.value["provider_id"] == intent_id
    await wait_for(lambda: _row_where(running, "8008", status="succeeded"), what="row succeeded")


async def test_events_missed_while_down_are_backfilled_at_start(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await kube.create_pi(ns, "missed", {**SPEC, "orderId": "8009"})
    intent_id = await stripe_id(kube, ns, "missed")
    await running.operator.stop()
    await sandbox.stripe_client().v1.payment_intents.confirm_async(
        intent_id, {"payment_method": "pm_card_visa", "return_url": "https://shop.example/return"})
    await running.tenant.process("operator").start()
    await kube.phase_is(ns, "missed", "Succeeded")
    ledger = await wait_for(lambda: fetch(
        running.tenant.database_url, "SELECT type, outcome FROM payment_events WHERE provider_payment_id = $1 "
        "AND type = 'payment_intent.succeeded'", intent_id), what="the backfilled event in the ledger")
    assert ledger[0]["outcome"] in ("applied", "stale")
    await messages(sandbox.kafka, running.tenant.topics.succeeded, "8009", 1)


async def test_pause_and_resume(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await kube.create_pi(ns, "frozen", {**SPEC, "orderId": "8010"})
    intent_id = await stripe_id(kube, ns, "frozen")
    await _patch(kube, ns, "frozen", {"metadata": {"annotations": {"kubepay.io/paused": "true"}}})
    await kube.wait_pi(ns, "frozen", lambda o: o["status"].get("paused") is True, what="paused")
    await _patch(kube, ns, "frozen", {"spec": {"amount": 1300}})
    await kube.wait_events(ns, "frozen", {"Paused"})

    async def untouched() -> bool:
        pi = await kube.get_pi(ns, "frozen")
        return bool(pi and pi["status"]["observedGeneration"] == 1
                    and (await _intent(sandbox, intent_id))["amount"] == 1000)
    await stays(untouched, 2.0, "the paused payment staying untouched")

    await _patch(kube, ns, "frozen", {"metadata": {"annotations": {"kubepay.io/paused": None}}})
    await kube.wait_pi(ns, "frozen", lambda o: o["status"].get("observedGeneration") == 2, what="caught up")
    assert (await _intent(sandbox, intent_id))["amount"] == 1300
    pi = await kube.get_pi(ns, "frozen")
    assert pi is not None
    assert "paused" not in pi["status"]
    await kube.wait_events(ns, "frozen", {"Resumed"})
    await wait_for(lambda: _row_where(running, "8010", amount=1300), what="row amount 1300 after resuming")
    [initiated] = await messages(sandbox.kafka, running.tenant.topics.initiated, "8010", 1)
    assert initiated.value["provider_id"] == intent_id


async def test_resume_reads_stripe_and_repairs_status(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await kube.create_pi(ns, "paid-while-paused", {**SPEC, "orderId": "8012"})
    intent_id = await stripe_id(kube, ns, "paid-while-paused")
    await _patch(kube, ns, "paid-while-paused", {"metadata": {"annotations": {"kubepay.io/paused": "true"}}})
    await kube.wait_pi(ns, "paid-while-paused", lambda o: o["status"].get("paused") is True, what="paused")
    # The customer pays while kubepay is paused, and the webhook never arrives.
    await sandbox.stripe_client().v1.payment_intents.confirm_async(
        intent_id, {"payment_method": "pm_card_visa", "return_url": "https://shop.example/return"})
    assert (await _intent(sandbox, intent_id))["status"] == "succeeded"
    await _patch(kube, ns, "paid-while-paused", {"metadata": {"annotations": {"kubepay.io/paused": None}}})
    await kube.phase_is(ns, "paid-while-paused", "Succeeded")
    await wait_for(lambda: _row_where(running, "8012", status="succeeded"), what="row succeeded after resuming")


async def test_stripe_payment_intent_id_is_immutable(running: Running, kube: Kube) -> None:
    ns = running.namespace
    await kube.create_pi(ns, "fixed-id", {**SPEC, "orderId": "8011", "stripePaymentIntentId": "pi_missing"})
    try:
        await _patch(kube, ns, "fixed-id", {"spec": {"stripePaymentIntentId": "pi_other"}})
    except ApiException as exc:
        assert exc.status == 422
        assert "stripePaymentIntentId is immutable" in exc.body
    else:
        raise AssertionError("changing stripePaymentIntentId was accepted")
