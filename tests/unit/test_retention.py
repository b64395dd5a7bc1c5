"""Retention: which finished resources are deleted and when, what stays, and what is refused afterwards."""

from __future__ import annotations

from typing import Any, cast

import pytest

from kubepay.controller import payment_refunds
from kubepay.controller.outcomes import GiveUp, Retry
from kubepay.controller.reconcile import LoopState, Resync
from kubepay.controller.retention import REFUND_WAIT, Retention
from kubepay.kube.client import KubeClient, KubeUnavailable
from kubepay.kube.watch import Change, Seen
from kubepay.model.resources import PAYMENT_INTENTS, PAYMENT_REFUNDS, PaymentIntent, PaymentRefund
from kubepay.postgres import StoreUnavailable
from tests.unit.fakes import World, changed, controller, create, k8s_events
from tests.unit.test_reconcile_loop import SPEC, _created, _intent_step, _succeed

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def _paid(world: World) -> dict[str, Any]:
    """A succeeded payment, mirrored and published (what the controller leaves behind)."""
    await _created(world)
    _succeed(world)
    state = LoopState(phase=None, resync=Resync.CATCH_UP)
    await _intent_step(world, state)
    await _intent_step(world, state)
    return world.kube.body(PAYMENT_INTENTS)


def _retention(world: World, ttl: float | None, clock: Clock) -> Retention:
    return Retention(cast(KubeClient, world.kube), ttl, clock)


async def _refund_step(world: World, body: dict[str, Any], why: Resync | None) -> None:
    """The refund daemon's step: it mirrors the refund and refreshes its parent from Stripe."""
    await payment_refunds.step(world.runtime, body, PaymentRefund.parse(body),
                               LoopState(phase=None, resync=why))


def _at(body: dict[str, Any]) -> float:
    mirrored_at = PaymentIntent.parse(body).status.mirrored_at
    assert mirrored_at is not None
    return mirrored_at


async def test_a_finished_payment_is_deleted_when_its_time_has_passed_and_its_row_stays() -> None:
    world, clock = World(), Clock()
    with k8s_events():
        body = await _paid(world)
    retention = _retention(world, 30 * DAY, clock)
    clock.now = _at(body) + 30 * DAY - 1
    retention.note(PaymentIntent.parse(body))
    await retention.sweep()
    assert (PAYMENT_INTENTS, "shop", "order-1") in world.kube.objects  # one second early: kept
    clock.now += 1
    await retention.sweep()
    assert (PAYMENT_INTENTS, "shop", "order-1") not in world.kube.objects
    assert [row.status for row in world.store.rows.payments.values()] == ["succeeded"]
    assert world.publisher.topics() == ["payments.initiated", "payments.succeeded", "orders.status"]
    assert world.stripe.calls.count("cancel_intent") == 0
    assert retention.pending == 0


async def test_nothing_is_deleted_without_retention_or_before_the_payment_is_mirrored_and_published() -> None:
    world, clock = World(), Clock()
    with k8s_events():
        await _created(world)
        _succeed(world)
        await _intent_step(world, LoopState(phase=None, resync=Resync.CATCH_UP))  # Succeeded, not yet published
    body = world.kube.body(PAYMENT_INTENTS)
    pi = PaymentIntent.parse(body)
    assert pi.status.final and "succeeded" not in pi.status.published
    assert _retention(world, 0, clock).due_at(pi) is None
    with k8s_events():
        await _intent_step(world, LoopState(phase="Succeeded", resync=None))
    published = PaymentIntent.parse(world.kube.body(PAYMENT_INTENTS))
    assert _retention(world, 0, clock).due_at(published) == _at(world.kube.body(PAYMENT_INTENTS))
    assert _retention(world, None, clock).due_at(published) is None  # the default: keep


async def test_the_resources_own_ttl_wins_over_the_controllers() -> None:
    world, clock = World(), Clock()
    with k8s_events():
        body = await _paid(world)
    own = {**body, "spec": {**body["spec"], "ttlSecondsAfterFinished": 60}}
    assert _retention(world, None, clock).due_at(PaymentIntent.parse(own)) == _at(body) + 60
    assert _retention(world, DAY, clock).due_at(PaymentIntent.parse(own)) == _at(body) + 60
    at_once = {**body, "spec": {**body["spec"], "ttlSecondsAfterFinished": 0}}
    assert _retention(world, DAY, clock).due_at(PaymentIntent.parse(at_once)) == _at(body)


