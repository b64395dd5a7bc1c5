"""payments and payment_events

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False, comment="minor units"),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("payment_method", sa.Text(), nullable=True),
        sa.Column("provider", sa.Text(), nullable=False, server_default="stripe"),
        sa.Column("provider_payment_id", sa.Text(), nullable=True),
        sa.Column("amount_received", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("failure_code", sa.Text(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("resource_namespace", sa.Text(), nullable=False),
        sa.Column("resource_name", sa.Text(), nullable=False),
        sa.Column("resource_uid", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("amount > 0", name="payments_amount_positive"),
        sa.CheckConstraint(
            "status IN ('pending','succeeded','failed','canceled','refunded','partially_refunded')",
            name="payments_status_known",
        ),
        sa.UniqueConstraint("provider_payment_id", name="payments_provider_payment_id_key"),
        sa.UniqueConstraint("resource_uid", name="payments_resource_uid_key"),
    )
    op.create_index("payments_order_id_idx", "payments", ["order_id"])
    op.create_table(
        "payment_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("stripe_event_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("provider_payment_id", sa.Text(), nullable=True),
        sa.Column("stripe_created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("processed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.UniqueConstraint("stripe_event_id", name="payment_events_stripe_event_id_key"),
    )
    op.create_index("payment_events_provider_payment_id_idx", "payment_events", ["provider_payment_id"])


def downgrade() -> None:
    op.drop_table("payment_events")
    op.drop_table("payments")
