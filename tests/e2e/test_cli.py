"""The CLI against a running system: in-process (``main([...])``) for answers and exit statuses, as a
subprocess for "one line on stderr, never a traceback"."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from csms import cli
from tests.support.chargepoint import connect

ROOT = Path(__file__).resolve().parents[2]


def environment(settings) -> dict[str, str]:
    return {"AMQP_URL": settings.amqp_url, "REDIS_URL": settings.redis_url, "CSMS_NAMESPACE": settings.namespace,
            "DATABASE_URL": settings.database_url, "DATABASE_SCHEMA": settings.database_schema}


@pytest.fixture
def csms(system, monkeypatch, capsys):
    """Run ``csms ...`` in-process against the test system: returns (exit status, stdout, stderr)."""
    for name, value in environment(system.settings).items():
        monkeypatch.setenv(name, value)

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(cli.main, list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.mark.ocpp("Reset", "UnlockConnector", "ClearCache")
async def test_send_exit_status_tells_accepted_from_the_rest(system, csms, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        code, out, err = await csms("send", cp_id, "Reset", '{"type": "Soft"}', "--timeout", "5")
        assert (code, json.loads(out)["payload"], err) == (0, {"status": "Accepted"}, "")
        cp.responses["Reset"] = {"status": "Rejected"}
        code, out, err = await csms("send", cp_id, "Reset", '{"type": "Hard"}')
        assert code == 3 and json.loads(out)["payload"] == {"status": "Rejected"}
        assert err == f"csms: Reset to {cp_id}: answered 'Rejected', not accepted\n"
        code, out, err = await csms("send", cp_id, "UnlockConnector", '{"connectorId": 0}')
        assert code == 6 and err.count("\n") == 1 and "connectorId must be greater than 0" in err

        async def fail(kwargs):
            raise NotImplementedError("no cache here")
        cp.responses["ClearCache"] = fail
        code, out, err = await csms("send", cp_id, "ClearCache")
        assert code == 4 and "call_error" in err and err.count("\n") == 1
    code, out, err = await csms("send", cp_id, "Reset", '{"type": "Soft"}')
    assert code == 5 and "offline" in err


async def test_send_refused_by_boot_state(system, csms, cp_id):
    await system.api("stations", "set_boot_status", charge_point_id=cp_id, status="Rejected")
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
        code, out, err = await csms("send", cp_id, "Reset", '{"type": "Soft"}')
    assert code == 6 and "refused" in err and "Rejected" in err and err.count("\n") == 1


async def test_api_answers_and_errors(system, csms, cp_id):
    async with connect(system.url(cp_id)) as cp:
        await cp.boot()
    code, out, err = await csms("api", "stations", "get_station", f"charge_point_id={cp_id}")
    assert code == 0 and json.loads(out)["vendor"] == "TestVendor" and err == ""
    code, out, err = await csms("api", "stations", "get_station", "charge_point_id=CP-unknown")
    assert (code, out) == (3, "") and err == "csms: stations get_station: 404 unknown station 'CP-unknown'\n"
    code, out, err = await csms("api", "stations", "set_boot_status", f"charge_point_id={cp_id}", "status=null")
    assert code == 0 and json.loads(out) == {"charge_point_id": cp_id, "status": None}
    # a service without declared parameter models still names what is wrong (the service checks)
    code, out, err = await csms("api", "transactions", "get_transaction")
    assert code == 2 and err.count("\n") == 1 and "transaction_id" in err


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "csms.cli", *argv], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("argv, env, code, message", [
    (["send", "CP-1", "Reset", "{not json"], {}, 2, "payload is not valid JSON"),
    (["send", "CP-1", "Reboot", "{}"], {}, 2, "unknown action 'Reboot'"),
    (["api", "stations", "get_station"], {}, 2, "charge_point_id: Field required"),
    (["send", "CP-1", "Reset", '{"type": "Soft"}'], {"AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}, 5,
     "cannot reach RabbitMQ"),
    (["db", "current"], {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/csms"}, 5, "cannot reach PostgreSQL"),
    (["send", "CP-1", "Reset", '{"type": "Soft"}'], {"GATEWAY_AUTH": "basci"}, 2, "GATEWAY_AUTH"),
])
def test_errors_are_one_line_never_a_traceback(argv, env, code, message):
    result = run_cli(*argv, env=env)
    assert result.returncode == code, result
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


async def test_api_keys_are_created_listed_and_revoked_for_the_http_api(system, csms):
    from tests.support.http_api import http_api

    code, out, err = await csms("api-keys", "create", "--name", "ops", "--scope", "admin")
    created = json.loads(out)
    assert code == 0 and created["scopes"] == ["admin"] and created["key"].startswith("csms_")
    assert "not shown again" in err and created["key"] not in err
    async with http_api(system) as (_, api):
        status, me = await api.get("/me", key=created["key"])
        assert status == 200 and me["key_id"] == created["key_id"]
        code, out, _ = await csms("api-keys", "list")
        listed = json.loads(out)
        assert code == 0 and created["key_id"] in [k["key_id"] for k in listed]
        assert all("key" not in k for k in listed)
        code, out, _ = await csms("api-keys", "revoke", created["key_id"])
        assert code == 0 and json.loads(out)["revoked_at"] is not None
        assert (await api.get("/me", key=created["key"]))[0] == 401
    code, out, err = await csms("api-keys", "revoke", "nosuchkey")
    assert (code, out) == (3, "") and err == "csms: api revoke_key: 404 unknown key 'nosuchkey'\n"


@pytest.mark.ocpp("Reset", "UnlockConnector")
async def test_send_and_api_keys_through_the_http_api(system, csms, cp_id, monkeypatch):
    from tests.support.http_api import http_api

    async with http_api(system) as (_, api), connect(system.url(cp_id)) as cp:
        await cp.boot()
        monkeypatch.setenv("CSMS_API_URL", api.base)
        monkeypatch.setenv("CSMS_API_KEY", api.keys["command"])
        monkeypatch.setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")  # the bus is out of reach: HTTP only
        code, out, err = await csms("send", cp_id, "Reset", '{"type": "Soft"}', "--timeout", "5")
        assert (code, json.loads(out)["payload"], err) == (0, {"status": "Accepted"}, "")
        cp.responses["Reset"] = {"status": "Rejected"}
        code, out, err = await csms("send", cp_id, "Reset", '{"type": "Hard"}')
        assert code == 3 and err == f"csms: Reset to {cp_id}: answered 'Rejected', not accepted\n"
        code, out, err = await csms("send", cp_id, "UnlockConnector", '{"connectorId": 0}')
        assert code == 6 and "connectorId" in err and err.count("\n") == 1
        code, out, err = await csms("send", "CP-offline", "Reset", '{"type": "Soft"}')
        assert code == 5 and "offline" in err
        code, out, err = await csms("api", "stations", "get_station", f"charge_point_id={cp_id}")
        assert code == 2 and "over the bus" in err
        code, out, err = await csms("api-keys", "list")
        assert code == 1 and "HTTP 403" in err and "needs admin" in err  # a command key is no admin
        monkeypatch.setenv("CSMS_API_KEY", api.keys["admin"])
        code, out, err = await csms("api-keys", "create", "--name", "remote", "--scope", "read")
        created = json.loads(out)
        assert code == 0 and created["scopes"] == ["read"]
        code, out, err = await csms("api-keys", "list")
        assert code == 0 and created["key_id"] in [k["key_id"] for k in json.loads(out)]
        code, out, err = await csms("api-keys", "revoke", created["key_id"])
        assert code == 0 and json.loads(out)["revoked_at"]
        code, out, err = await csms("--api-key", "wrong", "send", cp_id, "Reset", '{"type": "Soft"}')
        assert code == 1 and "HTTP 401" in err and "wrong" not in err