async def test_a_payment_waits_for_its_refund_to_be_mirrored_and_the_refund_goes_too() -> None:
    world, clock = World(), Clock()
    retention = world.runtime.retention = _retention(world, 0, clock)
    with k8s_events():
        body = await _paid(world)
        world.kube.add(PAYMENT_REFUNDS, {"paymentIntentName": "order-1", "amount": 200}, name="back-1")
        await create(world, world.kube.body(PAYMENT_REFUNDS, name="back-1"))
    clock.now = _at(body)
    retention.note(PaymentIntent.parse(body))
    await retention.sweep()
    assert (PAYMENT_INTENTS, "shop", "order-1") in world.kube.objects  # its refund is not mirrored yet
    with k8s_events():
        world.stripe.set_intent("pi_1", latest_charge={"id": "ch_1", "amount_refunded": 200})
        await _refund_step(world, world.kube.body(PAYMENT_REFUNDS, name="back-1"), None)
        # The watch events that follow: each finished resource's step, and retention notes it.
        ctrl = controller(world)
        await changed(ctrl, world.kube.body(PAYMENT_REFUNDS, name="back-1"))
        await changed(ctrl, world.kube.body(PAYMENT_INTENTS))
    assert retention.pending == 2
    clock.now += REFUND_WAIT
    await retention.sweep()
    assert world.kube.objects == {}
    assert [row.status for row in world.store.rows.refunds.values()] == ["succeeded"]
    assert [row.status for row in world.store.rows.payments.values()] == ["partially_refunded"]


async def _due_now() -> tuple[World, Retention]:
    """A paid payment with retention 0, noted and due."""
    world, clock = World(), Clock()
    with k8s_events():
        body = await _paid(world)
    retention = _retention(world, 0, clock)
    clock.now = _at(body)
    retention.note(PaymentIntent.parse(body))
    return world, retention


async def test_a_replaced_or_changed_resource_is_not_deleted() -> None:
    world, retention = await _due_now()
    world.kube.objects[(PAYMENT_INTENTS, "shop", "order-1")]["metadata"]["uid"] = "someone-else"
    await retention.sweep()
    assert (PAYMENT_INTENTS, "shop", "order-1") in world.kube.objects
    assert retention.pending == 0  # forgotten: the new object's watch events note it when it finishes


async def test_an_outage_keeps_what_was_due_for_the_next_sweep() -> None:
    world, retention = await _due_now()
    world.kube.fail_next("delete_custom", KubeUnavailable("Kubernetes API answered 503"))
    with pytest.raises(KubeUnavailable):
        await retention.sweep()
    assert retention.pending == 1
    await retention.sweep()
    assert world.kube.objects == {}


async def test_the_watch_event_of_a_finished_payment_notes_it_even_at_restart() -> None:
    world = World(env={"KUBEPAY_RETAIN_FINISHED": "30d"})
    with k8s_events():
        body = await _paid(world)
        ctrl = controller(world)  # a new process: its first sight of the payment, in the watch's listing
        ctrl.seen(PAYMENT_INTENTS, Change(Seen.RELISTING, {}))
        await changed(ctrl, body, Seen.LISTED)
    assert (world.runtime.retention.pending, ctrl.tracked) == (1, 0)
    assert world.runtime.settings.retain_finished == 30 * DAY


async def test_a_payment_recreated_under_its_old_name_is_not_charged_again() -> None:
    world = World()
    with k8s_events():
        await _paid(world)
        del world.kube.objects[(PAYMENT_INTENTS, "shop", "order-1")]  # retention deleted it; GitOps re-applies it
        again = world.kube.add(PAYMENT_INTENTS, SPEC)
        with k8s_events() as posted, pytest.raises(GiveUp, match="not charged again"):
            await create(world, again, retry=0)
    assert world.stripe.calls.count("create_intent") == 1
    status = world.kube.status(PAYMENT_INTENTS)
    synced = next(c for c in status["conditions"] if c["type"] == "Synced")
    assert (synced["status"], synced["reason"], status.get("phase")) == ("False", "AlreadyPaid", None)
    assert posted.reasons() == ["AlreadyPaid"]
    # Another name for the same order is a new payment the user asked for.
    other = world.kube.add(PAYMENT_INTENTS, SPEC, name="order-1-again")
    with k8s_events():
        await create(world, other, retry=0)
    assert world.stripe.calls.count("create_intent") == 2


async def test_while_postgresql_is_down_a_new_payment_waits_and_says_so() -> None:
    world = World()
    body = world.kube.add(PAYMENT_INTENTS, SPEC)
    world.store.rows.fail_next("find_by_order", StoreUnavailable("PostgreSQL unreachable"))
    with k8s_events() as posted, pytest.raises(Retry):
        await create(world, body, retry=0)
    assert world.stripe.calls == []  # nothing reaches Stripe before the check could be made
    assert posted.reasons() == ["Retrying"]
    with k8s_events():
        await create(world, world.kube.body(PAYMENT_INTENTS), retry=1)
    assert world.stripe.calls == ["create_intent"]
