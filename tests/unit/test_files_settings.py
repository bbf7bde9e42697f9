"""The public file URLs (FILES_PUBLIC_HTTP_URL / FILES_PUBLIC_FTP_URL) and their neighbours are checked when
the settings load: a bad value stops the process with one line and exit status 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from csms.config import Settings, describe_error

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value, normalised", [
    ("http://files.example.com", "http://files.example.com"),
    ("https://cs.example.com:8443/intake/", "https://cs.example.com:8443/intake"),
    ("HTTP://[2001:db8::1]:80/", "http://[2001:db8::1]:80"),
])
def test_public_http_url_accepted(value, normalised):
    assert Settings(files_public_http_url=value).files_public_http_url == normalised


@pytest.mark.parametrize("value, why", [
    ("files.example.com", "must start with http:// or https://"),
    ("ftp://files.example.com", "must start with http:// or https://"),
    ("http://", "has no host"),
    ("http://files:99999", "Port out of range"),
    ("http://files:0", "port 0"),
    ("http://user:pw@files", "credentials"),
    ("http://files/?a=1", "query"),
    ("http://files/#x", "query or fragment"),
])
def test_public_http_url_refused(value, why):
    with pytest.raises(ValidationError) as failed:
        Settings(files_public_http_url=value)
    line = describe_error(failed.value)
    assert line.startswith("invalid setting FILES_PUBLIC_HTTP_URL=") and why in line and "\n" not in line


@pytest.mark.parametrize("value, ok", [
    ("ftp://files.example.com:2121", True), ("ftp://files.example.com/", True), ("ftp://files/in", False),
    ("http://files", False), ("ftp://u:p@files", False),
])
def test_public_ftp_url(value, ok):
    if ok:
        assert Settings(files_public_ftp_url=value).files_public_ftp_url == value.rstrip("/")
    else:
        with pytest.raises(ValidationError, match="files_public_ftp_url"):
            Settings(files_public_ftp_url=value)


@pytest.mark.parametrize("name, field, value", [
    ("FILES_PUBLIC_HOST", "files_public_host", "files example"), ("FILES_PUBLIC_HOST", "files_public_host", "a/b"),
    ("FILES_FTP_PASSIVE_PORTS", "ftp_passive_ports", "30000-"),
    ("FILES_FTP_PASSIVE_PORTS", "ftp_passive_ports", "70000"),
])
def test_neighbouring_settings_refused(name, field, value):
    with pytest.raises(ValidationError) as failed:
        Settings(**{field: value})
    assert describe_error(failed.value).startswith(f"invalid setting {name}=")


def test_diagnostics_process_exits_2_with_one_line_on_a_bad_public_url():
    env = {**os.environ, "FILES_PUBLIC_HTTP_URL": "files.example.com:9080"}
    done = subprocess.run([sys.executable, "-m", "services.diagnostics"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "invalid setting FILES_PUBLIC_HTTP_URL='files.example.com:9080': Value error, must start with http:// "
        "or https://"]
