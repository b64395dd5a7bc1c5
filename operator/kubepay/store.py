"""PostgreSQL mirror and ledger: the payments row of each resource and every Stripe event received."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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


@dataclass(frozen=True)
class PaymentRow:
    id: uuid.UUID
    order_id: str
    user_id: str | None
    amount: int
    currency: str
    status: str
    payment_method: str | None
    provider_payment_id: str | None
    amount_received: int
    amount_refunded: int
    failure_code: str | None
    failure_reason: str | None
    resource_namespace: str
    resource_name: str
    resource_uid: str
    created_at: datetime | None = None  # read back from the row; never written by upsert_payment
    updated_at: datetime | None = None


_UPSERT = """
INSERT INTO payments (id, order_id, user_id, amount, currency, status, payment_method, provider_payment_id,
                      amount_received, amount_refunded, failure_code, failure_reason,
                      resource_namespace, resource_name, resource_uid)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (resource_uid) DO UPDATE SET
    amount = EXCLUDED.amount, user_id = EXCLUDED.user_id, status = EXCLUDED.status,
    payment_method = COALESCE(EXCLUDED.payment_method, payments.payment_method),
    provider_payment_id = EXCLUDED.provider_payment_id, amount_received = EXCLUDED.amount_received,
    amount_refunded = EXCLUDED.amount_refunded, failure_code = EXCLUDED.failure_code,
    failure_reason = EXCLUDED.failure_reason, updated_at = now()
WHERE (payments.amount, payments.user_id, payments.status, payments.payment_method,
       payments.provider_payment_id, payments.amount_received, payments.amount_refunded,
       payments.failure_code, payments.failure_reason)
  IS DISTINCT FROM
      (EXCLUDED.amount, EXCLUDED.user_id, EXCLUDED.status,
       COALESCE(EXCLUDED.payment_method, payments.payment_method), EXCLUDED.provider_payment_id,
       EXCLUDED.amount_received, EXCLUDED.amount_refunded, EXCLUDED.failure_code, EXCLUDED.failure_reason)
"""

@dataclass(frozen=True)
class RefundRow:
    id: uuid.UUID
    payment_id: uuid.UUID
    amount: int
    currency: str
    reason: str | None
    status: str
    provider_refund_id: str | None
    failure_reason: str | None
    resource_namespace: str
    resource_name: str
    resource_uid: str


_UPSERT_REFUND = """
INSERT INTO refunds (id, payment_id, amount, currency, reason, status, provider_refund_id, failure_reason,
                     resource_namespace, resource_name, resource_uid)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (resource_uid) DO UPDATE SET
    status = EXCLUDED.status, amount = EXCLUDED.amount, provider_refund_id = EXCLUDED.provider_refund_id,
    failure_reason = EXCLUDED.failure_reason, updated_at = now()
WHERE (refunds.status, refunds.amount, refunds.provider_refund_id, refunds.failure_reason)
  IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.amount, EXCLUDED.provider_refund_id, EXCLUDED.failure_reason)
