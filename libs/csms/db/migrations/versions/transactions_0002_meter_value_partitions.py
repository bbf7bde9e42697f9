"""transactions: meter values in a table range-partitioned by the reading's own timestamp.

Daily partitions are created ahead (and dropped after METER_VALUES_RETENTION_DAYS) by the transactions
service's maintenance task; a DEFAULT partition takes any reading no daily partition covers (a charge
point clock in 2099 never fails an insert). Rows of the unpartitioned table are kept: they land in the
DEFAULT partition (and move into a daily one if the service creates that day's partition later).

Revision ID: transactions_0002
Revises: transactions_0001
"""
from __future__ import annotations

from alembic import op

revision = "transactions_0002"
down_revision = "transactions_0001"
branch_labels = None
depends_on = None

COLUMNS = ("id, charge_point_id, connector_id, transaction_id, reported_transaction_id, id_tag_folded, source, "
           "sampled_at, sampled_value, received_at, call_digest, seq")

UPGRADE = [
    "ALTER TABLE tx_meter_values RENAME TO tx_meter_values_unpartitioned",
    "ALTER TABLE tx_meter_values_unpartitioned RENAME CONSTRAINT tx_meter_values_once"
    " TO tx_meter_values_unpartitioned_once",
    "ALTER INDEX tx_meter_values_pkey RENAME TO tx_meter_values_unpartitioned_pkey",
    "ALTER INDEX tx_meter_values_by_tx RENAME TO tx_meter_values_unpartitioned_by_tx",
    # keep the id sequence: ids stay increasing across the change
    "ALTER SEQUENCE tx_meter_values_id_seq OWNED BY NONE",
    """
    CREATE TABLE tx_meter_values (
        id                       bigint NOT NULL DEFAULT nextval('tx_meter_values_id_seq'),
        charge_point_id          text NOT NULL,
        connector_id             integer NOT NULL,
        transaction_id           integer,
        reported_transaction_id  integer,
        id_tag_folded            text,
        source                   text NOT NULL CHECK (source IN ('MeterValues', 'StopTransaction')),
        sampled_at               timestamptz NOT NULL,
        sampled_value            jsonb NOT NULL,
        received_at              timestamptz NOT NULL,
        call_digest              text NOT NULL,
        seq                      integer NOT NULL,
        -- a resent MeterValues / StopTransaction stores nothing twice (the partition key must be part of it)
        CONSTRAINT tx_meter_values_once UNIQUE (charge_point_id, call_digest, seq, sampled_at)
    ) PARTITION BY RANGE (sampled_at)
    """,
    "CREATE TABLE tx_meter_values_default PARTITION OF tx_meter_values DEFAULT",
    "CREATE INDEX tx_meter_values_by_tx ON tx_meter_values (transaction_id, id)",
    "CREATE INDEX tx_meter_values_by_connector ON tx_meter_values (charge_point_id, connector_id, id)",
    "CREATE INDEX tx_meter_values_by_cp_time ON tx_meter_values (charge_point_id, sampled_at, id)",
    "CREATE INDEX tx_meter_values_by_tag_time ON tx_meter_values (id_tag_folded, sampled_at, id)"
    " WHERE id_tag_folded IS NOT NULL",
    f"INSERT INTO tx_meter_values ({COLUMNS}) SELECT {COLUMNS} FROM tx_meter_values_unpartitioned ORDER BY id",
    "ALTER SEQUENCE tx_meter_values_id_seq OWNED BY tx_meter_values.id",
    "DROP TABLE tx_meter_values_unpartitioned",
]

DOWNGRADE = [
    "ALTER SEQUENCE tx_meter_values_id_seq OWNED BY NONE",
    "ALTER TABLE tx_meter_values RENAME TO tx_meter_values_partitioned",
    "ALTER TABLE tx_meter_values_partitioned RENAME CONSTRAINT tx_meter_values_once"
    " TO tx_meter_values_partitioned_once",
    "ALTER INDEX tx_meter_values_by_tx RENAME TO tx_meter_values_partitioned_by_tx",
    """
    CREATE TABLE tx_meter_values (
        id                       bigint PRIMARY KEY DEFAULT nextval('tx_meter_values_id_seq'),
        charge_point_id          text NOT NULL,
        connector_id             integer NOT NULL,
        transaction_id           integer,
        reported_transaction_id  integer,
        id_tag_folded            text,
        source                   text NOT NULL CHECK (source IN ('MeterValues', 'StopTransaction')),
        sampled_at               timestamptz NOT NULL,
        sampled_value            jsonb NOT NULL,
        received_at              timestamptz NOT NULL,
        call_digest              text NOT NULL,
        seq                      integer NOT NULL,
        CONSTRAINT tx_meter_values_once UNIQUE (charge_point_id, call_digest, seq)
    )
    """,
    "CREATE INDEX tx_meter_values_by_tx ON tx_meter_values (transaction_id, id)",
    f"INSERT INTO tx_meter_values ({COLUMNS}) SELECT {COLUMNS} FROM tx_meter_values_partitioned ORDER BY id"
    " ON CONFLICT DO NOTHING",
    "ALTER SEQUENCE tx_meter_values_id_seq OWNED BY tx_meter_values.id",
    "DROP TABLE tx_meter_values_partitioned",  # and every partition with it
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
