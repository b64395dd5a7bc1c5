"""Kafka producer: acks=all and idempotence by default, every send awaited before it counts."""

from __future__ import annotations

from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from kubepay import metrics
from kubepay.mirror.messages import Message


class PublishFailed(Exception):
    """The broker did not acknowledge a message; the caller retries later (nothing is recorded)."""


class PublishRejected(Exception):
    """The broker refused a message for good (too large, an invalid topic): repeating it cannot succeed."""


# Refusals about the message itself; anything else (connections, timeouts, leadership) is retried.
_REJECTED = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError, InvalidTopicError)


class KafkaSettings(Protocol):
    """What a producer needs of the settings (config.Settings has it)."""

    @property
    def kafka_brokers(self) -> str: ...

    @property
    def kafka_acks(self) -> str: ...

    @property
    def kafka_idempotence(self) -> bool: ...


def producer(settings: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    """Every kubepay producer: the configured acks (all by default) and idempotence, a bounded wait."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_brokers,
        acks="all" if settings.kafka_acks == "all" else int(settings.kafka_acks),
        enable_idempotence=settings.kafka_idempotence,
        request_timeout_ms=15000,
        client_id=client_id,
    )


class Publisher:
    def __init__(self, settings: KafkaSettings) -> None:
        self._producer = producer(settings, "kubepay")

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise PublishFailed(f"Kafka unreachable: {type(exc).__name__}") from None

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, messages: list[Message]) -> None:
        """Send all, then wait for every acknowledgement (in order per key, since keys pick partitions)."""
        try:
            futures = [
                await self._producer.send(m.topic, m.encoded_value(), key=m.key.encode(), headers=m.headers)
                for m in messages
            ]
            for future in futures:
                await future
        except _REJECTED as exc:
            raise PublishRejected(f"Kafka refused a message: {type(exc).__name__}") from None
        except KafkaError as exc:
            raise PublishFailed(f"Kafka refused a message: {type(exc).__name__}") from None
        for m in messages:
            metrics.KAFKA_MESSAGES.labels(m.topic).inc()
