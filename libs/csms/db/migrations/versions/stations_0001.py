"""stations: stations and their registration, boot information and the last boot answer, boot overrides,
Basic-auth password hashes, configuration snapshots, DataTransfer vendors, firmware status.

Revision ID: stations_0001
Revises:
"""
from __future__ import annotations

from alembic import op

revision = "stations_0001"
down_revision = None
branch_labels = ("stations",)
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE st_stations (
            charge_point_id          text PRIMARY KEY CHECK (char_length(charge_point_id) BETWEEN 1 AND 255),
            vendor                   text,
            model                    text,
            serial_number            text,
            charge_box_serial_number text,
            firmware_version         text,
            iccid                    text,
            imsi                     text,
            meter_type               text,
            meter_serial_number      text,
            -- the last BootNotification answer and when it was given
            boot_status              text CHECK (boot_status IN ('Accepted', 'Pending', 'Rejected')),
            booted_at                timestamptz,
            boot_count               bigint NOT NULL DEFAULT 0,
            -- operator override of the answer, and registration under CSMS_BOOT_POLICY=registered
            boot_override            text CHECK (boot_override IN ('Accepted', 'Pending', 'Rejected')),
            registered               boolean NOT NULL DEFAULT false,
            registered_at            timestamptz,
            firmware_status          text,
            firmware_status_at       timestamptz,
            last_connected_at        timestamptz,
            last_disconnected_at     timestamptz,
            remote_address           text,
            created_at               timestamptz NOT NULL DEFAULT now(),
            updated_at               timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("""
        CREATE TABLE st_credentials (
            charge_point_id text PRIMARY KEY CHECK (char_length(charge_point_id) BETWEEN 1 AND 255),
            password_hash   text NOT NULL,
            -- a key sent with ChangeConfiguration whose answer never came: accepted next to the current one
            -- until the charge point authenticates with one of them
            pending_hash    text,
            source          text NOT NULL,
            set_at          timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("""
        CREATE TABLE st_configuration (
            charge_point_id text NOT NULL,
            key             text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 50),
            value           text CHECK (char_length(value) <= 500),
            readonly        boolean,
            source          text NOT NULL,  -- GetConfiguration | ChangeConfiguration
            status          text,           -- the ChangeConfiguration answer
            updated_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (charge_point_id, key)
        )
    """)
    op.execute("""
        CREATE TABLE st_datatransfer_vendors (
            vendor_id     text PRIMARY KEY CHECK (char_length(vendor_id) BETWEEN 1 AND 255),
            registered_at timestamptz NOT NULL DEFAULT now()
        )
    """)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS st_datatransfer_vendors")
    op.execute("DROP TABLE IF EXISTS st_configuration")
    op.execute("DROP TABLE IF EXISTS st_credentials")
    op.execute("DROP TABLE IF EXISTS st_stations")
