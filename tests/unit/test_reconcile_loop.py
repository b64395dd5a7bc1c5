"""Each kind's step and the controller's handling of a resource: transitions, the watermark, resync, refunds,
which failures are retried, reported or raised, and what a finished resource keeps (nothing)."""

from __future__ import annotations

from typing import Any

import pytest

from kubepay.controller import handling, payment_intents, payment_refunds
from kubepay.controller.handling import Again, Tracked
from kubepay.controller.outcomes import GiveUp
from kubepay.controller.reconcile import LoopState, Resync
from kubepay.kube.watch import Change, Seen
from kubepay.mirror.publisher import PublishFailed, PublishRejected
from kubepay.model.resources import PAYMENT_INTENTS, PAYMENT_REFUNDS, PaymentIntent, PaymentRefund
from kubepay.postgres import StoreRejected, StoreUnavailable
from tests.unit.fakes import World, changed, controller, create, k8s_events

SPEC = {"orderId": "1111", "amount": 1200, "currency": "usd"}
QUIET_SINCE = "2026-01-01T00:00:00Z"


async def _created(world: World) -> None:
    await create(world, world.kube.add(PAYMENT_INTENTS, SPEC))


async def _intent_step(world: World, state: LoopState) -> bool:
    body = world.kube.body(PAYMENT_INTENTS)
    return await payment_intents.step(world.runtime, body, PaymentIntent.parse(body), state)


def _succeed(world: World) -> None:
    """Stripe says succeeded, and no webhook told kubepay for longer than a resync period."""
    world.stripe.set_intent("pi_1", status="succeeded", amount_received=1200)
    world.kube.objects[(PAYMENT_INTENTS, "shop", "order-1")]["status"]["stripe"]["lastSyncedAt"] = QUIET_SINCE


async def test_each_milestone_is_published_once_and_recorded_in_the_watermark() -> None:
    world = World()
    state = LoopState(phase=None, resync=Resync.CATCH_UP)
    with k8s_events() as posted:
        await _created(world)
        await _intent_step(world, state)
        assert world.publisher.topics() == ["payments.initiated"]
        _succeed(world)
        state.resync = Resync.CATCH_UP  # the webhook was lost: the idle timer's resync finds the payment
        await _intent_step(world, state)
        await _intent_step(world, state)  # nothing new: nothing sent again
    status = world.kube.status(PAYMENT_INTENTS)
    assert status["phase"] == "Succeeded"
    assert status["published"] == ["initiated", "succeeded"]
    assert world.publisher.topics() == ["payments.initiated", "payments.succeeded", "orders.status"]
    assert [row.status for row in world.store.rows.payments.values()] == ["succeeded"]
    assert posted.reasons() == ["StripeIntentCreated", "Pending", "Succeeded"]


async def test_what_this_process_published_is_not_sent_again_before_the_watermark_echoes() -> None:
    world = World()
    with k8s_events():
        await _created(world)
        state = LoopState(phase=None, resync=None)
        await _intent_step(world, state)
        body = world.kube.body(PAYMENT_INTENTS)
        body["status"].pop("published")  # the watch has not shown our own watermark write yet
        await payment_intents.step(world.runtime, body, PaymentIntent.parse(body), state)
    assert world.publisher.topics() == ["payments.initiated"]


async def test_a_message_kafka_refuses_for_good_does_not_hold_back_the_next() -> None:
    world = World()
    with k8s_events():
        await _created(world)
        _succeed(world)
        state = LoopState(phase=None, resync=Resync.CATCH_UP)
        world.publisher.fail_next("publish", PublishFailed("Kafka unreachable"))
        with pytest.raises(PublishFailed):  # an outage: status is Succeeded now, nothing published yet
            await _intent_step(world, state)
        world.publisher.fail_next("publish", PublishRejected("Kafka refused a message: RecordTooLargeError"))
        with pytest.raises(PublishRejected):
            await _intent_step(world, state)
    assert world.kube.status(PAYMENT_INTENTS)["published"] == ["succeeded"]
    assert world.publisher.topics() == ["payments.succeeded", "orders.status"]


