"""The PaymentIntent handlers as plain async functions: creation exactly once, refusals, retries, deletion."""

from __future__ import annotations

from typing import Any

import pytest

from kubepay.controller import payment_intents, refusals
from kubepay.controller.handling import FINALIZER
from kubepay.controller.outcomes import GiveUp, Retry
from kubepay.controller.reconcile import LoopState
from kubepay.kube.client import Invalid, KubeUnavailable
from kubepay.kube.watch import Seen
from kubepay.model.resources import PAYMENT_INTENTS, PaymentIntent
from kubepay.stripe.gateway import StripeRejected, StripeUnavailable
from tests.unit.fakes import World, changed, controller, create, k8s_events

SPEC = {"orderId": "1111", "amount": 1200, "currency": "usd"}


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


async def _create(world: World, body: dict[str, Any], retry: int = 0) -> None:
    await create(world, body, retry)


async def test_creates_the_stripe_intent_once_and_records_it() -> None:
    world = World()
    body = world.kube.add(PAYMENT_INTENTS, SPEC)
    with k8s_events() as posted:
        await _create(world, body)
        await _create(world, world.kube.body(PAYMENT_INTENTS))  # a resume after a restart
    status = world.kube.status(PAYMENT_INTENTS)
    assert world.stripe.calls == ["create_intent"]
    assert status["stripe"]["paymentIntentId"] == "pi_1"
    assert status["phase"] == "Pending"
    assert _condition(status, "Synced")["status"] == "True"
    name, key = status["clientSecretRef"]["name"], status["clientSecretRef"]["key"]
    assert world.kube.secrets[("shop", name)][key] == "pi_1_secret_x"
    assert "pi_1_secret_x" not in str(status)
    assert posted.reasons() == ["StripeIntentCreated"]
    assert world.stripe.intents["pi_1"]["metadata"]["kubepay_uid"] == body["metadata"]["uid"]


async def test_a_crash_between_stripe_and_status_never_makes_a_second_intent() -> None:
    world = World()
    body = world.kube.add(PAYMENT_INTENTS, SPEC)
    world.kube.fail_next("apply_secret", KubeUnavailable("Kubernetes API answered 503"))
    with k8s_events() as posted:
        with pytest.raises(Retry) as retried:
            await _create(world, body, retry=2)
        assert retried.value.delay is not None and 3.0 <= retried.value.delay <= 5.0  # backoff(2): 4 s, jittered
        assert "Retrying" in posted.reasons()
        await _create(world, world.kube.body(PAYMENT_INTENTS), retry=3)
    assert list(world.stripe.intents) == ["pi_1"]  # the same idempotency key: Stripe answered the same intent
    assert world.kube.status(PAYMENT_INTENTS)["stripe"]["paymentIntentId"] == "pi_1"


async def test_a_stripe_outage_is_retried_with_backoff() -> None:
    world = World()
    body = world.kube.add(PAYMENT_INTENTS, SPEC)
    world.stripe.fail_next("create_intent", StripeUnavailable("Stripe unavailable: APIConnectionError", 5.0))
    with k8s_events(), pytest.raises(Retry):
        await _create(world, body)
    assert world.kube.status(PAYMENT_INTENTS) == {}


async def test_a_spec_stripe_would_refuse_fails_for_good_without_calling_stripe() -> None:
    world = World()
    body = world.kube.add(PAYMENT_INTENTS, {"orderId": "1", "amount": 1235, "currency": "kwd"})
    with k8s_events() as posted, pytest.raises(GiveUp):
        await _create(world, body)
    status = world.kube.status(PAYMENT_INTENTS)
    assert world.stripe.calls == []
    assert status["phase"] == "Failed"
    assert status["failure"]["code"] == "spec_invalid"
    assert "spec.amount" in status["failure"]["message"]
    assert _condition(status, "Failed")["status"] == "True"
    assert posted.reasons() == ["SpecInvalid"]


