"""The Kafka harness: tansu on a free port, explicit topics, and reading back what was produced."""

from __future__ import annotations

import json

from aiokafka import AIOKafkaProducer

from kubepay_sandbox.kafka import ConsumedMessage, KafkaBroker


async def test_produce_with_key_and_headers_then_read_topic() -> None:
    async with KafkaBroker() as broker:
        assert broker.bootstrap_servers.startswith("127.0.0.1:")
        await broker.create_topics(["payments.succeeded", "orders.status"])
        await broker.create_topics(["payments.succeeded"])  # creating again is harmless

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", enable_idempotence=False)
        await producer.start()
        try:
            for index in range(3):
                await producer.send_and_wait(
                    "payments.succeeded",
                    json.dumps({"order_id": "1111", "seq": index}).encode(),
                    key=b"1111",
                    headers=[("ce_type", b"kubepay.payment.succeeded"), ("ce_id", f"id-{index}".encode())],
                )
        finally:
            await producer.stop()

        messages = await broker.read_topic("payments.succeeded", min_messages=3, timeout=10)
        assert messages == [
            ConsumedMessage(
                topic="payments.succeeded",
                key="1111",
                value={"order_id": "1111", "seq": index},
                headers={"ce_type": "kubepay.payment.succeeded", "ce_id": f"id-{index}"},
                offset=index,
            )
            for index in range(3)
        ]
        # Reading is repeatable (no consumer group, always from the beginning).
        assert len(await broker.read_topic("payments.succeeded", min_messages=3)) == 3
        # An empty topic gives an empty list once the deadline passes, not a hang.
        assert await broker.read_topic("orders.status", min_messages=1, timeout=0.5) == []
    assert not broker.running
