"""The CLI's exit statuses and one-line errors that need no running system."""
from __future__ import annotations

import pytest

from csms import cli
from csms.contracts.bus import CommandResult


@pytest.mark.parametrize("status, payload, code", [
    ("answered", {"status": "Accepted"}, 0),
    ("answered", {"status": "Scheduled"}, 0),
    ("answered", {"status": "RebootRequired"}, 0),
    ("answered", {"status": "Unlocked"}, 0),
    ("answered", {"configurationKey": []}, 0),  # an answer without a status
    ("answered", {}, 0),
    ("answered", {"status": "Rejected"}, 3),
    ("answered", {"status": "NotSupported"}, 3),
    ("answered", {"status": "UnlockFailed"}, 3),
    ("call_error", None, 4),
    ("invalid_response", {"status": "Maybe"}, 4),
    ("offline", None, 5),
    ("timeout", None, 5),
    ("unsupported", None, 5),
    ("invalid", None, 6),
    ("refused", None, 6),
])
def test_send_exit_codes(status, payload, code):
    assert cli.send_exit_code(CommandResult(status=status, payload=payload)) == code


@pytest.mark.parametrize("status, code", [(400, 2), (404, 3), (409, 3), (503, 5), (504, 5), (500, 1)])
def test_api_exit_codes(status, code):
    assert cli.api_exit_code(status) == code


@pytest.mark.parametrize("argv, code, message", [
    (["send", "CP-1", "Reset", '{"type":'], 2, "payload is not valid JSON"),
    (["send", "CP-1", "Reset", "[1]"], 2, "payload must be a JSON object"),
    (["send", "CP-1", "Reset", '{"type": "Sideways"}'], 2, "payload does not fit Reset"),
    (["send", "CP-1", "Bogus"], 2, "unknown action 'Bogus'"),
    (["send", "CP-1", "Heartbeat"], 2, "a charge point sends it"),
    (["send", "CP-1"], 2, "Missing argument 'ACTION'"),
    (["api", "nope", "x"], 2, "unknown service 'nope'"),
    (["api", "stations", "nope"], 2, "unknown operation 'nope' of stations"),
    (["api", "stations", "get_station"], 2, "charge_point_id: Field required"),
    (["api", "stations", "get_station", "charge_point_id=CP-1", "colour=red"], 2, "colour: unknown parameter"),
    (["api", "stations", "get_station", "charge_point_id"], 2, "must be name=value"),
    (["api", "stations", "list_stations", "limit=0"], 2, "limit: Input should be greater than or equal to 1"),
    (["operations", "nope"], 2, "unknown service 'nope'"),
    (["frobnicate"], 2, "no such command 'frobnicate'"),
    (["send", "CP-1", "Reset", "--timeout", "-1"], 2, "--timeout"),
    (["api-keys", "create", "--scope", "root"], 2, "'root' is not one of"),
    (["api-keys", "create"], 2, "Missing option '--scope'"),
    (["api-keys", "create", "--scope", "read", "--webhook-url", "ftp://x", "--webhook-secret", "s" * 20], 2,
     "webhook_url: Value error, must start with http"),
    (["api-keys", "revoke", "bad id!"], 2, "key_id: String should match pattern"),
    (["completion", "tcsh"], 2, "'tcsh' is not one of"),
    (["--http", "http://127.0.0.1:1/api/v1", "send", "CP-1", "Reset", '{"type": "Soft"}'], 1, "needs a key"),
    (["--http", "http://127.0.0.1:1/api/v1", "--api-key", "k", "send", "CP-1", "Reset", '{"type": "Soft"}'], 5,
     "cannot reach the HTTP API at http://127.0.0.1:1/api/v1"),
])
def test_usage_errors_are_one_line(capsys, argv, code, message):
    assert run(argv) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def run(argv: list[str]) -> int:
    """main(argv), with argparse's SystemExit turned into its status."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


def test_actions_lists_both_directions_and_owners(capsys):
    assert cli.main(["actions"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["BootNotification"][1:] == ["CP->CSMS", "stations", "-"]
    assert lines["RemoteStartTransaction"][1:] == ["CSMS->CP", "-", "transactions"]
    assert lines["DataTransfer"][1:] == ["both", "stations", "stations"]
    assert lines["GetCompositeSchedule"][-1] == "smart_charging"
    assert sum(1 for line in lines.values() if "(security" not in " ".join(line)) == 28


def test_operations_list_parameters_from_the_api_models(capsys):
    assert cli.main(["operations", "stations"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stations\n")
    assert "  get_station" in out and "charge_point_id: str, 1 to 255 characters (required)" in out
    assert "status: 'Accepted' | 'Pending' | 'Rejected' | null (required)" in out
    # bounds from the parameter models, pydantic's ge/le after a validator included
    assert "limit: int, 1 to 5000 (default 500) -- at most this many stations" in out
    assert "security_profile: int | null, 0 to 3 (required)" in out
    assert cli.main(["operations", "transactions"]) == 0
    out = capsys.readouterr().out
    assert "after: int | null, -2147483648 to 2147483647 (default None)" in out
    assert "limit: int, 1 to 10000 (default 1000)" in out and "id_tag: str, 1 to 20 characters (required)" in out
    assert cli.main(["operations", "diagnostics"]) == 0
    assert "command_timeout: float | null, > 0, <= 300 (default None)" in capsys.readouterr().out
    assert cli.main(["operations", "smart_charging"]) == 0
    assert "PydanticUndefined" not in capsys.readouterr().out  # a default_factory's value is shown
    assert cli.main(["operations"]) == 0
    out = capsys.readouterr().out
    assert {"stations", "transactions", "diagnostics", "smart_charging"} <= {
        line for line in out.splitlines() if not line.startswith(" ")}


def test_help_lists_commands_and_the_operations_of_every_service(capsys):
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("send", "api", "api-keys", "actions", "operations", "db", "completion"):
        assert f"  {command} " in out or f"  {command}\n" in out, command
    assert run(["api", "--help"]) == 0
    out = capsys.readouterr().out
    assert "stations" in out and "get_station" in out and "create_key" in out and "list_transactions" in out
    assert run(["api", "stations", "--help"]) == 0
    assert "get_station" in capsys.readouterr().out
    assert run(["api", "transactions", "list_transactions", "--help"]) == 0
    out = capsys.readouterr().out
    assert "limit: int, 1 to 1000 (default 100)" in out and "charge_point_id:" in out


def test_completion_scripts_and_completions(capsys, monkeypatch):
    assert run(["completion", "bash"]) == 0
    assert "_CSMS_COMPLETE" in capsys.readouterr().out
    from click.shell_completion import ShellComplete

    completer = ShellComplete(cli.cli, {}, "csms", "_CSMS_COMPLETE")
    assert [c.value for c in completer.get_completions(["send", "CP-1"], "Rese")] == ["ReserveNow", "Reset"]
    assert "stations" in [c.value for c in completer.get_completions(["api"], "st")]
    assert [c.value for c in completer.get_completions(["api", "stations"], "get_s")] == ["get_station"]
