"""Command line: send commands to charge points, call service APIs, list what the system offers.

    csms actions                       # the OCPP actions, both directions, and the service owning each
    csms operations [SERVICE]          # each service's API operations and their parameters
    csms send CP-1 Reset '{"type": "Soft"}' --timeout 10
    csms api stations get_station charge_point_id=CP-1
    csms db upgrade                    # create the database if missing and migrate it to every head
    csms db current                    # the revisions the database is at

Every error is one line on stderr. Exit status:

    0  answered and accepted (send: the charge point accepted; api: the service answered)
    1  unexpected failure; `db current`: the schema is behind the code
    2  usage: unknown command/action/service/operation, bad JSON, a missing or unknown parameter, a bad setting
    3  answered but not accepted (send: Rejected, NotSupported ...; api: 404/409, the system said no)
    4  the charge point answered with a CALLERROR or with a payload that breaks the schema
    5  not delivered: charge point offline, no answer in time, service not running, system unreachable
    6  refused before sending: an OCPP rule forbids it (e.g. the charge point is Pending or Rejected)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import types
import typing
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError

from csms import ocpp16
from csms.client import ApiCallFailed, CsmsClient
from csms.config import Settings, load_settings
from csms.contracts.bus import CommandResult
from csms.ocpp16 import OcppError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_ACCEPTED, EXIT_CALL_ERROR, EXIT_UNREACHABLE, EXIT_REFUSED = range(7)
CONNECT_TIMEOUT = 10.0

# answers that mean "will do" (ChangeAvailability Scheduled, ChangeConfiguration RebootRequired, UnlockConnector
# Unlocked); an answer without a status (GetConfiguration, GetDiagnostics ...) is accepted too
ACCEPTED = frozenset({"Accepted", "Scheduled", "RebootRequired", "Unlocked"})
EXIT_BY_STATUS = {
    "call_error": EXIT_CALL_ERROR, "invalid_response": EXIT_CALL_ERROR,
    "offline": EXIT_UNREACHABLE, "timeout": EXIT_UNREACHABLE, "unsupported": EXIT_UNREACHABLE,
    "invalid": EXIT_REFUSED, "refused": EXIT_REFUSED,
}


class Failure(Exception):
    """Ends the command with one line on stderr and an exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def send_exit_code(result: CommandResult) -> int:
    if result.ok:
        status = (result.payload or {}).get("status")
        return EXIT_OK if status is None or status in ACCEPTED else EXIT_NOT_ACCEPTED
    return EXIT_BY_STATUS.get(result.status, EXIT_ERROR)