async def test_stripe_refusing_the_intent_fails_it_with_stripes_reason() -> None:
    world = World()
    body = world.kube.add(PAYMENT_INTENTS, SPEC)
    world.stripe.fail_next("create_intent", StripeRejected("amount_too_small", "Amount must be at least 50 cents"))
    with k8s_events() as posted, pytest.raises(GiveUp):
        await _create(world, body)
    status = world.kube.status(PAYMENT_INTENTS)
    assert status["phase"] == "Failed"
    assert status["failure"] == {"code": "amount_too_small", "message": "Amount must be at least 50 cents"}
    assert _condition(status, "Synced")["reason"] == "StripeRejected"
    assert posted.reasons() == ["StripeRejected"]


async def test_a_write_the_api_server_refuses_ends_in_synced_false_not_a_retry_loop() -> None:
    world = World()
    body = world.kube.add(PAYMENT_INTENTS, SPEC)
    world.kube.fail_next("apply_secret", Invalid('Secret "x" is invalid: metadata.labels: Invalid value'))
    with k8s_events() as posted, pytest.raises(GiveUp):
        await _create(world, body)
    synced = _condition(world.kube.status(PAYMENT_INTENTS), "Synced")
    assert (synced["status"], synced["reason"]) == ("False", "Invalid")
    assert "metadata.labels" in synced["message"]
    assert posted.reasons() == ["Invalid"]


async def test_a_paused_payment_is_not_sent_to_stripe() -> None:
    world = World()
    body = world.kube.add(PAYMENT_INTENTS, SPEC, annotations={"kubepay.io/paused": "true"})
    with k8s_events(), pytest.raises(Retry):
        await _create(world, body)
    assert world.stripe.calls == []


async def _finalize(world: World, retry: int = 0) -> None:
    body = world.kube.body(PAYMENT_INTENTS)
    await refusals.guarded(payment_intents.finalize(world.runtime, body, PaymentIntent.parse(body), retry,
                                                    LoopState(phase=None, resync=None)),
                           world.runtime.kube, PAYMENT_INTENTS, body, retry)


def _delete(world: World) -> None:
    """`kubectl delete`: the API server marks the object; it goes once its finalizers are removed."""
    world.kube.objects[(PAYMENT_INTENTS, "shop", "order-1")]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"


async def test_deletion_cancels_a_cancelable_intent_mirrors_it_and_releases_the_finalizer() -> None:
    world = World()
    ctrl = controller(world)
    with k8s_events() as posted:
        await changed(ctrl, world.kube.add(PAYMENT_INTENTS, SPEC), Seen.ADDED)  # finalizer, then the Stripe intent
        await changed(ctrl, world.kube.body(PAYMENT_INTENTS))
        assert world.kube.body(PAYMENT_INTENTS)["metadata"]["finalizers"] == [FINALIZER]
        _delete(world)
        marked = world.kube.body(PAYMENT_INTENTS)
        await changed(ctrl, marked)
        # A watch event of the deleting payment from before the finalizer went: nothing is published twice.
        marked["status"] = {**marked["status"], "phase": "Canceled"}
        await changed(ctrl, marked)
    assert world.kube.objects == {}
    assert world.stripe.intents["pi_1"]["status"] == "canceled"
    assert [row.status for row in world.store.rows.payments.values()] == ["canceled"]
    assert world.publisher.topics() == ["payments.initiated", "payments.canceled", "orders.status"]
    assert [event.message for event in posted.all][-1] == "Canceled Stripe PaymentIntent pi_1."


async def test_deletion_with_orphan_policy_leaves_stripe_alone() -> None:
    world = World()
    with k8s_events() as posted:
        await _create(world, world.kube.add(PAYMENT_INTENTS, {**SPEC, "deletionPolicy": "Orphan"}))
        await _finalize(world)
    assert world.stripe.intents["pi_1"]["status"] == "requires_payment_method"
    assert posted.reasons() == ["StripeIntentCreated", "Orphaned"]


async def test_deletion_gives_up_after_five_tries_rather_than_block_forever() -> None:
    world = World()
    with k8s_events() as posted:
        await _create(world, world.kube.add(PAYMENT_INTENTS, SPEC))
        world.stripe.fail_next("retrieve_intent", *[StripeUnavailable("Stripe unavailable", 5.0)] * 5)
        for retry in range(4):
            with pytest.raises(Retry):
                await _finalize(world, retry)
        await _finalize(world, retry=4)
    assert posted.reasons() == ["StripeIntentCreated", "CancelFailed"]
    assert world.stripe.intents["pi_1"]["status"] == "requires_payment_method"
