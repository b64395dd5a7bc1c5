"""Apache Kafka from Maven Central's jars runs kubepay's production producer settings, which tansu cannot:
the idempotent producer with acks=all, and transactions (read_committed readers never see aborted ones)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kubepay import config
from kubepay.mirror.messages import Message
from kubepay.mirror.publisher import Publisher
from kubepay_sandbox.apache_kafka import ApacheKafka
from kubepay_sandbox.kafka import ConsumedMessage

# The orders consumer's settings: kubepay's producer defaults (acks=all, idempotence) without a Stripe key.
_ENV = {"DATABASE_URL": "postgresql://kubepay@127.0.0.1/kubepay"}


async def test_production_publisher_settings_are_acknowledged() -> None:
    async with ApacheKafka() as broker:
        await broker.create_topics(["payments.succeeded"])
        publisher = Publisher(config.load(_ENV | {"KAFKA_BROKER_URL": broker.bootstrap_servers}, config.ORDERS))
        await publisher.start()
        try:
            await publisher.publish([
                Message("payments.succeeded", "1111", {"order_id": "1111", "seq": seq}, [("ce_id", f"{seq}".encode())])
                for seq in range(3)
            ])
        finally:
            await publisher.stop()
        messages = await broker.read_topic("payments.succeeded", min_messages=3)
        assert messages == [
            ConsumedMessage("payments.succeeded", "1111", {"order_id": "1111", "seq": seq}, {"ce_id": f"{seq}"}, seq)
            for seq in range(3)
        ]
        pid, data = broker.pid, broker.data_dir
    assert not broker.running
    assert pid is not None and not await asyncio.to_thread(Path(f"/proc/{pid}").exists)
    assert data is not None and not await asyncio.to_thread(data.exists)


async def test_transactions_commit_and_abort() -> None:
    async with ApacheKafka() as broker:
        await broker.create_topics(["orders.status"])
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, transactional_id=f"tx-{os.getpid()}")
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send("orders.status", b'{"n": 1}')
            await producer.begin_transaction()
            await producer.send("orders.status", b'{"n": "aborted"}')
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send("orders.status", b'{"n": 2}')
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer("orders.status", bootstrap_servers=broker.bootstrap_servers, group_id=None,
                                    auto_offset_reset="earliest", isolation_level="read_committed")
        await consumer.start()
        try:
            seen: list[bytes] = []
            for _ in range(40):
                batches = await consumer.getmany(timeout_ms=250)
                seen += [record.value for records in batches.values() for record in records]
                if len(seen) >= 2:
                    break
        finally:
            await consumer.stop()
        assert seen == [b'{"n": 1}', b'{"n": 2}']