def api_exit_code(status: int) -> int:
    if status == 400:
        return EXIT_USAGE
    if status in (404, 409):
        return EXIT_NOT_ACCEPTED
    if status in (503, 504):
        return EXIT_UNREACHABLE
    return EXIT_ERROR


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# ---- the system, reached over RabbitMQ ------------------------------------------------------------
class _Connected:
    """CsmsClient with a bounded connect and one-line failures."""

    def __init__(self, settings: Settings):
        self.client = CsmsClient(settings)
        self.settings = settings

    async def __aenter__(self) -> CsmsClient:
        from csms.db import redacted

        try:
            await asyncio.wait_for(self.client.__aenter__(), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            raise Failure(f"cannot reach RabbitMQ at {redacted(self.settings.amqp_url)}: "
                          f"{_one_line(exc) or 'no answer'}", EXIT_UNREACHABLE) from None
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.client.__aexit__(*exc)
        except Exception:  # noqa: BLE001 - closing a broken connection must not hide the real outcome
            pass


async def _send(args: argparse.Namespace) -> int:
    action = args.action
    if action not in ocpp16.ALL_CSMS_TO_CP:
        hint = " (a charge point sends it, the central system answers)" if action in ocpp16.ALL_CP_TO_CSMS else ""
        raise Failure(f"unknown action {action!r}{hint}: `csms actions` lists the commands", EXIT_USAGE)
    try:
        payload = json.loads(args.payload)
    except (ValueError, RecursionError) as exc:
        raise Failure(f"payload is not valid JSON: {_one_line(exc)}", EXIT_USAGE) from None
    if not isinstance(payload, dict):
        raise Failure("payload must be a JSON object, e.g. '{\"type\": \"Soft\"}'", EXIT_USAGE)
    try:
        ocpp16.validate(action, payload)
    except OcppError as exc:
        raise Failure(f"payload does not fit {action}: {_one_line(exc.description)}", EXIT_USAGE) from None
    settings = load_settings()
    async with _Connected(settings) as client:
        result = await client.send(args.charge_point_id, action, payload, timeout=args.timeout)
    print(result.model_dump_json(indent=2))
    for warning in result.warnings:
        print(f"csms: warning: {_one_line(warning)}", file=sys.stderr)
    code = send_exit_code(result)
    if code != EXIT_OK:
        print(f"csms: {_describe(result)}", file=sys.stderr)
    return code


def _describe(result: CommandResult) -> str:
    what = f"{result.action} to {result.charge_point_id}"
    if result.ok:
        return f"{what}: answered {result.payload.get('status')!r}, not accepted"
    detail = " ".join(part for part in (result.error_code or "", result.error_description) if part)
    return _one_line(f"{what}: {result.status}" + (f": {detail}" if detail else ""))


# ---- service APIs ----------------------------------------------------------------------------------
def _registry() -> dict[str, Any]:
    from services.registry import load_services

    return {service.name: service for service in load_services()}


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Failure(f"parameter {item!r} must be name=value (value as JSON or text)", EXIT_USAGE)
        try:
            params[key] = json.loads(value)
        except (ValueError, RecursionError):
            params[key] = value
    return params


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error.get("loc", ())) or "parameters"
        message = "unknown parameter" if error.get("type") == "extra_forbidden" else error["msg"]
        parts.append(f"{name}: {message}")
    return "; ".join(parts)


async def _api(args: argparse.Namespace) -> int:
    services = _registry()
    service = services.get(args.service)
    if service is None:
        raise Failure(f"unknown service {args.service!r}: one of {', '.join(sorted(services))}", EXIT_USAGE)
    if args.operation not in service.apis:
        raise Failure(f"unknown operation {args.operation!r} of {args.service}: `csms operations {args.service}` "
                      f"lists them", EXIT_USAGE)
    params = _parse_params(args.params)
    model = service.api_params.get(args.operation)
    if model is not None:  # checked here too, so a typo is named even with the system down
        try:
            model.model_validate(params)
        except ValidationError as exc:
            raise Failure(f"{args.service} {args.operation}: {_describe_validation(exc)}", EXIT_USAGE) from None
    settings = load_settings()
    async with _Connected(settings) as client:
        try:
            result = await client.api(args.service, args.operation, timeout=args.timeout, **params)
        except ApiCallFailed as exc:
            raise Failure(f"{args.service} {args.operation}: {exc.status} {_one_line(exc.error)}",
                          api_exit_code(exc.status)) from None
    print(json.dumps(result, indent=2, default=str))
    return EXIT_OK


