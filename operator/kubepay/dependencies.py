"""Connecting to PostgreSQL, Kafka and the Kubernetes API at start: wait for each, one log line per try.

A process started while a dependency is down (a pod rescheduled during an outage) waits with a short,
capped backoff and carries on by itself once the dependency is back, instead of crashing into a restart
loop or waiting for a supervisor's long retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

from aiokafka.errors import KafkaError

from kubepay.kube.client import KubeClient, KubeUnavailable
from kubepay.mirror.publisher import Publisher, PublishFailed
from kubepay.store import Store, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_DELAY = 0.5
MAX_DELAY = 5.0  # back within a few seconds of the dependency's return
UNAVAILABLE = (StoreUnavailable, PublishFailed, KubeUnavailable, KafkaError)


async def wait_until_up(what: str, where: str, connect: Callable[[], Awaitable[T]]) -> T:
    """Call `connect` until it succeeds; log each failure as one line naming the dependency's address."""
    delay = FIRST_DELAY
    while True:
        try:
            return await connect()
        except UNAVAILABLE as exc:
            log.warning("waiting for %s at %s: %s; retrying in %.1fs", what, where, exc, delay)
        await asyncio.sleep(delay)
        delay = min(MAX_DELAY, delay * 2)


def postgres_address(database_url: str) -> str:
    """host:port of a DSN, never its credentials."""
    parts = urlsplit(database_url)
    return f"{parts.hostname}:{parts.port or 5432}"


async def store(database_url: str) -> Store:
    return await wait_until_up("PostgreSQL", postgres_address(database_url), lambda: Store.connect(database_url))


async def publisher(brokers: str, acks: str, idempotence: bool) -> Publisher:
    async def start() -> Publisher:
        producer = Publisher(brokers, acks, idempotence)
        await producer.start()
        return producer

    return await wait_until_up("Kafka", brokers, start)


async def kube() -> KubeClient:
    client = await KubeClient.connect()

    async def ping() -> KubeClient:
        await client.ping()
        return client

    try:
        return await wait_until_up("the Kubernetes API", client.address, ping)
    except BaseException:
        await client.close()
        raise
