"""Stripe's answers decide: a refused spec fails the payment once; outages and 429s are retried."""

from __future__ import annotations

import pytest

from kubepay.model.identity import intent_idempotency_key
from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.helpers import Kube, messages


@pytest.mark.needs_fake_stripe  # injects 500s and a 429
async def test_unavailable_and_rate_limited_stripe_is_retried_until_created(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    # Three failures outlast the SDK's own two retries, so the controller's backoff has to act too.
    await sandbox.stripe.fail("POST", "/v1/payment_intents", 500, count=3)
    await sandbox.stripe.fail("POST", "/v1/payment_intents", 429, count=1)
    try:
        await kube.create_pi(ns, "flaky", {"orderId": "6001", "amount": 700, "currency": "usd"})
        pi = await kube.wait_pi(ns, "flaky", lambda o: bool(o.get("status", {}).get("stripe")),
                                timeout=40, what="the intent after retries")
    finally:
        await sandbox.stripe.clear_faults()
    assert pi["status"]["phase"] == "Pending"
    intents = (await sandbox.stripe_client().v1.payment_intents.list_async({"limit": 100})).data
    assert [i.id for i in intents if i.to_dict()["metadata"].get("kubepay_uid") == pi["metadata"]["uid"]] == [
        pi["status"]["stripe"]["paymentIntentId"]]
    await kube.wait_events(ns, "flaky", {"Retrying", "StripeIntentCreated"})


@pytest.mark.needs_fake_stripe  # counts the attempts in the request log
async def test_spec_stripe_refuses_fails_without_endless_retries(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    created = await kube.create_pi(ns, "odd-currency", {"orderId": "6002", "amount": 700, "currency": "xyz"})
    pi = await kube.phase_is(ns, "odd-currency", "Failed")
    failure = pi["status"]["failure"]
    assert "currency" in failure["message"].lower()
    synced = {c["type"]: c for c in pi["status"]["conditions"]}["Synced"]
    assert (synced["status"], synced["reason"]) == ("False", "StripeRejected")
    await kube.wait_events(ns, "odd-currency", {"StripeRejected"}, type_="Warning")
    [order] = await messages(sandbox.kafka, running.tenant.topics.order_status, "6002", 1)
    assert order.value["status"] == "CANCELLED"
    key = intent_idempotency_key(created["metadata"]["uid"])
    attempts = [r for r in await sandbox.stripe.requests_log() if r["idempotency_key"] == key]
    assert [r["status"] for r in attempts] == [400]
