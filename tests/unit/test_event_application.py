"""Applying Stripe events (stripe.events.handle) with fakes: the ledger, never backwards, both kinds."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest

from kubepay.kube.client import KubeClient, KubeUnavailable
from kubepay.mirror.rows import PaymentRow
from kubepay.model.resources import PAYMENT_INTENTS, PAYMENT_REFUNDS
from kubepay.postgres import StoreUnavailable
from kubepay.store import Store
from kubepay.stripe import events
from kubepay.stripe.seen_events import SeenEvents
from tests.unit.fakes import World

_ids = iter(range(1, 10_000))


def _event(type_: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {"id": f"evt_{next(_ids)}", "object": "event", "type": type_, "created": created, "livemode": False,
            "data": {"object": obj}}


def _intent(world: World, status: str, **fields: Any) -> dict[str, Any]:
    meta = world.kube.objects[(PAYMENT_INTENTS, "shop", "order-1")]["metadata"]
    return {"id": "pi_1", "object": "payment_intent", "status": status, "amount": 1200, "currency": "usd",
            "amount_received": 1200 if status == "succeeded" else 0, "livemode": False,
            "metadata": {"kubepay_namespace": "shop", "kubepay_name": "order-1", "kubepay_uid": meta["uid"]},
            **fields}


async def _handle(world: World, event: dict[str, Any], namespace: str | None = None,
                  seen: SeenEvents | None = None) -> str:
    return await events.handle(event, cast(Store, world.store), cast(KubeClient, world.kube), namespace, seen)


def _world() -> World:
    world = World()
    world.kube.add(PAYMENT_INTENTS, {"orderId": "1111", "amount": 1200, "currency": "usd"})
    return world


async def test_an_event_is_applied_once_and_a_redelivery_is_a_duplicate() -> None:
    world = _world()
    event = _event("payment_intent.succeeded", _intent(world, "succeeded"), 100)
    assert await _handle(world, event) == "applied"
    assert await _handle(world, event) == "duplicate"
    status = world.kube.status(PAYMENT_INTENTS)
    assert (status["phase"], status["stripe"]["lastEventId"]) == ("Succeeded", event["id"])
    assert world.store.ledger.entries[event["id"]].outcome == "applied"
    assert len(world.kube.status_writes) == 1


async def test_out_of_order_events_never_move_status_backwards() -> None:
    world = _world()
    assert await _handle(world, _event("payment_intent.processing", _intent(world, "processing"), 100)) == "applied"
    assert await _handle(world, _event("payment_intent.requires_action", _intent(world, "requires_action"),
                                       90)) == "stale"  # older
    assert await _handle(world, _event("payment_intent.succeeded", _intent(world, "succeeded"), 100)) == "applied"
    failed = _intent(world, "requires_payment_method", last_payment_error={"code": "card_declined"})
    assert await _handle(world, _event("payment_intent.payment_failed", failed, 200)) == "stale"
    assert world.kube.status(PAYMENT_INTENTS)["phase"] == "Succeeded"


async def test_a_refunded_charge_moves_a_final_payment_forward_only() -> None:
    world = _world()
    await _handle(world, _event("payment_intent.succeeded", _intent(world, "succeeded"), 100))
    meta = world.kube.objects[(PAYMENT_INTENTS, "shop", "order-1")]["metadata"]
    await world.store.rows.upsert(PaymentRow(  # the mirror is how a charge event finds its resource
        id=uuid.uuid4(), order_id="1111", user_id=None, amount=1200, currency="usd", status="succeeded",
        payment_method=None, provider_payment_id="pi_1", amount_received=1200, amount_refunded=0, failure_code=None,
        failure_reason=None, resource_namespace="shop", resource_name="order-1", resource_uid=meta["uid"]))
    charge = {"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount": 1200, "amount_captured": 1200,
              "amount_refunded": 300}
    assert await _handle(world, _event("charge.refunded", charge, 150)) == "applied"
    assert await _handle(world, _event("charge.refunded", {**charge, "amount_refunded": 200}, 160)) == "stale"
    status = world.kube.status(PAYMENT_INTENTS)
    assert (status["phase"], status["amountRefunded"]) == ("PartiallyRefunded", 300)


async def test_refund_events_apply_to_the_payment_refund_and_only_a_late_failure_undoes_success() -> None:
    world = _world()
    refund_meta = world.kube.add(PAYMENT_REFUNDS, {"paymentIntentName": "order-1"}, name="back-1")["metadata"]
    refund = {"id": "re_1", "object": "refund", "payment_intent": "pi_1", "amount": 1200, "currency": "usd",
              "status": "succeeded", "metadata": {"kubepay_namespace": "shop", "kubepay_name": "back-1",
                                                  "kubepay_uid": refund_meta["uid"]}}
    assert await _handle(world, _event("refund.created", {**refund, "status": "pending"}, 100)) == "applied"
    assert await _handle(world, _event("refund.updated", refund, 110)) == "applied"
    assert await _handle(world, _event("refund.updated", {**refund, "status": "canceled"}, 120)) == "stale"
    failed = {**refund, "status": "failed", "failure_reason": "expired_or_canceled_card"}
    assert await _handle(world, _event("refund.failed", failed, 130)) == "applied"
    status = world.kube.status(PAYMENT_REFUNDS, name="back-1")
    assert (status["phase"], status["failure"]["message"]) == ("Failed", "expired_or_canceled_card")


async def test_events_for_unknown_or_foreign_resources_are_answered_not_applied() -> None:
    world = _world()
    stranger = {**_intent(world, "succeeded"), "metadata": {"kubepay_namespace": "shop", "kubepay_name": "nope"}}
    assert await _handle(world, _event("payment_intent.succeeded", stranger, 100)) == "unknown_payment"
    assert await _handle(world, _event("payment_intent.succeeded", _intent(world, "succeeded"), 100),
                         namespace="elsewhere") == "unknown_payment"
    assert await _handle(world, _event("customer.created", {"id": "cus_1", "object": "customer"}, 100)) == "unhandled"
    assert world.kube.status(PAYMENT_INTENTS) == {}


async def test_a_concurrent_status_write_is_recomputed_not_overwritten() -> None:
    world = _world()
    world.kube.concurrent_writes = 2  # two 409s: read again, compute again, write with the new resourceVersion
    assert await _handle(world, _event("payment_intent.succeeded", _intent(world, "succeeded"), 100)) == "applied"
    assert world.kube.status(PAYMENT_INTENTS)["phase"] == "Succeeded"


async def test_an_outage_leaves_the_event_unprocessed_for_stripes_retry() -> None:
    world = _world()
    event = _event("payment_intent.succeeded", _intent(world, "succeeded"), 100)
    world.kube.fail_next("get_custom", KubeUnavailable("Kubernetes API answered 503"))
    with pytest.raises(KubeUnavailable):
        await _handle(world, event)
    assert world.store.ledger.entries[event["id"]].processed is False
    assert await _handle(world, event) == "applied"  # Stripe's redelivery


async def test_a_first_sight_reads_while_the_ledger_records_and_a_redelivery_reads_nothing() -> None:
    world, seen, reads = _world(), SeenEvents(), []
    read = world.kube.get_custom

    async def counted(plural: str, namespace: str, name: str) -> dict[str, Any]:
        reads.append(name)
        return await read(plural, namespace, name)

    world.kube.get_custom = counted  # type: ignore[method-assign]
    event = _event("payment_intent.succeeded", _intent(world, "succeeded"), 100)
    assert await _handle(world, event, seen=seen) == "applied"
    assert await _handle(world, event, seen=seen) == "duplicate"
    assert reads == ["order-1"]
    assert world.kube.status(PAYMENT_INTENTS)["stripe"]["lastEventId"] == event["id"]
    assert world.store.ledger.entries[event["id"]].outcome == "applied"


@pytest.mark.parametrize("operation, error", [("get_custom", KubeUnavailable("Kubernetes API answered 503")),
                                              ("record", StoreUnavailable("PostgreSQL unreachable: OSError"))])
async def test_an_outage_beside_a_read_ahead_leaves_the_event_for_stripes_retry(operation: str,
                                                                                error: Exception) -> None:
    world, seen = _world(), SeenEvents()
    event = _event("payment_intent.succeeded", _intent(world, "succeeded"), 100)
    (world.store.ledger if operation == "record" else world.kube).fail_next(operation, error)
    with pytest.raises(type(error)):
        await _handle(world, event, seen=seen)
    assert world.kube.status(PAYMENT_INTENTS) == {}
    assert await _handle(world, event, seen=seen) == "applied"  # Stripe's redelivery, to the same process
    assert world.store.ledger.entries[event["id"]].processed is True


async def test_releases_sharding_by_namespace_can_share_one_database() -> None:
    """Stripe sends every event to every release's endpoint; the first to see it must not claim it."""
    world = World()
    world.kube.add(PAYMENT_INTENTS, {"orderId": "2222", "amount": 1200, "currency": "usd"}, namespace="shard-b")
    meta = world.kube.objects[(PAYMENT_INTENTS, "shard-b", "order-1")]["metadata"]
    intent = {"id": "pi_b", "object": "payment_intent", "status": "succeeded", "amount": 1200, "currency": "usd",
              "amount_received": 1200, "livemode": False,
              "metadata": {"kubepay_namespace": "shard-b", "kubepay_name": "order-1", "kubepay_uid": meta["uid"]}}
    event = _event("payment_intent.succeeded", intent, 100)
    assert await _handle(world, event, namespace="shard-a") == "unknown_payment"
    assert event["id"] not in world.store.ledger.entries
    assert await _handle(world, event, namespace="shard-b") == "applied"
    assert world.kube.status(PAYMENT_INTENTS, namespace="shard-b")["phase"] == "Succeeded"
