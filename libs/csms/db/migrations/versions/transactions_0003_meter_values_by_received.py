"""transactions: meter values found by when they were received (``received_at``, the CSMS's clock), for retention.

Retention goes by when a reading was received, not by the charge point's clock alone: before a daily partition is
dropped, its rows received on or after the cutoff move to DEFAULT, and DEFAULT rows go once they were received
before it (services/transactions/maintenance.py). A BRIN index keeps finding them cheap (readings arrive in
``received_at`` order, so a few block ranges hold them; a BRIN index costs next to nothing per insert).
``received_at`` exists since transactions_0001 (NOT NULL, set from the time the gateway received the CALL), so
every existing row is covered as it is; the index is built on every partition, and on the ones created later.

Built without stopping meter value writes: ``CREATE INDEX`` on the partitioned table would hold a SHARE lock on
every partition (no MeterValues or StopTransaction stored) while it reads them all. Instead each partition's
index is built ``CONCURRENTLY`` outside the migration's transaction (writes go on; it waits for the writes in
progress to end), the parent's index is made ``ON ONLY`` the parent (no rows read; a SHARE lock on the parent for
that moment) and each partition's is attached to it; the parent's index is valid once every partition has one.
A partition the service created meanwhile gets one as well; one a failed run left invalid is built again.

Revision ID: transactions_0003
Revises: transactions_0002
"""
from __future__ import annotations

from alembic import context, op
from sqlalchemy import text

revision = "transactions_0003"
down_revision = "transactions_0002"
branch_labels = None
depends_on = None

PARENT = "tx_meter_values"
INDEX = "tx_meter_values_by_received"
METHOD = "USING brin (received_at) WITH (autosummarize = on)"


def _partitions(bind) -> list[str]:
    return list(bind.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        f" WHERE i.inhparent = '{PARENT}'::regclass ORDER BY c.relname")).scalars())


def _own_index(partition: str) -> str:
    """The name PostgreSQL gives the index it makes on a partition created later (``<table>_<column>_idx``)."""
    return f"{partition}_received_at_idx"


def _build(bind, partition: str) -> str:
    """The partition's index, built CONCURRENTLY unless a valid one is there (an invalid one is built again)."""
    name = _own_index(partition)
    valid = bind.execute(text(
        "SELECT x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid"
        " WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"), {"name": name}).scalar()
    if valid is False:
        op.execute(f"DROP INDEX CONCURRENTLY {name}")
    if valid is not True:
        op.execute(f"CREATE INDEX CONCURRENTLY {name} ON {partition} {METHOD}")
    return name


def _attached(bind, partition: str) -> bool:
    return bool(bind.execute(text(
        "SELECT 1 FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid"
        f" WHERE i.inhparent = '{INDEX}'::regclass AND x.indrelid = '{partition}'::regclass")).scalar())


def upgrade() -> None:
    if context.is_offline_mode():  # SQL for someone to run by hand: the plain statement (locks writes meanwhile)
        op.execute(f"CREATE INDEX {INDEX} ON {PARENT} {METHOD}")
        return
    bind = op.get_bind()
    with op.get_context().autocommit_block():  # CONCURRENTLY runs outside a transaction; each statement commits
        for partition in _partitions(bind):
            _build(bind, partition)
        op.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON ONLY {PARENT} {METHOD}")
        for partition in _partitions(bind):  # again: one created since has no index yet
            if not _attached(bind, partition):
                op.execute(f"ALTER INDEX {INDEX} ATTACH PARTITION {_build(bind, partition)}")
    valid = bind.execute(text(f"SELECT indisvalid FROM pg_index WHERE indexrelid = '{INDEX}'::regclass")).scalar()
    if not valid:
        raise RuntimeError(f"{INDEX} is not valid: a partition of {PARENT} has no index attached to it")


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")  # and the partitions' indexes attached to it
