"""ledger keeps signed events kubepay could not apply: their raw body and the error

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # An invalid event may not fit jsonb (a NUL character, very deep nesting): its body is kept as text.
    op.alter_column("payment_events", "payload", nullable=True)
    op.add_column("payment_events", sa.Column("body", sa.Text(), nullable=True,
                                              comment="the raw body of an event that failed validation"))
    op.add_column("payment_events", sa.Column("error", sa.Text(), nullable=True,
                                              comment="why the event could not be applied"))


def downgrade() -> None:
    op.execute("DELETE FROM payment_events WHERE payload IS NULL")
    op.drop_column("payment_events", "error")
    op.drop_column("payment_events", "body")
    op.alter_column("payment_events", "payload", nullable=False)
