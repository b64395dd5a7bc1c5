"""`kubepay migrate` against real PostgreSQL: idempotent, safe to run concurrently, the Go columns."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import pytest

from kubepay_sandbox.stack import Sandbox
from tests.helpers import fetch


async def _migrate(dsn: str) -> tuple[int, str]:
    env = {**os.environ, "DATABASE_URL": dsn}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "kubepay", "migrate", env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_concurrent_and_repeated_migrations_converge(sandbox: Sandbox) -> None:
    dsn = await sandbox.postgres.create_database("migrations_test")
    results = await asyncio.gather(_migrate(dsn), _migrate(dsn), _migrate(dsn))
    assert [code for code, _ in results] == [0, 0, 0], results
    assert (await _migrate(dsn))[0] == 0
    versions = await fetch(dsn, "SELECT version_num FROM alembic_version")
    assert versions == [{"version_num": "0004"}]
    columns = {r["column_name"]: r["data_type"] for r in await fetch(
        dsn, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'payments'")}
    assert columns["amount"] == "bigint"
    assert columns["id"] == "uuid"
    assert {"order_id", "user_id", "currency", "status", "payment_method", "provider_payment_id"} <= set(columns)


async def test_ledger_and_mirror_constraints(sandbox: Sandbox) -> None:
    dsn = await sandbox.postgres.create_database("constraints_test")
    assert (await _migrate(dsn))[0] == 0
    conn = await asyncpg.connect(dsn)
    try:
        insert_event = ("INSERT INTO payment_events (stripe_event_id, type, stripe_created, payload) "
                        "VALUES ('evt_1', 'x', 1, '{}')")
        await conn.execute(insert_event)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert_event)
        insert_payment = ("INSERT INTO payments (id, order_id, amount, currency, status, provider_payment_id, "
                          "resource_namespace, resource_name, resource_uid) VALUES "
                          "(gen_random_uuid(), '1', $1, 'usd', $2, $3, 'ns', 'n', $4)")
        await conn.execute(insert_payment, 100, "pending", "pi_1", "uid-1")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert_payment, 100, "pending", "pi_1", "uid-2")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert_payment, 100, "paid", "pi_2", "uid-3")
        await conn.execute(insert_payment, 99_999_999_999, "succeeded", "pi_3", "uid-4")
    finally:
        await conn.close()
