"""diagnostics: GetDiagnostics and UpdateFirmware requests with their history, uploaded files, hosted firmware.

Revision ID: diagnostics_0001
Revises:
"""
from __future__ import annotations

from alembic import op

revision = "diagnostics_0001"
down_revision = None
branch_labels = ("diagnostics",)
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE diag_requests (
            request_id      text PRIMARY KEY,
            seq             bigint GENERATED ALWAYS AS IDENTITY,
            charge_point_id text NOT NULL,
            location        text NOT NULL,
            protocol        text NOT NULL,
            target          text NOT NULL CHECK (target IN ('csms', 'external')),
            requested_at    timestamptz NOT NULL,
            answered_at     timestamptz,
            updated_at      timestamptz NOT NULL,
            file_name       text,
            status          text NOT NULL,
            "open"          boolean NOT NULL,
            closed_reason   text,
            file_id         text,
            start_time      timestamptz,
            stop_time       timestamptz,
            retries         integer,
            retry_interval  integer,
            error           text,
            grant_id        text,
            history         jsonb NOT NULL DEFAULT '[]'
        )
    """)
    op.execute("CREATE INDEX diag_requests_by_time ON diag_requests (requested_at DESC, seq DESC)")
    op.execute("CREATE INDEX diag_requests_by_cp ON diag_requests (charge_point_id, requested_at DESC, seq DESC)")
    op.execute('CREATE INDEX diag_requests_open ON diag_requests (charge_point_id, requested_at DESC, seq DESC) '
               'WHERE "open"')

    op.execute("""
        CREATE TABLE diag_firmware_updates (
            request_id      text PRIMARY KEY,
            seq             bigint GENERATED ALWAYS AS IDENTITY,
            charge_point_id text NOT NULL,
            location        text NOT NULL,
            firmware        text,
            retrieve_date   timestamptz NOT NULL,
            retries         integer,
            retry_interval  integer,
            requested_at    timestamptz NOT NULL,
            updated_at      timestamptz NOT NULL,
            status          text NOT NULL,
            "open"          boolean NOT NULL,
            closed_reason   text,
            error           text,
            history         jsonb NOT NULL DEFAULT '[]'
        )
    """)
    op.execute("CREATE INDEX diag_firmware_updates_by_time ON diag_firmware_updates (requested_at DESC, seq DESC)")
    op.execute("CREATE INDEX diag_firmware_updates_by_cp "
               "ON diag_firmware_updates (charge_point_id, requested_at DESC, seq DESC)")
    op.execute('CREATE INDEX diag_firmware_updates_open '
               'ON diag_firmware_updates (charge_point_id, requested_at DESC, seq DESC) WHERE "open"')

    op.execute("""
        CREATE TABLE diag_files (
            file_id         text PRIMARY KEY,
            seq             bigint GENERATED ALWAYS AS IDENTITY,
            grant_id        text NOT NULL UNIQUE,  -- one file per one-time upload grant
            kind            text NOT NULL,
            charge_point_id text NOT NULL,
            request_id      text NOT NULL,
            filename        text NOT NULL,
            size            bigint NOT NULL CHECK (size > 0),
            sha256          text NOT NULL,
            uploaded_at     timestamptz NOT NULL,
            protocol        text NOT NULL CHECK (protocol IN ('http', 'ftp'))
        )
    """)
    op.execute("CREATE INDEX diag_files_by_time ON diag_files (uploaded_at DESC, seq DESC)")
    op.execute("CREATE INDEX diag_files_by_cp ON diag_files (charge_point_id, uploaded_at DESC, seq DESC)")
    op.execute("CREATE INDEX diag_files_by_kind ON diag_files (kind, uploaded_at DESC, seq DESC)")
    op.execute("CREATE INDEX diag_files_by_request ON diag_files (request_id)")

    op.execute("""
        CREATE TABLE diag_firmware (
            name        text PRIMARY KEY,
            size        bigint NOT NULL CHECK (size > 0),
            sha256      text NOT NULL,
            uploaded_at timestamptz NOT NULL
        )
    """)


def downgrade() -> None:
    for table in ("diag_firmware", "diag_files", "diag_firmware_updates", "diag_requests"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