async def test_a_row_postgresql_refuses_for_good_does_not_hold_back_the_messages() -> None:
    world = World()
    with k8s_events():
        await _created(world)
        world.store.rows.fail_next("upsert", StoreRejected("PostgreSQL refused the data: value too long"))
        with pytest.raises(StoreRejected):
            await _intent_step(world, LoopState(phase=None, resync=None))
    assert world.kube.status(PAYMENT_INTENTS)["published"] == ["initiated"]
    assert world.publisher.topics() == ["payments.initiated"]


async def test_a_milestone_published_beside_a_refused_row_is_not_sent_again_before_the_watermark_echoes() -> None:
    # CI saw payments.succeeded twice: the step that published it raised the row's refusal, and the next step
    # (on a body the watch delivered before the watermark write echoed) did not know it was sent.
    world = World()
    with k8s_events():
        await _created(world)
        state = LoopState(phase=None, resync=None)
        await _intent_step(world, state)
        _succeed(world)
        state.resync = Resync.CATCH_UP
        await _intent_step(world, state)  # status is Succeeded now; the next step mirrors it
        stale = world.kube.body(PAYMENT_INTENTS)
        world.store.rows.fail_next("upsert", StoreRejected("PostgreSQL refused the data: check constraint"))
        with pytest.raises(StoreRejected):
            await _intent_step(world, state)
        assert world.publisher.topics() == ["payments.initiated", "payments.succeeded", "orders.status"]
        succeeded = world.kube.body(PAYMENT_INTENTS)
        succeeded["status"]["published"] = stale["status"]["published"]  # the watermark write not seen yet
        world.store.rows.fail_next("upsert", StoreRejected("PostgreSQL refused the data: check constraint"))
        with pytest.raises(StoreRejected):
            await payment_intents.step(world.runtime, succeeded, PaymentIntent.parse(succeeded), state)
    assert world.publisher.topics() == ["payments.initiated", "payments.succeeded", "orders.status"]
    assert world.kube.status(PAYMENT_INTENTS)["published"] == ["initiated", "succeeded"]


async def test_a_paused_payment_is_left_alone_and_resynced_on_resume() -> None:
    world = World()
    state = LoopState(phase=None, resync=None)
    with k8s_events() as posted:
        await _created(world)
        world.kube.objects[(PAYMENT_INTENTS, "shop", "order-1")]["metadata"]["annotations"] = {
            "kubepay.io/paused": "true"}
        assert await _intent_step(world, state) is False
        _succeed(world)
        world.kube.objects[(PAYMENT_INTENTS, "shop", "order-1")]["metadata"]["annotations"] = {}
        assert await _intent_step(world, state) is True  # resumed: Stripe is read again
        await _intent_step(world, state)  # the next change (the repaired status) is announced
    assert world.kube.status(PAYMENT_INTENTS)["phase"] == "Succeeded"
    assert posted.reasons()[1:] == ["Paused", "Resumed", "Pending", "Succeeded"]


async def test_a_refund_is_created_once_mirrored_and_moves_its_parent() -> None:
    world = World()
    with k8s_events() as posted:
        await _created(world)
        _succeed(world)
        await _intent_step(world, LoopState(phase=None, resync=Resync.CATCH_UP))
        refund_body = world.kube.add(PAYMENT_REFUNDS, {"paymentIntentName": "order-1", "amount": 200},
                                     name="back-1")
        await create(world, refund_body)
        await create(world, world.kube.body(PAYMENT_REFUNDS, name="back-1"))
        # Stripe's charge now shows the refund: the refund's transition refreshes the parent from Stripe.
        world.stripe.set_intent("pi_1", latest_charge={"id": "ch_1", "amount_refunded": 200})
        body = world.kube.body(PAYMENT_REFUNDS, name="back-1")
        await payment_refunds.step(world.runtime, body, PaymentRefund.parse(body),
                                   LoopState(phase=None, resync=None))
    assert world.stripe.calls.count("create_refund") == 1
    refund = world.kube.status(PAYMENT_REFUNDS, name="back-1")
    assert (refund["phase"], refund["amount"], refund["published"]) == ("Succeeded", 200, ["refunded"])
    parent = world.kube.status(PAYMENT_INTENTS)
    assert (parent["phase"], parent["amountRefunded"]) == ("PartiallyRefunded", 200)
    assert [row.status for row in world.store.rows.refunds.values()] == ["succeeded"]
    assert world.publisher.topics()[-1] == "payments.refunded"
    assert "RefundSucceeded" in posted.reasons()


