"""security: charge point certificates, installed CA certificates, SignCertificate requests, security events.

Revision ID: security_0001
Revises:
"""
from __future__ import annotations

from alembic import op

revision = "security_0001"
down_revision = None
branch_labels = ("security",)
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE sec_certificates (
            fingerprint          text PRIMARY KEY,        -- SHA-256 of the DER certificate
            seq                  bigint GENERATED ALWAYS AS IDENTITY,
            serial_number        text NOT NULL,
            charge_point_id      text NOT NULL,
            subject              text NOT NULL,
            issuer               text NOT NULL,
            not_before           timestamptz NOT NULL,
            not_after            timestamptz NOT NULL,
            status               text NOT NULL CHECK (status IN
                                     ('issued', 'accepted', 'rejected', 'undelivered', 'superseded', 'revoked')),
            issued_by_csms       boolean NOT NULL,
            issued_at            timestamptz NOT NULL,
            updated_at           timestamptz NOT NULL,
            pem                  text NOT NULL,           -- the certificate (public); never a key
            error                text,
            renewal_requested_at timestamptz,
            renewal_status       text,
            revoked_reason       text
        )
    """)
    op.execute("CREATE INDEX sec_certificates_by_cp ON sec_certificates (charge_point_id, issued_at DESC, seq DESC)")
    op.execute("CREATE INDEX sec_certificates_by_serial ON sec_certificates (serial_number)")
    op.execute("CREATE INDEX sec_certificates_by_time ON sec_certificates (issued_at DESC, seq DESC)")
    op.execute("CREATE INDEX sec_certificates_expiring ON sec_certificates (not_after) WHERE status = 'accepted'")

    op.execute("""
        CREATE TABLE sec_installed_certificates (
            id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            charge_point_id  text NOT NULL,
            certificate_type text NOT NULL
                CHECK (certificate_type IN ('CentralSystemRootCertificate', 'ManufacturerRootCertificate')),
            hash_algorithm   text NOT NULL,
            issuer_name_hash text NOT NULL,
            issuer_key_hash  text,
            serial_number    text NOT NULL,
            subject          text,
            not_after        timestamptz,
            fingerprint      text,
            pem              text,
            source           text NOT NULL CHECK (source IN ('install', 'reported')),
            installed_at     timestamptz,
            reported_at      timestamptz
        )
    """)
    op.execute("CREATE INDEX sec_installed_by_cp ON sec_installed_certificates (charge_point_id, certificate_type)")

    op.execute("""
        CREATE TABLE sec_sign_requests (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            charge_point_id text NOT NULL,
            received_at     timestamptz NOT NULL,
            status          text NOT NULL CHECK (status IN ('Accepted', 'Rejected')),
            reason          text,
            csr_subject     text,
            fingerprint     text,
            serial_number   text
        )
    """)
    op.execute("CREATE INDEX sec_sign_requests_by_cp ON sec_sign_requests (charge_point_id, received_at DESC, id DESC)")
    op.execute("CREATE INDEX sec_sign_requests_by_time ON sec_sign_requests (received_at DESC, id DESC)")

    op.execute("""
        CREATE TABLE sec_events (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            charge_point_id text NOT NULL,
            type            text NOT NULL,
            "timestamp"     timestamptz NOT NULL,
            received_at     timestamptz NOT NULL,
            tech_info       text,
            critical        boolean NOT NULL
        )
    """)
    op.execute("CREATE INDEX sec_events_by_time ON sec_events (received_at DESC, id DESC)")
    op.execute("CREATE INDEX sec_events_by_cp ON sec_events (charge_point_id, received_at DESC, id DESC)")


def downgrade() -> None:
    for table in ("sec_events", "sec_sign_requests", "sec_installed_certificates", "sec_certificates"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
