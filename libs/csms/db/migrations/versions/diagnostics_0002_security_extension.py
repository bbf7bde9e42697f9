"""diagnostics: GetLog requests (security extension), signed firmware updates (SignedUpdateFirmware), and the
sequence the OCPP requestIds the CSMS chooses come from.

Revision ID: diagnostics_0002
Revises: diagnostics_0001
"""
from __future__ import annotations

from alembic import op

revision = "diagnostics_0002"
down_revision = "diagnostics_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # GetLog.requestId and SignedUpdateFirmware.requestId: chosen here, unique across charge points
    op.execute("CREATE SEQUENCE diag_ocpp_request_ids AS integer START 1 MAXVALUE 2147483647 CYCLE")
    op.execute("""
        CREATE TABLE diag_log_requests (
            request_id       text PRIMARY KEY,
            seq              bigint GENERATED ALWAYS AS IDENTITY,
            ocpp_request_id  integer NOT NULL,
            charge_point_id  text NOT NULL,
            log_type         text NOT NULL CHECK (log_type IN ('DiagnosticsLog', 'SecurityLog')),
            location         text NOT NULL,
            protocol         text NOT NULL,
            target           text NOT NULL CHECK (target IN ('csms', 'external')),
            requested_at     timestamptz NOT NULL,
            answered_at      timestamptz,
            updated_at       timestamptz NOT NULL,
            file_name        text,
            status           text NOT NULL,
            "open"           boolean NOT NULL,
            closed_reason    text,
            file_id          text,
            oldest_timestamp timestamptz,
            latest_timestamp timestamptz,
            retries          integer,
            retry_interval   integer,
            error            text,
            grant_id         text,
            history          jsonb NOT NULL DEFAULT '[]'
        )
    """)
    op.execute("CREATE INDEX diag_log_requests_by_time ON diag_log_requests (requested_at DESC, seq DESC)")
    op.execute("CREATE INDEX diag_log_requests_by_cp "
               "ON diag_log_requests (charge_point_id, requested_at DESC, seq DESC)")
    op.execute("CREATE INDEX diag_log_requests_by_ocpp_id ON diag_log_requests (charge_point_id, ocpp_request_id)")
    op.execute("CREATE INDEX diag_log_requests_open "
               'ON diag_log_requests (charge_point_id, requested_at DESC, seq DESC) WHERE "open"')

    op.execute("ALTER TABLE diag_firmware_updates ADD COLUMN signed boolean NOT NULL DEFAULT false")
    op.execute("ALTER TABLE diag_firmware_updates ADD COLUMN ocpp_request_id integer")
    op.execute("ALTER TABLE diag_firmware_updates ADD COLUMN install_date timestamptz")
    op.execute("ALTER TABLE diag_firmware_updates ADD COLUMN signing_fingerprint text")
    op.execute("CREATE INDEX diag_firmware_updates_by_ocpp_id "
               "ON diag_firmware_updates (charge_point_id, ocpp_request_id) WHERE ocpp_request_id IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS diag_firmware_updates_by_ocpp_id")
    for column in ("signing_fingerprint", "install_date", "ocpp_request_id", "signed"):
        op.execute(f"ALTER TABLE diag_firmware_updates DROP COLUMN IF EXISTS {column}")
    op.execute("DROP TABLE IF EXISTS diag_log_requests")
    op.execute("DROP SEQUENCE IF EXISTS diag_ocpp_request_ids")
