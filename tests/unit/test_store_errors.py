"""Every connection-level failure of PostgreSQL is 'unavailable' (503, retried); data errors are refusals."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from kubepay.postgres import Database, StoreRejected, StoreUnavailable


class _Pool:
    """Stands in for asyncpg's pool: every query fails with the given error."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def acquire(self, timeout: float) -> _Pool:
        return self

    async def __aenter__(self) -> _Pool:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def fetch(self, *_: Any) -> Any:
        raise self.error


@pytest.mark.parametrize("error", [
    asyncpg.exceptions.InternalClientError("the pool is closing"),
    asyncpg.exceptions.InterfaceError("connection is closed"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
    asyncpg.exceptions.CrashShutdownError("crash"),
    asyncpg.exceptions.TooManyConnectionsError("too many clients"),
    ConnectionResetError(104, "reset"),
    TimeoutError(),
])
async def test_connection_level_errors_are_unavailable(error: BaseException) -> None:
    with pytest.raises(StoreUnavailable):
        await Database(_Pool(error)).ping()  # type: ignore[arg-type]


@pytest.mark.parametrize("error", [
    asyncpg.exceptions.StringDataRightTruncationError("value too long for type character(3)"),
    asyncpg.exceptions.CheckViolationError("violates check constraint"),
    asyncpg.exceptions.DataError("invalid input for query argument $1"),
])
async def test_data_errors_are_refusals(error: BaseException) -> None:
    with pytest.raises(StoreRejected):
        await Database(_Pool(error)).ping()  # type: ignore[arg-type]
