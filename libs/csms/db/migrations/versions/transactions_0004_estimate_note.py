"""transactions: ``estimate_note`` -- why the system's closing estimate is not the last reading.

When the system closes a transaction the charge point never stopped (superseded, reconciled, an operator without
meter_stop), meter_stop is the last energy register reading, else meterStart. A last reading below meterStart
(a meter that was reset, a bad reading) would record negative energy: meter_stop is then meterStart and this
column says why. Adding a nullable column without a default changes the catalog only (no rows rewritten).

Revision ID: transactions_0004
Revises: transactions_0003
"""
from __future__ import annotations

from alembic import op

revision = "transactions_0004"
down_revision = "transactions_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE tx_transactions ADD COLUMN estimate_note text")


def downgrade() -> None:
    op.execute("ALTER TABLE tx_transactions DROP COLUMN IF EXISTS estimate_note")
