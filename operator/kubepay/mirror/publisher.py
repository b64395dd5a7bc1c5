"""Kafka producer: acks=all and idempotence by default, every send awaited before it counts."""

from __future__ import annotations

import time
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


MAX_UNACKNOWLEDGED = 10_000  # messages remembered as unacknowledged, for the metrics
FORGET_AFTER = 86_400.0

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
        self._brokers = settings.kafka_brokers
        # ce_id -> when an attempt to send it first failed; it goes once Kafka acknowledges the message
        self._unacknowledged: dict[str, float] = {}

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise PublishFailed(f"Kafka unavailable (brokers {self._brokers}): {type(exc).__name__}") from None

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, messages: list[Message]) -> None:
        """Send all, then wait for every acknowledgement (in order per key, since keys pick partitions)."""
        for m in messages:
            if m.ce_id in self._unacknowledged:
                metrics.KAFKA_PUBLISH_RETRIES.labels(m.topic).inc()
        try:
            futures = [
                await self._producer.send(m.topic, m.encoded_value(), key=m.key.encode(), headers=m.headers)
                for m in messages
            ]
            for future in futures:
                await future
        except _REJECTED as exc:
            self._failed(messages, "rejected")
            raise PublishRejected(f"Kafka refused a message: {type(exc).__name__}") from None
        except KafkaError as exc:
            self._failed(messages, "unavailable")
            raise PublishFailed(f"Kafka unavailable (brokers {self._brokers}): {type(exc).__name__}") from None
        for m in messages:
            self._unacknowledged.pop(m.ce_id, None)
            metrics.KAFKA_MESSAGES.labels(m.topic).inc()

    def _failed(self, messages: list[Message], reason: str) -> None:
        for m in messages:
            metrics.KAFKA_PUBLISH_FAILURES.labels(m.topic, reason).inc()
            if reason == "unavailable" and len(self._unacknowledged) < MAX_UNACKNOWLEDGED:
                self._unacknowledged.setdefault(m.ce_id, time.monotonic())

    def oldest_unacknowledged_age(self) -> float:
        """Seconds since the first failed attempt of the oldest message still waiting for Kafka (0: none waits).

        A message waits until its resource's next step sends it again; one waiting a day belongs to a resource
        deleted meanwhile (its milestone was lost): it is forgotten."""
        now = time.monotonic()
        for ce_id, since in list(self._unacknowledged.items()):
            if now - since > FORGET_AFTER:
                del self._unacknowledged[ce_id]
        return now - min(self._unacknowledged.values()) if self._unacknowledged else 0.0

    async def ping(self) -> None:
        """Raise PublishFailed unless a broker answers a metadata request (readiness bounds the wait)."""
        try:
            await self._producer.client.fetch_all_metadata()
        except KafkaError as exc:
            raise PublishFailed(f"Kafka unavailable (brokers {self._brokers}): {type(exc).__name__}") from None
