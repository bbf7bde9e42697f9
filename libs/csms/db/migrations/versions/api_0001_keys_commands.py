"""api: the HTTP API's own records -- API keys (hashed, with scopes and an optional webhook) and the asynchronous
commands sent through it (for polling and webhooks).

Revision ID: api_0001
Revises:
"""
from __future__ import annotations

from alembic import op

revision = "api_0001"
down_revision = None
branch_labels = ("api",)
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE api_keys (
            key_id          text PRIMARY KEY CHECK (char_length(key_id) BETWEEN 1 AND 64),
            name            text NOT NULL CHECK (char_length(name) <= 100),
            -- SHA-256 of the whole key (keys are 256-bit random: a fast hash is enough); the key itself is
            -- shown once, when it is created, and never stored
            key_hash        text NOT NULL UNIQUE,
            scopes          text[] NOT NULL,
            created_at      timestamptz NOT NULL,
            created_by      text,
            revoked_at      timestamptz,
            last_used_at    timestamptz,
            -- where results of this key's asynchronous commands are POSTed, and the secret that signs them
            -- (HMAC-SHA256; chosen by the key's owner, needed in clear to sign)
            webhook_url     text,
            webhook_secret  text
        )
    """)
    op.execute("""
        CREATE TABLE api_commands (
            command_id       text PRIMARY KEY,
            key_id           text NOT NULL,
            charge_point_id  text NOT NULL,
            action           text NOT NULL,
            status           text NOT NULL,           -- pending, or the CommandResult status
            timeout          double precision NOT NULL,
            created_at       timestamptz NOT NULL,
            deadline         timestamptz NOT NULL,    -- pending beyond this: lost (the API process stopped)
            completed_at     timestamptz,
            result           jsonb,                   -- the CommandResult
            callback_url     text,
            webhook_status   text,                    -- pending | delivered | failed | dropped
            webhook_attempts integer NOT NULL DEFAULT 0,
            webhook_error    text
        )
    """)
    op.execute("CREATE INDEX api_commands_created_at ON api_commands (created_at)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS api_commands")
    op.execute("DROP TABLE IF EXISTS api_keys")
