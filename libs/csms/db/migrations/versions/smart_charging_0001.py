"""smart charging: profiles, charge points (electrical, presets, configuration), conventions, sites, reports

Revision ID: smart_charging_0001
"""
from alembic import op

revision = "smart_charging_0001"
down_revision = None
branch_labels = ("smart_charging",)
depends_on = None


SCHEMA = """
    CREATE TABLE sc_charge_points (
        charge_point_id   text PRIMARY KEY,
        preset            text,              -- the operator's choice for it (NULL: automatic)
        vendor            text,
        model             text,
        firmware_version  text,
        voltage           double precision,  -- supply, for A <-> W (NULL: 230 V)
        phases            integer,           -- NULL = 3
        configuration     jsonb,             -- smart-charging configuration keys as read: key -> value
        unknown_keys      jsonb,             -- keys the charge point said it does not know
        configuration_at  timestamptz,
        updated_at        timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE sc_profiles (
        charge_point_id  text NOT NULL,
        profile_id       bigint NOT NULL,
        connector_id     integer NOT NULL,
        purpose          text NOT NULL,
        stack_level      bigint NOT NULL,
        transaction_id   bigint,
        profile          jsonb NOT NULL,     -- csChargingProfiles as the charge point accepted it
        source           text NOT NULL,      -- set | remote_start | site
        seq              bigserial,
        installed_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (charge_point_id, profile_id)
    );
    CREATE INDEX sc_profiles_by_transaction ON sc_profiles (charge_point_id, transaction_id)
        WHERE transaction_id IS NOT NULL;
    CREATE TABLE sc_transactions (
        charge_point_id  text NOT NULL,
        transaction_id   bigint NOT NULL,
        connector_id     integer,
        started_at       timestamptz,
        stopped_at       timestamptz,
        measured_a       double precision,   -- latest draw from meter values
        measured_w       double precision,
        measured_at      timestamptz,
        PRIMARY KEY (charge_point_id, transaction_id)
    );
    CREATE INDEX sc_transactions_open ON sc_transactions (charge_point_id) WHERE stopped_at IS NULL;
    CREATE TABLE sc_settings (
        key         text PRIMARY KEY,
        value       jsonb NOT NULL,
        updated_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE sc_presets (
        name        text PRIMARY KEY,
        base        text NOT NULL,
        settings    jsonb NOT NULL,
        updated_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE sc_preset_rules (
        rule_id     bigserial PRIMARY KEY,
        preset      text NOT NULL,
        vendor      text,
        model       text,
        firmware    text,
        priority    integer NOT NULL DEFAULT 0,
        created_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE sc_sites (
        site_id      text PRIMARY KEY,
        name         text NOT NULL DEFAULT '',
        unit         text NOT NULL,
        limit_value  double precision NOT NULL,
        schedule     jsonb NOT NULL DEFAULT '[]',   -- [[epoch second, limit], ...]
        strategy     text NOT NULL DEFAULT 'fair',
        stack_level  bigint,
        created_at   timestamptz NOT NULL DEFAULT now(),
        updated_at   timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE sc_site_members (
        charge_point_id  text PRIMARY KEY,           -- a charge point belongs to one site at most
        site_id          text NOT NULL REFERENCES sc_sites ON DELETE CASCADE,
        priority         integer NOT NULL DEFAULT 0,
        max_limit        double precision,
        cap              jsonb,                      -- the cap it holds: [[epoch second, value], ...]
        cap_at           timestamptz
    );
    CREATE INDEX sc_site_members_by_site ON sc_site_members (site_id);
    CREATE TABLE sc_composite_reports (
        report_id        bigserial PRIMARY KEY,
        charge_point_id  text NOT NULL,
        connector_id     integer NOT NULL,
        requested_at     timestamptz NOT NULL,
        duration         bigint NOT NULL,
        unit             text,
        preset           text NOT NULL,
        predicted        jsonb,
        reported         jsonb,
        differences      jsonb NOT NULL,
        mismatch         boolean NOT NULL
    );
    CREATE INDEX sc_composite_reports_by_cp ON sc_composite_reports (charge_point_id, requested_at DESC);
"""


def _statements(sql: str) -> list[str]:
    """One statement per execute (asyncpg prepares each); comments never contain ';'."""
    return [statement.strip() for statement in sql.split(";") if statement.strip()]


def upgrade() -> None:
    for statement in _statements(SCHEMA):
        op.execute(statement)


def downgrade() -> None:
    for table in ("sc_composite_reports", "sc_site_members", "sc_sites", "sc_preset_rules", "sc_presets",
                  "sc_settings", "sc_transactions", "sc_profiles", "sc_charge_points"):
        op.execute(f"DROP TABLE {table}")
