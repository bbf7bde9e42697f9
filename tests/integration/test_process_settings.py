"""Every entry point checks its settings first: a bad value is one line naming it and exit status 2; the
effective security-relevant settings are logged at start, never a secret."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from csms.config import Settings, load_settings
from csms.ops.lifecycle import security_summary
from tests.support.process import ROOT


def run(module: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", module], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


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
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
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
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("invalid setting ") and named in line
