"""The PostgreSQL harness: a real server over TCP that survives stop/start and leaves nothing behind."""

from __future__ import annotations

import os

import asyncpg
import pytest

from kubepay_sandbox.postgres import PostgresServer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A reaped-late zombie is not a running server.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


async def test_lifecycle_query_database_restart_and_close() -> None:
    server = PostgresServer()
    try:
        await server.start()
        assert server.host == "127.0.0.1"
        assert server.user == "kubepay"
        conn = await asyncpg.connect(
            host=server.host, port=server.port, user=server.user, password=server.password, database="postgres"
        )
        try:
            assert await conn.fetchval("SELECT current_user") == "kubepay"
            assert (await conn.fetchval("SHOW server_version")).startswith("18")
        finally:
            await conn.close()

        dsn = await server.create_database("kubepay_test_1")
        assert dsn == server.dsn("kubepay_test_1")
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t VALUES (42)")
        finally:
            await conn.close()

        pid = server.pid
        assert pid is not None
        port = server.port
        await server.stop()
        assert not _alive(pid)
        with pytest.raises((OSError, asyncpg.PostgresError)):
            await asyncpg.connect(dsn, timeout=2)

        await server.start()  # an outage ends: same port, same data
        assert server.port == port
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT id FROM t") == 42
        finally:
            await conn.close()
        pid = server.pid
        assert pid is not None
    finally:
        await server.close()
    assert not _alive(pid)
    assert not server.workdir.exists()


async def test_wrong_password_is_refused() -> None:
    async with PostgresServer() as server:
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(
                host=server.host, port=server.port, user=server.user, password="nope", database="postgres"
            )
