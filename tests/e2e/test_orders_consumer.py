"""`kubepay orders-consumer` end to end: orders.created on the real broker becomes PaymentIntent resources."""

from __future__ import annotations

import json
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kubepay_sandbox.stack import Sandbox, Tenant
from tests.contracts import validate_message
from tests.helpers import Kube, messages, wait_for

GROUP, VERSION, PLURAL = "kubepay.io", "v1alpha1", "paymentintents"


def _order(order_id: str, total: str = "19.99", currency: str = "USD") -> dict[str, Any]:
    return {"order_id": order_id, "user_id": "user-9", "total": total, "currency": currency,
            "items": [{"product_id": "sku-1", "quantity": 1, "price": total}]}


async def _produce(sandbox: Sandbox, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=sandbox.kafka.bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key.encode(), headers=[("trace_id", b"t-" + key.encode())])
    finally:
        await producer.stop()


async def _raw_messages(sandbox: Sandbox, topic: str, count: int, timeout: float = 15.0,
                        exact: bool = False) -> list[Any]:
    """Records as they are (the dead-letter topic holds values that are not JSON)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=sandbox.kafka.bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    await consumer.start()
    try:
        while (exact or len(found) < count) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(records)
    finally:
        await consumer.stop()
    assert len(found) >= count, f"{len(found)} of {count} messages on {topic}"
    return found


async def _payment_intents(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    listing = await kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    return list(listing["items"])


async def test_orders_become_one_payment_each_and_poison_goes_to_the_dlq(
        sandbox: Sandbox, tenant: Tenant, kube: Kube) -> None:
    ns, topics = tenant.namespace, tenant.topics
    await tenant.process("operator").start()
    consumer = tenant.process("orders-consumer")
    await consumer.start()

    good = json.dumps(_order("5001")).encode()
    validate_message("orders.created", json.loads(good))
    # The same order delivered three times, then poison, then more good orders.
    await _produce(sandbox, topics.orders_created, [
        ("5001", good), ("5001", good), ("5001", good),
        ("poison-1", b"{this is not json"),
        ("5002", json.dumps(_order("5002", total="12.345")).encode()),
        ("5001", json.dumps(_order("5001", total="25.00")).encode()),
        ("5003", json.dumps(_order("5003", total="1200", currency="JPY")).encode()),
    ])

    # Messages are handled in order: once the last one's resource exists, all before it were handled.
    last = await wait_for(lambda: kube.get_pi(ns, "order-5003"), what="the resource of order 5003")
    assert (last["spec"]["amount"], last["spec"]["currency"]) == (1200, "jpy")
    first = await kube.get_pi(ns, "order-5001")
    assert first is not None
    assert (first["spec"]["orderId"], first["spec"]["amount"], first["spec"]["currency"],
            first["spec"]["userId"]) == ("5001", 1999, "usd", "user-9")
    assert first["metadata"]["labels"]["kubepay.io/source"] == "orders-consumer"
    assert sorted(pi["metadata"]["name"] for pi in await _payment_intents(kube, ns)) == ["order-5001", "order-5003"]

    dead = await _raw_messages(sandbox, topics.orders_dlq, 3)
    assert [record.key for record in dead] == [b"poison-1", b"5002", b"5001"]
    assert dead[0].value == b"{this is not json"
    reasons = [dict(record.headers)["kubepay_error"].decode() for record in dead]
    assert reasons[0].startswith("value is not JSON")
    assert "total: amount '12.345' has more than 2 decimal places for USD" in reasons[1]
    assert "already has a payment" in reasons[2]
    headers = dict(dead[1].headers)
    assert headers["trace_id"] == b"t-5002"
    assert headers["kubepay_original_topic"] == topics.orders_created.encode()
    assert headers["kubepay_original_offset"] == b"4"

    # The controller picks the resource up: one Stripe intent, and the initiated message matches its schema.
    [initiated] = await messages(sandbox.kafka, topics.initiated, "5001", 1)
    validate_message("payments.initiated", initiated.value)
    assert (initiated.value["amount"], initiated.value["amount_minor"]) == ("19.99", 1999)
    listing = await sandbox.stripe_client().v1.payment_intents.list_async({"limit": 100})
    uid = first["metadata"]["uid"]
    assert len([i for i in listing.data if (i.to_dict().get("metadata") or {}).get("kubepay_uid") == uid]) == 1

    # Offsets were committed: a restarted consumer neither re-creates nor dead-letters anything again.
    await consumer.stop()
    restarted = tenant.process("orders-consumer")
    await restarted.start()
    await _produce(sandbox, topics.orders_created, [("5004", json.dumps(_order("5004")).encode())])
    await wait_for(lambda: kube.get_pi(ns, "order-5004"), what="the resource of order 5004")
    assert len(await _raw_messages(sandbox, topics.orders_dlq, 3, timeout=1.0, exact=True)) == 3
    assert "order 5001" not in restarted.logs() and "5001" not in restarted.logs()


async def test_the_consumer_can_run_inside_the_controller(sandbox: Sandbox, tenant: Tenant, kube: Kube) -> None:
    await tenant.process("operator", KUBEPAY_ORDERS_CONSUMER="true").start()
    await _produce(sandbox, tenant.topics.orders_created, [("9101", json.dumps(_order("9101", "4.20")).encode())])

    async def created() -> list[dict[str, Any]]:
        return [pi for pi in await _payment_intents(kube, tenant.namespace) if pi["spec"]["orderId"] == "9101"]
    [pi] = await wait_for(created, what="the PaymentIntent for order 9101")
    assert (pi["spec"]["amount"], pi["spec"]["currency"]) == (420, "usd")
    await kube.wait_pi(tenant.namespace, pi["metadata"]["name"],
                       lambda o: bool(o.get("status", {}).get("stripe")), what="a Stripe intent")