"""

_RECORD_EVENT = """
INSERT INTO payment_events (stripe_event_id, type, provider_payment_id, stripe_created, livemode, payload)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
ON CONFLICT (stripe_event_id) DO NOTHING
RETURNING id
"""


class Store:
    """A small asyncpg pool; every connection failure surfaces as StoreUnavailable."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, dsn: str, min_size: int = 1, max_size: int = 10) -> Store:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=10)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                asyncpg.InternalClientError) as exc:
            raise StoreUnavailable(f"PostgreSQL unreachable: {type(exc).__name__}") from None
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def _execute(self, query: str, *args: Any) -> Any:
        try:
            async with self._pool.acquire(timeout=10) as conn:
                return await conn.fetch(query, *args)
        except Exception as exc:
            if _unavailable(exc):
                raise StoreUnavailable(f"PostgreSQL unreachable: {type(exc).__name__}") from None
            if isinstance(exc, ValueError | asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
                raise StoreRejected(f"PostgreSQL refused the data: {exc}") from None
            raise

    async def ping(self) -> None:
        await self._execute("SELECT 1")

    async def upsert_payment(self, row: PaymentRow) -> None:
        await self._execute(
            _UPSERT, row.id, row.order_id, row.user_id, row.amount, row.currency, row.status,
            row.payment_method, row.provider_payment_id, row.amount_received, row.amount_refunded,
            row.failure_code, row.failure_reason, row.resource_namespace, row.resource_name, row.resource_uid,
        )

    async def get_payment(self, payment_id: uuid.UUID) -> PaymentRow | None:
        rows = await self._execute(
            f"SELECT {', '.join(PaymentRow.__dataclass_fields__)} FROM payments WHERE id = $1", payment_id
        )
        return PaymentRow(**dict(rows[0])) if rows else None

    async def find_by_order(self, order_id: str) -> list[PaymentRow]:
        """Every payment of one order (usually one), oldest first."""
        rows = await self._execute(
            f"SELECT {', '.join(PaymentRow.__dataclass_fields__)} FROM payments WHERE order_id = $1 "
            "ORDER BY created_at, id",
            order_id,
        )
        return [PaymentRow(**dict(row)) for row in rows]

    async def upsert_refund(self, row: RefundRow) -> None:
        await self._execute(
            _UPSERT_REFUND, row.id, row.payment_id, row.amount, row.currency, row.reason, row.status,
            row.provider_refund_id, row.failure_reason, row.resource_namespace, row.resource_name, row.resource_uid,
        )

    async def find_resource_by_intent(self, provider_payment_id: str) -> tuple[str, str, str] | None:
        """(namespace, name, uid) of the PaymentIntent resource mirrored for a Stripe intent id."""
        rows = await self._execute(
            "SELECT resource_namespace, resource_name, resource_uid FROM payments WHERE provider_payment_id = $1",
            provider_payment_id,
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    async def latest_event_created(self) -> int | None:
        rows = await self._execute("SELECT max(stripe_created) FROM payment_events")
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def record_event(self, event: dict[str, Any], provider_payment_id: str | None) -> bool:
        """Insert the event into the ledger; False if it was there already (a redelivery)."""
        rows = await self._execute(
            _RECORD_EVENT, event["id"], event["type"], provider_payment_id, int(event.get("created") or 0),
            bool(event.get("livemode", False)), json.dumps(event),
        )
        return bool(rows)

    async def record_invalid_event(self, event_id: str, event_type: str, error: str, body: str) -> None:
        """Ledger a signed event that failed validation: processed, outcome `invalid`, raw body kept as text."""
        await self._execute(
            "INSERT INTO payment_events (stripe_event_id, type, stripe_created, livemode, body, error, processed, "
            "processed_at, outcome) VALUES ($1, $2, 0, false, $3, $4, true, now(), 'invalid') "
            "ON CONFLICT (stripe_event_id) DO NOTHING",
            event_id, event_type, body.replace("\x00", ""), error,
        )

    async def failed_events(self, event_ids: Sequence[str] = ()) -> list[tuple[str, str]]:
        """(event id, body) of ledgered events not applied: invalid ones, or ones a crash left unprocessed."""
        rows = await self._execute(
            "SELECT stripe_event_id, COALESCE(body, payload::text) AS body FROM payment_events "
            "WHERE (outcome = 'invalid' OR NOT processed) AND (cardinality($1::text[]) = 0 "
            "OR stripe_event_id = ANY($1::text[])) ORDER BY id",
            list(event_ids),
        )
        return [(row["stripe_event_id"], row["body"]) for row in rows]

    async def reopen_event(self, event: dict[str, Any], provider_payment_id: str | None) -> None:
        """Put a replayed event back as received and unprocessed, now with its parsed payload."""
        await self._execute(
            "UPDATE payment_events SET payload = $2::jsonb, body = NULL, error = NULL, processed = false, "
            "outcome = NULL, type = $3, stripe_created = $4, livemode = $5, provider_payment_id = $6 "
            "WHERE stripe_event_id = $1",
            event["id"], json.dumps(event), event["type"], int(event["created"]), bool(event.get("livemode")),
            provider_payment_id,
        )

    async def event_processed(self, event_id: str) -> bool:
        rows = await self._execute("SELECT processed FROM payment_events WHERE stripe_event_id = $1", event_id)
        return bool(rows and rows[0]["processed"])

    async def mark_processed(self, event_id: str, outcome: str) -> None:
        """Record the outcome; `applied` is never overwritten (a concurrent duplicate sees `stale`)."""
        await self._execute(
            "UPDATE payment_events SET processed = true, processed_at = now(), outcome = $2 "
            "WHERE stripe_event_id = $1 AND outcome IS DISTINCT FROM 'applied'",
            event_id, outcome,
        )
