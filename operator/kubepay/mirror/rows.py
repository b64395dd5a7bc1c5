"""The PostgreSQL mirror: one `payments` row per PaymentIntent and one `refunds` row per PaymentRefund."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from kubepay.model.phases import Phase
from kubepay.postgres import Database


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
    created_at: datetime | None = None  # read back from the row; never written by upsert
    updated_at: datetime | None = None

    @property
    def paid(self) -> bool:
        """Money was taken (it may have been refunded since)."""
        return self.status in _PAID


_PAID = frozenset(phase.db_status for phase in Phase if phase.paid)

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


class Rows:
    """The mirror's SQL; the resource is the source of truth, so every write is an idempotent upsert."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(self, row: PaymentRow | RefundRow) -> None:
        """Insert or update a resource's row: a payment's, or a refund's."""
        if isinstance(row, RefundRow):
            await self._db.fetch(
                _UPSERT_REFUND, row.id, row.payment_id, row.amount, row.currency, row.reason, row.status,
                row.provider_refund_id, row.failure_reason, row.resource_namespace, row.resource_name,
                row.resource_uid,
            )
            return
        await self._db.fetch(
            _UPSERT, row.id, row.order_id, row.user_id, row.amount, row.currency, row.status,
            row.payment_method, row.provider_payment_id, row.amount_received, row.amount_refunded,
            row.failure_code, row.failure_reason, row.resource_namespace, row.resource_name, row.resource_uid,
        )

    async def get_payment(self, payment_id: uuid.UUID) -> PaymentRow | None:
        rows = await self._db.fetch(
            f"SELECT {', '.join(PaymentRow.__dataclass_fields__)} FROM payments WHERE id = $1", payment_id
        )
        return PaymentRow(**dict(rows[0])) if rows else None

    async def find_by_order(self, order_id: str) -> list[PaymentRow]:
        """Every payment of one order (usually one), oldest first."""
        rows = await self._db.fetch(
            f"SELECT {', '.join(PaymentRow.__dataclass_fields__)} FROM payments WHERE order_id = $1 "
            "ORDER BY created_at, id",
            order_id,
        )
        return [PaymentRow(**dict(row)) for row in rows]

    async def find_resource_by_intent(self, provider_payment_id: str) -> tuple[str, str, str] | None:
        """(namespace, name, uid) of the PaymentIntent resource mirrored for a Stripe intent id."""
        rows = await self._db.fetch(
            "SELECT resource_namespace, resource_name, resource_uid FROM payments WHERE provider_payment_id = $1",
            provider_payment_id,
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None
