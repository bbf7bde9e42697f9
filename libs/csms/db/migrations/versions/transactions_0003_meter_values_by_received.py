"""transactions: meter values found by when they were received (``received_at``, the CSMS's clock), for retention.

Retention goes by when a reading was received, not by the charge point's clock alone: before a daily partition is
dropped, its rows received on or after the cutoff move to DEFAULT, and DEFAULT rows go once they were received
before it (services/transactions/maintenance.py). A BRIN index keeps finding them cheap (readings arrive in
``received_at`` order, so a few block ranges hold them; a BRIN index costs next to nothing per insert).
``received_at`` exists since transactions_0001 (NOT NULL, set from the time the gateway received the CALL), so
every existing row is covered as it is; the index is built on every partition, and on the ones created later.

Revision ID: transactions_0003
Revises: transactions_0002
"""
from __future__ import annotations

from alembic import op

revision = "transactions_0003"
down_revision = "transactions_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX tx_meter_values_by_received ON tx_meter_values USING brin (received_at)"
               " WITH (autosummarize = on)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS tx_meter_values_by_received")
