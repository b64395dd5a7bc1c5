"""a partial index on ledgered events not yet processed, for the kubepay_ledger_unprocessed_events gauge

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Almost every row is processed: the index holds only the few the controller counts every 15 s.
    op.create_index("payment_events_unprocessed_idx", "payment_events", ["received_at"],
                    postgresql_where=sa.text("NOT processed"))


def downgrade() -> None:
    op.drop_index("payment_events_unprocessed_idx", table_name="payment_events")
