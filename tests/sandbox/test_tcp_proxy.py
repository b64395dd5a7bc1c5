"""The fault proxy: passes, refuses, resets and stalls, and a Kafka broker behind it is reached only through it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from kubepay_sandbox.child import free_port
from kubepay_sandbox.kafka import KafkaBroker
from kubepay_sandbox.tcp_proxy import TcpProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest_asyncio.fixture()
async def proxy() -> AsyncIterator[TcpProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with TcpProxy(server.sockets[0].getsockname()[1]) as tcp_proxy:
        yield tcp_proxy
    server.close()


async def _roundtrip(proxy: TcpProxy, payload: bytes = b"ping") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(payload)
    assert await asyncio.wait_for(reader.readexactly(len(payload)), 5) == payload
    return reader, writer


async def test_passes_both_ways(proxy: TcpProxy) -> None:
    _, writer = await _roundtrip(proxy, b"x" * 200_000)
    writer.close()


async def test_refuse_refuses_new_connections_until_passing_again(proxy: TcpProxy) -> None:
    _, before = await _roundtrip(proxy)
    await proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
    before.write(b"still")  # refusing leaves open connections alone
    await proxy.pass_through()
    _, after = await _roundtrip(proxy)
    for writer in (before, after):
        writer.close()


async def test_reset_aborts_open_connections(proxy: TcpProxy) -> None:
    reader, writer = await _roundtrip(proxy)
    proxy.reset()
    with pytest.raises(ConnectionResetError):
        writer.write(b"more")
        await writer.drain()
        if not await asyncio.wait_for(reader.read(10), 5):
            raise ConnectionResetError("closed without a reset")
    writer.close()
    await _roundtrip(proxy)  # new connections pass


async def test_stall_holds_bytes_and_delivers_them_once_passing(proxy: TcpProxy) -> None:
    reader, writer = await _roundtrip(proxy)
    proxy.stall()
    writer.write(b"held")
    late_reader, late_writer = await asyncio.open_connection("127.0.0.1", proxy.port)  # accepted while stalled
    late_writer.write(b"late")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.5)
    await proxy.pass_through()
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
    assert await asyncio.wait_for(late_reader.readexactly(4), 5) == b"late"
    for w in (writer, late_writer):
        w.close()


async def test_kafka_clients_reach_a_broker_only_through_its_proxy() -> None:
    broker_port = free_port()
    async with TcpProxy(broker_port) as proxy, KafkaBroker(port=broker_port, advertised_port=proxy.port) as broker:
        await broker.create_topics(["t"])
        producer = AIOKafkaProducer(bootstrap_servers=proxy.address, enable_idempotence=False, request_timeout_ms=2000)
        await producer.start()
        try:
            await producer.send_and_wait("t", json.dumps({"n": 1}).encode())
            await proxy.refuse()
            proxy.reset()
            with pytest.raises(KafkaError):
                await producer.send_and_wait("t", json.dumps({"n": 2}).encode())
            await proxy.pass_through()
            await producer.send_and_wait("t", json.dumps({"n": 3}).encode())
        finally:
            await producer.stop()
        assert [m.value["n"] for m in await broker.read_topic("t", min_messages=2, timeout=5)] == [1, 3]
