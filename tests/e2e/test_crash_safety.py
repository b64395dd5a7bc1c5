"""A controller killed between the Stripe create and the status write never makes a second intent."""

from __future__ import annotations

import pytest

from kubepay.model.identity import intent_idempotency_key
from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.helpers import Kube, intents_for, stripe_id, wait_for


@pytest.mark.needs_fake_stripe  # holds Stripe's answer, reads the request log
async def test_killed_after_stripe_create_restarts_without_a_second_intent(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await sandbox.stripe.hold("POST", "/v1/payment_intents")
    try:
        created = await kube.create_pi(ns, "crash", {"orderId": "5001", "amount": 500, "currency": "eur"})
        uid = created["metadata"]["uid"]
        await wait_for(lambda: intents_for(sandbox.stripe_client(), uid), what="the intent to exist in Stripe")
        await running.operator.kill()
    finally:
        await sandbox.stripe.release()
    pi = await kube.get_pi(ns, "crash")
    assert pi is not None
    assert not (pi.get("status") or {}).get("stripe"), "the status write must not have happened before the kill"

    await running.tenant.process("operator").start()
    pi = await kube.wait_pi(ns, "crash", lambda o: bool(o.get("status", {}).get("stripe")), what="Stripe id")
    intents = await intents_for(sandbox.stripe_client(), uid)
    assert [i["id"] for i in intents] == [pi["status"]["stripe"]["paymentIntentId"]]
    creates = [r for r in await sandbox.stripe.requests_log()
               if r["method"] == "POST" and r["path"] == "/v1/payment_intents"
               and r["idempotency_key"] == intent_idempotency_key(uid)]
    assert [r["replayed"] for r in creates] == [False, True]


async def test_a_promptly_restarted_controller_serves_new_resources(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    await running.operator.stop()
    await running.tenant.process("operator").start()
    created = await kube.create_pi(ns, "after-restart", {"orderId": "5002", "amount": 1000, "currency": "usd"})
    intent_id = await stripe_id(kube, ns, "after-restart")
    assert [i["id"] for i in await intents_for(sandbox.stripe_client(), created["metadata"]["uid"])] == [intent_id]
