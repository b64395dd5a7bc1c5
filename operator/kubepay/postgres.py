"""The PostgreSQL connection pool, with every failure sorted into an outage (retry) or a refusal (never retry)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import asyncpg


class StoreUnavailable(Exception):
    """PostgreSQL could not be reached; the caller answers 503 or retries."""


class StoreRejected(Exception):
    """PostgreSQL refused the data itself (too long, out of range): retrying cannot help."""


def _unavailable(exc: BaseException) -> bool:
    """Connection-level trouble: refused, reset, shut down, restarting, out of connections, client state."""
    if isinstance(exc, ValueError):  # asyncpg's client-side encoding errors are about the data
        return False
    return isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError
                      | asyncpg.PostgresConnectionError | asyncpg.exceptions.OperatorInterventionError
                      | asyncpg.exceptions.InsufficientResourcesError)


async def _keep_session(_: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond what asyncpg always does (roll back an open transaction).

    asyncpg's default sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every release,
    a round trip per query. Database only runs single statements in autocommit: no session settings,
    cursors, LISTEN or session advisory locks to undo (the migration's lock is transaction-scoped, on
    alembic's own connection).
    """


def address(dsn: str) -> str:
    """host:port of a DSN, never its credentials (for messages that name the dependency)."""
    parts = urlsplit(dsn)
    return f"{parts.hostname}:{parts.port or 5432}"


class Database:
    """A small asyncpg pool; every connection failure surfaces as StoreUnavailable."""

    def __init__(self, pool: asyncpg.Pool, where: str | None = None) -> None:
        self._pool = pool
        self._unreachable = f"PostgreSQL at {where} unreachable" if where else "PostgreSQL unreachable"

    @classmethod
    async def connect(cls, dsn: str, min_size: int = 1, max_size: int = 10) -> Database:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=10,
                                             reset=_keep_session)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                asyncpg.InternalClientError) as exc:
            raise StoreUnavailable(f"PostgreSQL at {address(dsn)} unreachable: {type(exc).__name__}") from None
        return cls(pool, address(dsn))

    async def close(self) -> None:
        await self._pool.close()

    async def fetch(self, query: str, *args: Any) -> Any:
        try:
            async with self._pool.acquire(timeout=10) as conn:
                return await conn.fetch(query, *args)
        except Exception as exc:
            if _unavailable(exc):
                raise StoreUnavailable(f"{self._unreachable}: {type(exc).__name__}") from None
            if isinstance(exc, ValueError | asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
                raise StoreRejected(f"PostgreSQL refused the data: {exc}") from None
            raise

    async def ping(self) -> None:
        await self.fetch("SELECT 1")
