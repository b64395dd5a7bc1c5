"""The reconcile loop and each kind's step as plain async functions: transitions, the watermark, resync,
refunds, and which failures are retried, reported or raised."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from kubepay.controller import payment_intents, payment_refunds, reconcile, registry
from kubepay.controller.reconcile import LoopState, Resync
from kubepay.kube.client import Invalid, KubeUnavailable
from kubepay.mirror.publisher import PublishFailed, PublishRejected
from kubepay.model.resources import PAYMENT_INTENTS, PAYMENT_REFUNDS, PaymentIntent, PaymentRefund
from kubepay.postgres import StoreRejected, StoreUnavailable
from tests.unit.fakes import World, k8s_events

SPEC = {"orderId": "1111", "amount": 1200, "currency": "usd"}
QUIET_SINCE = "2026-01-01T00:00:00Z"


async def _created(world: World) -> None:
    body = world.kube.add(PAYMENT_INTENTS, SPEC)
    await registry.ensure_stripe_intent(body=kopf.Body(body), memo=kopf.Memo(runtime=world.runtime), retry=0)


async def _intent_step(world: World, state: LoopState) -> bool:
    body = world.kube.body(PAYMENT_INTENTS)
    return await payment_intents.step(world.runtime, kopf.Body(body), PaymentIntent.parse(body), state)


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
        await payment_intents.step(world.runtime, kopf.Body(body), PaymentIntent.parse(body), state)
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
            await payment_intents.step(world.runtime, kopf.Body(succeeded), PaymentIntent.parse(succeeded), state)
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
        memo = kopf.Memo(runtime=world.runtime)
        await registry.ensure_stripe_refund(body=kopf.Body(refund_body), memo=memo, retry=0)
        await registry.ensure_stripe_refund(body=kopf.Body(world.kube.body(PAYMENT_REFUNDS, name="back-1")),
                                            memo=memo, retry=0)
        # Stripe's charge now shows the refund: the refund's transition refreshes the parent from Stripe.
        world.stripe.set_intent("pi_1", latest_charge={"id": "ch_1", "amount_refunded": 200})
        body = world.kube.body(PAYMENT_REFUNDS, name="back-1")
        await payment_refunds.step(world.runtime, kopf.Body(body), PaymentRefund.parse(body),
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
        with pytest.raises(kopf.PermanentError):
            await registry.ensure_stripe_refund(body=kopf.Body(body), memo=kopf.Memo(runtime=world.runtime), retry=0)
    status = world.kube.status(PAYMENT_REFUNDS, name="too-much")
    assert (status["phase"], status["failure"]["code"], status["amount"]) == ("Failed", "exceeds_refundable_amount",
                                                                               5000)
    assert "create_refund" not in world.stripe.calls
    assert posted.reasons()[-1] == "RefundRefused"


class _Steps:
    """A step that fails as told, then succeeds; it counts its calls."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> float | None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return None


async def _run_until(steps: _Steps, calls: int, refused: list[Any]) -> None:
    signal = asyncio.Event()

    async def on_refused(exc: Any) -> None:
        refused.append(exc)

    loop = asyncio.create_task(reconcile.reconcile(signal, steps, lambda: None, on_refused,
                                                           reconcile.log))
    try:
        async with asyncio.timeout(10):
            while steps.calls < calls and not loop.done():
                signal.set()
                await asyncio.sleep(0.01)
        if loop.done():
            await loop  # the loop ended: raise what ended it
    finally:
        loop.cancel()


async def test_outages_are_retried_and_refusals_reported_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "backoff", lambda retry: 0.0)
    refused: list[Any] = []
    steps = _Steps(KubeUnavailable("503"), PublishFailed("Kafka unreachable"), Invalid("metadata.labels: bad"),
                   Invalid("metadata.labels: bad"))
    await _run_until(steps, calls=5, refused=refused)
    assert [str(exc) for exc in refused] == ["metadata.labels: bad"]  # the same refusal is reported once


async def test_an_unexpected_error_is_not_swallowed() -> None:
    with pytest.raises(ZeroDivisionError):
        await _run_until(_Steps(ZeroDivisionError()), calls=2, refused=[])


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


async def test_a_finished_payment_has_no_daemon_and_its_refund_is_mirrored_from_the_watch_event() -> None:
    world = World()
    with k8s_events() as posted:
        await _created(world)
        _succeed(world)
        await _intent_step(world, LoopState(phase=None, resync=Resync.CATCH_UP))  # the daemon's last step
        memo = kopf.Memo(runtime=world.runtime)
        body = world.kube.body(PAYMENT_INTENTS)
        assert payment_intents.KIND.unfinished(body["status"]) is False  # kopf stops (never starts) the daemon
        await registry.changed_intent(body=kopf.Body(body), memo=memo, logger=reconcile.log)
        assert world.publisher.topics() == ["payments.initiated", "payments.succeeded", "orders.status"]
        # A refund moves the finished payment: only the watch event's single step mirrors it.
        await world.kube.patch_status(PAYMENT_INTENTS, "shop", "order-1",
                                      {"phase": "PartiallyRefunded", "amountRefunded": 300}, None)
        await registry.changed_intent(body=kopf.Body(world.kube.body(PAYMENT_INTENTS)), memo=memo,
                                      logger=reconcile.log)
    assert [(row.status, row.amount_refunded) for row in world.store.rows.payments.values()] == [
        ("partially_refunded", 300)]
    assert world.publisher.topics() == ["payments.initiated", "payments.succeeded", "orders.status"]
    assert posted.reasons()[-1] == "PartiallyRefunded"


def test_only_unfinished_resources_get_a_daemon() -> None:
    assert payment_intents.KIND.unfinished({"phase": "Failed"}) is True  # the customer may pay again
    assert payment_intents.KIND.unfinished({}) is True
    assert payment_intents.KIND.unfinished({"phase": "Canceled"}) is False
    assert payment_refunds.KIND.unfinished({"phase": "Pending"}) is True
    assert payment_refunds.KIND.unfinished({"phase": "Failed"}) is False


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
        memo = kopf.Memo(runtime=world.runtime)
        await registry.changed_intent(body=kopf.Body(world.kube.body(PAYMENT_INTENTS)), memo=memo,
                                      logger=reconcile.log)
    assert (len(world.kube.status_writes), "loop" in memo) == (writes, False)
    with pytest.raises(AssertionError, match="written again"):  # still unspent: nothing tried to write the row
        world.store.rows.check("upsert")
    assert [row.status for row in rows.values()] == ["succeeded"]


async def test_a_finished_payments_change_is_retried_through_an_outage_not_dropped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "backoff", lambda retry: 0.0)
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
        await registry.changed_intent(body=kopf.Body(world.kube.body(PAYMENT_INTENTS)),
                                      memo=kopf.Memo(runtime=world.runtime), logger=reconcile.log)
    assert [(row.status, row.amount_refunded) for row in world.store.rows.payments.values()] == [
        ("partially_refunded", 300)]
