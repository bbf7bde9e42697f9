"""Every entry point checks its settings first: a bad value is one line naming it and exit status 2; the
effective security-relevant settings are logged at start, never a secret."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pydantic import ValidationError

from csms.config import PROCESS_PARTS, Settings, describe_error, is_secret, load_settings, mask_credentials
from csms.ops.lifecycle import security_summary
from tests.support.process import ROOT


def run(module: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", module], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def refused(env: dict[str, str], monkeypatch, capsys) -> str:
    """The one line load_settings() prints for ``env`` before it exits 2."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    return line


@pytest.mark.parametrize("module", ["services.gateway", "services.stations", "services.all", "services.api"])
def test_a_bad_setting_exits_2_with_one_line_naming_it(module):
    result = run(module, GATEWAY_AUTH="basci")
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines == ["invalid setting GATEWAY_AUTH='basci': Input should be 'none' or 'basic'"]


def test_a_database_pool_smaller_than_its_minimum_stops_a_process_with_one_line():
    """It was clamped quietly (a pool of DATABASE_POOL_MAX whatever DATABASE_POOL_MIN asked for)."""
    # nothing to reach: without the check the process would wait for its servers (and the test time out)
    result = run("services.transactions", DATABASE_POOL_MIN="8", DATABASE_POOL_MAX="4", OPS_PORT="0",
                 DATABASE_URL="postgresql://postgres@127.0.0.1:1/none", AMQP_URL="amqp://guest:guest@127.0.0.1:1/",
                 REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines == ["invalid setting DATABASE_POOL_MIN (8) must not exceed DATABASE_POOL_MAX (4)"]


@pytest.mark.parametrize("env, named", [
    ({"OPS_PORT": "70000"}, "OPS_PORT='70000'"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml'"),
    ({"GATEWAY_DRAIN_SECONDS": "soon"}, "GATEWAY_DRAIN_SECONDS='soon'"),
    ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER='jaeger'"),
    ({"RECONNECT_BACKOFF_INITIAL": "10", "RECONNECT_BACKOFF_MAX": "1"},
     "RECONNECT_BACKOFF_INITIAL must not exceed RECONNECT_BACKOFF_MAX"),
    ({"DATABASE_POOL_MIN": "20"}, "DATABASE_POOL_MIN (20) must not exceed DATABASE_POOL_MAX (10)"),
    ({"DATABASE_POOL_MIN": "3", "DATABASE_POOL_MAX": "2"},
     "DATABASE_POOL_MIN (3) must not exceed DATABASE_POOL_MAX (2)"),
    ({"DATABASE_POOL_MAX": "0"}, "DATABASE_POOL_MAX='0'"),
    ({"DATABASE_POOL_MIN": "101", "DATABASE_POOL_MAX": "500"}, "DATABASE_POOL_MIN='101'"),
    ({"DATABASE_SCHEMA": "Bad-Schema"}, "DATABASE_SCHEMA='Bad-Schema'"),
    ({"DATABASE_MIGRATE": "maybe"}, "DATABASE_MIGRATE='maybe'"),
])
def test_operations_settings_are_checked(env, named, monkeypatch, capsys):
    line = refused(env, monkeypatch, capsys)
    assert line.startswith("invalid setting ") and named in line


def test_security_summary_says_what_is_open_and_never_a_secret():
    settings = Settings(gateway_auth="none", files_operator_token="s3cret-token-value",
                        amqp_url="amqp://csms:rabbit-pass@rabbitmq:5672/", redis_url="redis://:redis-pass@redis:6379/0",
                        database_url="postgresql://csms:pg-pass@postgres:5432/csms")
    lines = security_summary(settings)
    text = "\n".join(line for _, line in lines)
    for secret in ("s3cret-token-value", "rabbit-pass", "redis-pass", "pg-pass"):
        assert secret not in text
    assert "GATEWAY_AUTH=none" in text and "FILES_OPERATOR_TOKEN set" in text
    assert any(level >= 30 and "NOT authenticated" in line for level, line in lines)
    assert any(level >= 30 and "clear text" in line for level, line in lines)  # no TLS for charge points
    closed = security_summary(settings.replace(gateway_auth="basic"))
    assert not any("NOT authenticated" in line for _, line in closed)
    assert any("FILES_OPERATOR_TOKEN is not set" in line and "generated" in line for _, line in
               security_summary(settings.replace(files_operator_token="")))
    # a process only hears about the parts it runs
    assert not any("NOT authenticated" in line for _, line in security_summary(settings, "stations"))
    per_part = security_summary(settings.replace(amqp_service_urls={"gateway": "amqp://gw:gw-pass@rabbitmq/"}))
    assert any("gateway (amqp://gw:***@rabbitmq/)" in line for _, line in per_part), per_part
    assert "gw-pass" not in "\n".join(line for _, line in per_part)


def test_the_defaults_admit_no_charge_point_without_credentials():
    """Secure by default: a fresh deployment asks every charge point for credentials (profile 1 at least)."""
    defaults = Settings()
    assert (defaults.gateway_auth, defaults.gateway_min_security_profile) == ("basic", 1)


@pytest.mark.parametrize("env, named", [
    ({"GATEWAY_MIN_SECURITY_PROFILE": "4"}, "GATEWAY_MIN_SECURITY_PROFILE='4'"),
    ({"GATEWAY_MIN_SECURITY_PROFILE": "2"}, "GATEWAY_MIN_SECURITY_PROFILE=2 needs TLS"),
    ({"GATEWAY_TLS_CERT_FILE": "/x.pem"}, "GATEWAY_TLS_CERT_FILE/GATEWAY_TLS_KEY_FILE: set both or neither"),
    ({"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8,nonsense"}, "'nonsense' is not an IP address or network"),
    ({"AMQP_SERVICE_URLS": '{"gateway": "http://x"}'}, "must start with amqp:// or amqps://"),
    ({"STATIONS_AUTH_WORKERS": "0"}, "STATIONS_AUTH_WORKERS='0'"),
    ({"FILES_PUBLIC_FTP_URL": "sftp://files"}, "must start with ftp:// or ftps://"),
])
def test_security_settings_are_checked(env, named, monkeypatch, capsys):
    line = refused(env, monkeypatch, capsys)
    assert line.startswith("invalid setting ") and named in line


def test_a_setting_that_is_not_even_json_exits_2_with_one_line():
    """pydantic-settings parses AMQP_SERVICE_URLS as JSON before validating it: that failure is one line too."""
    result = run("services.gateway", AMQP_SERVICE_URLS='{"gateway":')
    assert result.returncode == 2, result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines == ["invalid setting AMQP_SERVICE_URLS: not valid JSON (Expecting value at character 11)"], lines


MARK = "S3cretMark"  # in every secret value below: it must never reach the error line

# every setting that holds a secret or credentials, with a value it refuses
SECRET_VALUES = {
    "FILES_OPERATOR_TOKEN": MARK * 60,  # too long
    "API_BOOTSTRAP_ADMIN_KEY": f"{MARK} with spaces in it and long enough",
    "GATEWAY_TLS_KEY_PASSWORD": MARK * 120,
    "FILES_TLS_KEY_PASSWORD": MARK * 120,
    "SECURITY_CA_KEY_PASSWORD": MARK * 120,
    "FIRMWARE_SIGNING_KEY_PASSWORD": MARK * 120,
    "AMQP_URL": f"http://csms:{MARK}@rabbitmq/",
    "REDIS_URL": f"http://:{MARK}@redis/",
    "DATABASE_URL": f"mysql://csms:{MARK}@db/csms",
    "AMQP_SERVICE_URLS": f'{{"gateway": "http://u:{MARK}@x/"}}',
    "FILES_PUBLIC_HTTP_URL": f"http://operator:{MARK}@files/",
    "FILES_PUBLIC_FTP_URL": f"ftp://{MARK}@files",
}


def test_every_secret_setting_is_covered_below():
    secrets = {_alias(name) for name in Settings.model_fields if is_secret(name)}
    assert secrets <= set(SECRET_VALUES), secrets - set(SECRET_VALUES)


def _alias(name: str) -> str:
    return str(Settings.model_fields[name].validation_alias.choices[0])


@pytest.mark.parametrize("variable", sorted(SECRET_VALUES))
def test_an_invalid_secret_is_never_echoed(variable, monkeypatch, capsys):
    line = refused({variable: SECRET_VALUES[variable]}, monkeypatch, capsys)
    assert line.startswith("invalid setting ") and variable in line, line
    assert MARK not in line, line


def test_credentials_are_masked_and_secrets_hidden_in_the_line():
    with pytest.raises(ValidationError) as failed:
        Settings(amqp_service_urls={"gateway": "http://u:secretpw@x/"})
    assert "AMQP_SERVICE_URLS={'gateway': 'http://u:***@x/'}" in describe_error(failed.value)
    with pytest.raises(ValidationError) as failed:
        Settings(files_operator_token="t" * 600)
    assert describe_error(failed.value) == \
        "invalid setting FILES_OPERATOR_TOKEN=<hidden>: String should have at most 512 characters"
    assert mask_credentials("redis://:pw@r/0 amqps://gw:pw@mq/ https://token@h/") == \
        "redis://:***@r/0 amqps://gw:***@mq/ https://***@h/"


def test_a_misspelt_part_in_amqp_service_urls_is_refused_naming_the_parts(monkeypatch, capsys):
    """A part not named falls back to AMQP_URL (the shared credentials): a typo must not do that silently."""
    line = refused({"AMQP_SERVICE_URLS": '{"gatway": "amqps://gw:pw@mq/"}'}, monkeypatch, capsys)
    assert line == ("invalid setting AMQP_SERVICE_URLS={'gatway': 'amqps://gw:***@mq/'}: Value error, 'gatway' is "
                    "not a part name; the parts are gateway, stations, transactions, smart_charging, diagnostics, "
                    "security, api")


def test_the_part_names_are_the_parts_that_run():
    from services.registry import load_services

    assert set(PROCESS_PARTS) == {"gateway", *(service.name for service in load_services())}
    for part in PROCESS_PARTS:
        url = f"amqp://{part}:pw@mq/"
        assert Settings(amqp_service_urls={part: url}).for_part(part).amqp_url == url


@pytest.mark.parametrize("env, named", [
    ({"UPLOAD_MAX_BYTES": str(5 * 1024 ** 3)}, "UPLOAD_MAX_BYTES="),
    ({"UPLOAD_TTL": str(8 * 86400)}, "UPLOAD_TTL="),
    ({"FILES_OPERATOR_TOKEN": "short-token"}, "FILES_OPERATOR_TOKEN=<hidden>: Value error, must be 16-512"),
    ({"FILES_OPERATOR_TOKEN": "sixteen chars ok but spaced"}, "FILES_OPERATOR_TOKEN=<hidden>"),
])
def test_sizes_lifetimes_and_the_operator_token_are_bounded(env, named, monkeypatch, capsys):
    line = refused(env, monkeypatch, capsys)
    assert line.startswith("invalid setting ") and named in line, line


def test_every_numeric_setting_has_both_bounds():
    import annotated_types

    for name, field in Settings.model_fields.items():
        if field.annotation in (int, float):
            kinds = {type(m) for m in field.metadata}
            assert kinds & {annotated_types.Ge, annotated_types.Gt}, f"{name} has no lower bound"
            assert kinds & {annotated_types.Le, annotated_types.Lt}, f"{name} has no upper bound"
    assert Settings(upload_max_bytes=4 * 1024 ** 3, upload_ttl=7 * 86400, files_operator_token="x" * 16)