# ---- what the system offers ------------------------------------------------------------------------
async def _actions(args: argparse.Namespace) -> int:
    services = list(_registry().values())
    answers = {action: s.name for s in services for action in s.calls}
    owns = {action: s.name for s in services for action in s.commands}
    rows = [("action", "direction", "answered by (CP->CSMS)", "owned by (CSMS->CP)")]
    for group, cp_ops, csms_ops in (("", ocpp16.CP_TO_CSMS, ocpp16.CSMS_TO_CP),
                                    (" (security extension)", ocpp16.SECURITY_CP_TO_CSMS, ocpp16.SECURITY_CSMS_TO_CP)):
        for action in sorted(set(cp_ops) | set(csms_ops)):
            direction = "both" if action in cp_ops and action in csms_ops else (
                "CP->CSMS" if action in cp_ops else "CSMS->CP")
            rows.append((action + group, direction,
                         answers.get(action, "-" if action not in cp_ops else "not supported"),
                         owns.get(action, "-" if action not in csms_ops else "not supported")))
    _table(rows)
    return EXIT_OK


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if arg is type(None) else _type_name(arg) for arg in args)
    if origin is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def _parameters(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return ["(parameters not declared: see the service's documentation)"]
    lines = []
    for name, field in model.model_fields.items():
        kind = _type_name(field.annotation)
        need = "required" if field.is_required() else f"default {field.default!r}"
        description = f" -- {field.description}" if field.description else ""
        lines.append(f"{name}: {kind} ({need}){description}")
    return lines or ["(no parameters)"]


async def _operations(args: argparse.Namespace) -> int:
    services = _registry()
    if args.service is not None and args.service not in services:
        raise Failure(f"unknown service {args.service!r}: one of {', '.join(sorted(services))}", EXIT_USAGE)
    for name in [args.service] if args.service else sorted(services):
        service = services[name]
        print(name)
        for operation in sorted(service.apis):
            doc = _one_line((service.apis[operation].__doc__ or "").split("\n\n")[0])
            print(f"  {operation}" + (f"  -- {doc}" if doc else ""))
            for line in _parameters(service.api_params.get(operation)):
                print(f"      {line}")
    return EXIT_OK


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# ---- database ----------------------------------------------------------------------------------------
async def _db(args: argparse.Namespace) -> int:
    import asyncpg

    from csms.db import migrate, redacted

    settings = load_settings()
    try:
        if args.db_cmd == "upgrade":
            await migrate.ensure_database(settings)
            await migrate.upgrade(settings, args.target)
            print("at", ", ".join(sorted(await migrate.current(settings))) or "nothing")
            return EXIT_OK
        if args.db_cmd == "downgrade":
            await migrate.downgrade(settings, args.target)
            return EXIT_OK
        at = sorted(await migrate.current(settings))
        print("at", ", ".join(at) or "nothing", "| heads", ", ".join(sorted(migrate.heads(settings))))
        problem = await migrate.check(settings)
        if problem:
            print(f"csms: {problem}", file=sys.stderr)
        return EXIT_OK if problem is None else EXIT_ERROR
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError) as exc:
        raise Failure(f"cannot reach PostgreSQL at {redacted(settings.database_url)}: {_one_line(exc)}",
                      EXIT_UNREACHABLE) from None
    except asyncpg.PostgresError as exc:
        raise Failure(f"PostgreSQL: {_one_line(exc)}", EXIT_ERROR) from None


# ---- entry point -------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (argparse prints the whole usage by default)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {_one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="csms", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    sub.add_parser("actions", help="list the OCPP actions, both directions, and the service owning each")
    operations = sub.add_parser("operations", help="list each service's API operations and their parameters")
    operations.add_argument("service", nargs="?")
    send = sub.add_parser("send", help="send a CSMS->CP command and print the charge point's answer")
    send.add_argument("charge_point_id")
    send.add_argument("action")
    send.add_argument("payload", nargs="?", default="{}", help="the OCPP payload as a JSON object")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the charge point")
    api = sub.add_parser("api", help="call a service API operation (params as name=value, values JSON or text)")
    api.add_argument("service")
    api.add_argument("operation")
    api.add_argument("params", nargs="*")
    api.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the service")
    db = sub.add_parser("db", help="database migrations: upgrade | downgrade TARGET | current")
    db_sub = db.add_subparsers(dest="db_cmd", required=True, parser_class=_Parser)
    upgrade = db_sub.add_parser("upgrade", help="create the database if missing and migrate it")
    upgrade.add_argument("target", nargs="?", default="heads")
    downgrade = db_sub.add_parser("downgrade", help="migrate down to TARGET (e.g. transactions@-1)")
    downgrade.add_argument("target")
    db_sub.add_parser("current", help="print the revisions the database is at; exit 1 when behind")
    return parser


RUNNERS = {"actions": _actions, "operations": _operations, "send": _send, "api": _api, "db": _db}


def main(argv: list[str] | None = None) -> int:
    root = logging.getLogger()
    if not root.handlers:  # library log lines would break "one line on stderr"
        root.addHandler(logging.NullHandler())
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(RUNNERS[args.cmd](args))
    except Failure as failure:
        print(f"csms: {failure}", file=sys.stderr)
        return failure.code
    except KeyboardInterrupt:
        print("csms: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (csms actions | head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - never a traceback, always one line
        print(f"csms: unexpected error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
