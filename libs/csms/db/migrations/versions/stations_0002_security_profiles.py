"""stations: the OCPP security profile of each station (security whitepaper): the recorded profile it is never
accepted below, the one a ChangeConfiguration(SecurityProfile) asked for until it connects at it, and the profile of
its last connection.

Revision ID: stations_0002
Revises: stations_0001
"""
from __future__ import annotations

from alembic import op

revision = "stations_0002"
down_revision = "stations_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        ALTER TABLE st_stations
            -- never accepted below this (NULL: the deployment's floor, GATEWAY_MIN_SECURITY_PROFILE)
            ADD COLUMN security_profile          smallint CHECK (security_profile BETWEEN 0 AND 3),
            ADD COLUMN security_profile_source   text,
            ADD COLUMN security_profile_at       timestamptz,
            -- accepted SecurityProfile not yet connected at: becomes security_profile at the first connection at it
            ADD COLUMN security_profile_pending  smallint CHECK (security_profile_pending BETWEEN 0 AND 3),
            -- the profile the last connection was accepted at
            ADD COLUMN connected_profile         smallint CHECK (connected_profile BETWEEN 0 AND 3)
    """)


def downgrade() -> None:
    op.execute("""
        ALTER TABLE st_stations
            DROP COLUMN IF EXISTS connected_profile,
            DROP COLUMN IF EXISTS security_profile_pending,
            DROP COLUMN IF EXISTS security_profile_at,
            DROP COLUMN IF EXISTS security_profile_source,
            DROP COLUMN IF EXISTS security_profile
    """)
