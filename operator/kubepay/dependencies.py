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

from aiokafka.errors import KafkaError

from kubepay import migrate, postgres, retry
from kubepay.config import Settings
from kubepay.kube.client import KubeClient
from kubepay.mirror.publisher import Publisher
from kubepay.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_DELAY = 5.0  # back within a few seconds of the dependency's return
UNAVAILABLE = (*retry.RETRYABLE, KafkaError)


async def wait_until_up(what: str, where: str, connect: Callable[[], Awaitable[T]]) -> T:
    """Call `connect` until it succeeds; log each failure as one line naming the dependency's address."""
    return await retry.until_done(connect, UNAVAILABLE, log, f"waiting for {what} at {where}", cap=MAX_DELAY)


async def store(settings: Settings) -> Store:
    """The PostgreSQL pool, once PostgreSQL answers; the schema migrated first if KUBEPAY_MIGRATE_ON_START."""
    pool = await wait_until_up("PostgreSQL", postgres.address(settings.database_url),
                               lambda: Store.connect(settings.database_url))
    if settings.migrate_on_start:
        try:
            await asyncio.to_thread(migrate.upgrade, settings.database_url)
        except BaseException:
            await pool.close()
            raise
    return pool


async def publisher(settings: Settings) -> Publisher:
    async def start() -> Publisher:
        producer = Publisher(settings)
        await producer.start()
        return producer

    return await wait_until_up("Kafka", settings.kafka_brokers, start)


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
