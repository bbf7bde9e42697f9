"""smart charging: a draw dated by its reading (per measurand), the unit of a recorded cap, a report's truncation

Revision ID: smart_charging_0002
Revises: smart_charging_0001
"""
from __future__ import annotations

from alembic import op

revision = "smart_charging_0002"
down_revision = "smart_charging_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # when each draw was read (the reading's own timestamp, skew-checked), so an older reading never replaces a
    # newer one and a stale draw is left out of planning
    op.execute("ALTER TABLE sc_transactions RENAME COLUMN measured_at TO measured_a_at")
    op.execute("ALTER TABLE sc_transactions ADD COLUMN measured_w_at timestamptz")
    op.execute("UPDATE sc_transactions SET measured_w_at = measured_a_at WHERE measured_w IS NOT NULL")
    op.execute("UPDATE sc_transactions SET measured_a_at = NULL WHERE measured_a IS NULL")
    # the unit of the cap a member holds (NULL: recorded before this column, in the site's unit of the time)
    op.execute("ALTER TABLE sc_site_members ADD COLUMN cap_unit text")
    # where the prediction a report compares ends early ({"at", "reason"}; NULL: it covers the window)
    op.execute("ALTER TABLE sc_composite_reports ADD COLUMN truncated jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE sc_composite_reports DROP COLUMN truncated")
    op.execute("ALTER TABLE sc_site_members DROP COLUMN cap_unit")
    op.execute("ALTER TABLE sc_transactions DROP COLUMN measured_w_at")
    op.execute("ALTER TABLE sc_transactions RENAME COLUMN measured_a_at TO measured_at")