async def test_a_refund_larger_than_what_is_left_is_refused_without_calling_stripe() -> None:
    world = World()
    with k8s_events() as posted:
        await _created(world)
        _succeed(world)
        await _intent_step(world, LoopState(phase=None, resync=Resync.CATCH_UP))
        body = world.kube.add(PAYMENT_REFUNDS, {"paymentIntentName": "order-1", "amount": 5000}, name="too-much")
        with pytest.raises(GiveUp):
            await create(world, body)
    status = world.kube.status(PAYMENT_REFUNDS, name="too-much")
    assert (status["phase"], status["failure"]["code"], status["amount"]) == ("Failed", "exceeds_refundable_amount",
                                                                               5000)
    assert "create_refund" not in world.stripe.calls
    assert posted.reasons()[-1] == "RefundRefused"


async def _handled(world: World, tracked: Tracked, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(handling, "backoff", lambda retry: float(retry))
    return await handling.handle(world.runtime, payment_intents.KIND, tracked, idle=False)


async def test_outages_are_retried_with_backoff_and_refusals_reported_once(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    with k8s_events() as posted:
        await _created(world)
        tracked = Tracked(world.kube.body(PAYMENT_INTENTS), LoopState(phase=None, resync=None))
        tracked.body["metadata"]["finalizers"] = [handling.FINALIZER]
        world.store.rows.fail_next("upsert", StoreUnavailable("PostgreSQL unreachable"),
                                   StoreUnavailable("PostgreSQL unreachable"))
        assert await _handled(world, tracked, monkeypatch) == Again(1.0)
        assert await _handled(world, tracked, monkeypatch) == Again(2.0)  # the backoff grows with the tries
        world.store.rows.fail_next("upsert", StoreRejected("PostgreSQL refused the data: value too long"),
                                   StoreRejected("PostgreSQL refused the data: value too long"))
        assert await _handled(world, tracked, monkeypatch) is None  # refused for good: wait for a change
        assert await _handled(world, tracked, monkeypatch) is None
    assert posted.reasons().count("MirrorRefused") == 1  # the same refusal is reported once
    again = await _handled(world, tracked, monkeypatch)  # the row goes in: the idle timer is next
    assert again.idle and 540 <= again.after <= 660
    assert [row.status for row in world.store.rows.payments.values()] == ["pending"]


async def test_catching_up_skips_a_recently_settled_payment_and_reads_in_the_background() -> None:
    world = World()
    with k8s_events():
        await _created(world)  # status was just written from Stripe's answer
        world.stripe.set_intent("pi_1", status="succeeded", amount_received=1200)
        await _intent_step(world, LoopState(phase="Pending", resync=Resync.CATCH_UP))
        assert world.stripe.calls == ["create_intent"]  # settled moments ago: no read
        await _intent_step(world, LoopState(phase="Pending", resync=Resync.RESUME))
    assert world.stripe.calls == ["create_intent", "retrieve_intent"]
    assert world.stripe.background_reads == 1
    assert world.kube.status(PAYMENT_INTENTS)["phase"] == "Succeeded"


async def test_a_finished_payment_keeps_no_state_and_its_refund_is_mirrored_from_the_watch_event() -> None:
    world = World()
    ctrl = controller(world)
    with k8s_events() as posted:
        await changed(ctrl, world.kube.add(PAYMENT_INTENTS, SPEC), Seen.ADDED)
        await changed(ctrl, world.kube.body(PAYMENT_INTENTS))
        _succeed(world)
        await world.kube.patch_status(PAYMENT_INTENTS, "shop", "order-1", {"phase": "Succeeded"}, None)
        await changed(ctrl, world.kube.body(PAYMENT_INTENTS))  # mirrors it, and writes the watermark
        await changed(ctrl, world.kube.body(PAYMENT_INTENTS))  # the watermark's echo: nothing left to do
        assert world.publisher.topics() == ["payments.initiated", "payments.succeeded", "orders.status"]
        assert ctrl.tracked == 0  # finished and mirrored: no body, no state, no timer
        # A refund moves the finished payment: its watch event's step mirrors it, and announces the change.
        await world.kube.patch_status(PAYMENT_INTENTS, "shop", "order-1",
                                      {"phase": "PartiallyRefunded", "amountRefunded": 300}, None)
        await changed(ctrl, world.kube.body(PAYMENT_INTENTS))
    assert [(row.status, row.amount_refunded) for row in world.store.rows.payments.values()] == [
        ("partially_refunded", 300)]
    assert world.publisher.topics() == ["payments.initiated", "payments.succeeded", "orders.status"]
    assert posted.all[-1].message.startswith("The phase changed from Succeeded to PartiallyRefunded")
    assert posted.reasons()[-1] == "PartiallyRefunded"


def test_which_phases_are_final() -> None:
    assert payment_intents.KIND.final({"phase": "Failed"}) is False  # the customer may pay again
    assert payment_intents.KIND.final({}) is False
    assert payment_intents.KIND.final({"phase": "Canceled"}) is True
    assert payment_refunds.KIND.final({"phase": "Pending"}) is False
    assert payment_refunds.KIND.final({"phase": "Failed"}) is True


async def test_the_row_is_written_only_when_it_changes_and_a_finished_payment_costs_nothing_at_restart() -> None:
    world = World()
    with k8s_events():
        await _created(world)
        _succeed(world)
        state = LoopState(phase=None, resync=Resync.CATCH_UP)
        await _intent_step(world, state)
        await _intent_step(world, state)  # Succeeded: row and messages
        writes = len(world.kube.status_writes)
        rows = dict(world.store.rows.payments)
        world.store.rows.fail_next("upsert", AssertionError("the row was written again"))
        await _intent_step(world, state)  # nothing changed: no row write, no status write
        assert len(world.kube.status_writes) == writes
        # A restart: a new process sees the finished payment once, in the watch's initial listing.
        ctrl = controller(world)
        ctrl.seen(PAYMENT_INTENTS, Change(Seen.RELISTING, {}))
        await changed(ctrl, world.kube.body(PAYMENT_INTENTS), Seen.LISTED)
    assert (len(world.kube.status_writes), ctrl.tracked) == (writes, 0)
    with pytest.raises(AssertionError, match="written again"):  # still unspent: nothing tried to write the row
        world.store.rows.check("upsert")
    assert [row.status for row in rows.values()] == ["succeeded"]


async def test_a_finished_payments_change_is_retried_through_an_outage_not_dropped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handling, "backoff", lambda retry: 0.0)
    world = World()
    with k8s_events():
        await _created(world)
        _succeed(world)
        state = LoopState(phase=None, resync=Resync.CATCH_UP)
        await _intent_step(world, state)
        await _intent_step(world, state)
        await world.kube.patch_status(PAYMENT_INTENTS, "shop", "order-1",
                                      {"phase": "PartiallyRefunded", "amountRefunded": 300}, None)
        world.store.rows.fail_next("upsert", StoreUnavailable("PostgreSQL unreachable"),
                                   StoreUnavailable("PostgreSQL unreachable"))
        await changed(controller(world), world.kube.body(PAYMENT_INTENTS))  # retried at once (backoff 0 here)
    assert [(row.status, row.amount_refunded) for row in world.store.rows.payments.values()] == [
        ("partially_refunded", 300)]


async def test_after_a_restart_a_new_payment_goes_before_the_catch_up_reads() -> None:
    world = World()
    with k8s_events():
        for n in range(3):
            body = world.kube.add(PAYMENT_INTENTS, {**SPEC, "orderId": f"old-{n}"}, name=f"old-{n}")
            await create(world, body)
            world.kube.objects[(PAYMENT_INTENTS, "shop", f"old-{n}")]["status"]["stripe"]["lastSyncedAt"] = QUIET_SINCE
        world.stripe.calls.clear()
        ctrl = controller(world)  # the new process lists them: each is due for a catch-up read
        ctrl.seen(PAYMENT_INTENTS, Change(Seen.RELISTING, {}))
        for n in range(3):
            ctrl.seen(PAYMENT_INTENTS, Change(Seen.LISTED, world.kube.body(PAYMENT_INTENTS, name=f"old-{n}")))
        ctrl.seen(PAYMENT_INTENTS, Change(Seen.SYNCED, {}))
        await changed(ctrl, world.kube.add(PAYMENT_INTENTS, {**SPEC, "orderId": "new"}, name="new"), Seen.ADDED)
    assert world.stripe.calls == ["create_intent"] + ["retrieve_intent"] * 3
    assert world.stripe.background_reads == 3
