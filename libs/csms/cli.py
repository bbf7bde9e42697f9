"""Command line: a thin client of the system's operations, over RabbitMQ like every other client (send and
api-keys also through the HTTP API: --http URL).

    csms actions                       # the OCPP actions, both directions, and the service owning each
    csms operations [SERVICE]          # each service's API operations and their parameters
    csms send CP-1 Reset '{"type": "Soft"}' --timeout 10
    csms api stations get_station charge_point_id=CP-1
    csms api-keys create --name ops --scope admin     # an HTTP API key, printed once
    csms db upgrade                    # create the database if missing and migrate it to every head
    csms db current                    # the revisions the database is at
    csms completion bash               # shell completion (also zsh, fish)

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

import asyncio
import json
import logging
import os
import sys
import types
import typing
from typing import Any, Awaitable, Callable

import click
from click.shell_completion import CompletionItem
from pydantic import BaseModel, ValidationError

from csms import ocpp16
from csms.client import ApiCallFailed, CsmsClient
from csms.config import Settings, load_settings
from csms.contracts.bus import CommandResult
from csms.contracts.schema import standardise

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


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def run(coroutine: Awaitable[int]) -> None:
    """Run a command's coroutine; its status ends the command (click.exceptions.Exit)."""
    raise click.exceptions.Exit(asyncio.run(coroutine))


# ---- the system, reached over RabbitMQ ------------------------------------------------------------
class Connected:
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
                          f"{one_line(exc) or 'no answer'}", EXIT_UNREACHABLE) from None
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.client.__aexit__(*exc)
        except Exception:  # noqa: BLE001 - closing a broken connection must not hide the real outcome
            pass


async def call_operation(service: str, operation: str, timeout: float, **params: Any) -> Any:
    """One service API operation over the bus; an error reply is a Failure with the documented status."""
    async with Connected(load_settings()) as client:
        try:
            return await client.api(service, operation, timeout=timeout, **params)
        except ApiCallFailed as exc:
            raise Failure(f"{service} {operation}: {exc.status} {one_line(exc.error)}",
                          api_exit_code(exc.status)) from None


# ---- what the system offers ------------------------------------------------------------------------
_services: dict[str, Any] | None = None


def registry() -> dict[str, Any]:
    global _services
    if _services is None:
        from services.registry import load_services

        _services = {service.name: service for service in load_services()}
    return _services


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


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def bounds(schema: dict[str, Any]) -> str:
    """The bounds a parameter's JSON Schema sets, for people: ``1 to 1000``, ``1 to 20 characters``, ``> 0``,
    ``at most 96 items`` (those of every alternative; an optional parameter's null has none)."""
    found = []
    for option in schema.get("anyOf", [schema]):
        low = option.get("minimum", option.get("exclusiveMinimum"))
        high = option.get("maximum", option.get("exclusiveMaximum"))
        strict_low, strict_high = "exclusiveMinimum" in option, "exclusiveMaximum" in option
        if low is not None and high is not None and not strict_low and not strict_high:
            found.append(f"{_number(low)} to {_number(high)}")
        else:
            if low is not None:
                found.append(f"{'>' if strict_low else '>='} {_number(low)}")
            if high is not None:
                found.append(f"{'<' if strict_high else '<='} {_number(high)}")
        shortest, longest = option.get("minLength"), option.get("maxLength")
        if longest is not None:
            found.append(f"{shortest or 0} to {longest} characters" if shortest else f"at most {longest} characters")
        elif shortest:
            found.append(f"at least {shortest} characters")
        if option.get("maxItems") is not None:
            found.append(f"at most {option['maxItems']} items")
    return ", ".join(dict.fromkeys(found))


def parameters(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return ["(parameters not declared: see the service's documentation)"]
    try:
        properties = standardise(model.model_json_schema(by_alias=False)).get("properties", {})
    except Exception:  # noqa: BLE001 - a model without a JSON Schema still lists its parameters, unbounded
        properties = {}
    lines = []
    for name, field in model.model_fields.items():
        kind = _type_name(field.annotation)
        limits = bounds(properties.get(name, {}))
        need = "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"
        description = f" -- {field.description}" if field.description else ""
        lines.append(f"{name}: {kind}{', ' + limits if limits else ''} ({need}){description}")
    return lines or ["(no parameters)"]


def summary(handler: Callable) -> str:
    return one_line((handler.__doc__ or "").split("\n\n")[0])


def unknown_service(name: str) -> Failure:
    return Failure(f"unknown service {name!r}: one of {', '.join(sorted(registry()))}", EXIT_USAGE)


def parse_params(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
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


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error.get("loc", ())) or "parameters"
        message = "unknown parameter" if error.get("type") == "extra_forbidden" else error["msg"]
        parts.append(f"{name}: {message}")
    return "; ".join(parts)


# ---- click plumbing: one-line usage errors ------------------------------------------------------------------
class Group(click.Group):
    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if self.get_command(ctx, name) is None and not name.startswith("-"):
            raise click.UsageError(f"no such command {name!r}: one of {', '.join(self.list_commands(ctx))}", ctx)
        return super().resolve_command(ctx, args)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             help=__doc__.split("\n\n")[0] + "\n\nExit status: 0 accepted, 1 unexpected, 2 usage, 3 not accepted, "
                  "4 CALLERROR, 5 not delivered, 6 refused before sending. `csms completion bash` for completion.")
@click.option("--http", "http_url", envvar="CSMS_API_URL", default=None, metavar="URL",
              help="go through the HTTP API at URL (e.g. https://api.example.com/api/v1) instead of the bus: "
                   "send and api-keys [env CSMS_API_URL]")
@click.option("--api-key", envvar="CSMS_API_KEY", default=None, help="the HTTP API key [env CSMS_API_KEY]")
@click.pass_context
def cli(ctx: click.Context, http_url: str | None, api_key: str | None) -> None:
    from csms.cli_http import HttpApi

    ctx.obj = HttpApi(http_url, api_key) if http_url else None


def http_api():
    """The HTTP API client when the CLI goes through it (--http / CSMS_API_URL), else None (the bus)."""
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().obj if ctx is not None else None


# ---- send ---------------------------------------------------------------------------------------------------
def _complete_action(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(a) for a in ocpp16.ALL_CSMS_TO_CP if a.startswith(incomplete)]


@cli.command(help="Send a CSMS->CP command (through the service that owns it) and print the charge point's answer.")
@click.argument("charge_point_id")
@click.argument("action", shell_complete=_complete_action)
@click.argument("payload", default="{}", required=False)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True, max=3600), default=30.0, show_default=True,
              help="seconds to wait for the charge point")
def send(charge_point_id: str, action: str, payload: str, timeout: float) -> None:
    run(_send(charge_point_id, action, payload, timeout, http_api()))


async def _send(charge_point_id: str, action: str, text: str, timeout: float, http: Any = None) -> int:
    if action not in ocpp16.ALL_CSMS_TO_CP:
        hint = " (a charge point sends it, the central system answers)" if action in ocpp16.ALL_CP_TO_CSMS else ""
        raise Failure(f"unknown action {action!r}{hint}: `csms actions` lists the commands", EXIT_USAGE)
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Failure(f"payload is not valid JSON: {one_line(exc)}", EXIT_USAGE) from None
    if not isinstance(payload, dict):
        raise Failure("payload must be a JSON object, e.g. '{\"type\": \"Soft\"}'", EXIT_USAGE)
    try:
        ocpp16.validate(action, payload)
    except ocpp16.OcppError as exc:
        raise Failure(f"payload does not fit {action}: {one_line(exc.description)}", EXIT_USAGE) from None
    if http is not None:
        result = await http.send(charge_point_id, action, payload, timeout)
    else:
        async with Connected(load_settings()) as client:
            result = await client.send(charge_point_id, action, payload, timeout=timeout)
    print(result.model_dump_json(indent=2))
    for warning in result.warnings:
        print(f"csms: warning: {one_line(warning)}", file=sys.stderr)
    code = send_exit_code(result)
    if code != EXIT_OK:
        print(f"csms: {describe(result)}", file=sys.stderr)
    return code


def describe(result: CommandResult) -> str:
    what = f"{result.action} to {result.charge_point_id}"
    if result.ok:
        return f"{what}: answered {result.payload.get('status')!r}, not accepted"
    detail = " ".join(part for part in (result.error_code or "", result.error_description) if part)
    return one_line(f"{what}: {result.status}" + (f": {detail}" if detail else ""))


# ---- api: one group per service, one command per operation -------------------------------------------------
class OperationCommand(click.Command):
    def __init__(self, service: Any, operation: str):
        self.service, self.operation = service, operation
        handler = service.apis[operation]
        lines = "\n".join(f"  {line}" for line in parameters(service.api_params.get(operation)))
        super().__init__(
            operation, callback=self.invoke_operation, short_help=summary(handler)[:80] or None,
            help=f"{summary(handler)}\n\nParameters (name=value, values as JSON or text):\n\n\b\n{lines}",
            params=[click.Argument(["params"], nargs=-1),
                    click.Option(["--timeout"], type=click.FloatRange(min=0, min_open=True, max=600), default=10.0,
                                 show_default=True, help="seconds to wait for the service")])

    def invoke_operation(self, params: tuple[str, ...], timeout: float) -> None:
        if http_api() is not None:
            raise Failure("csms api goes over the bus; through the HTTP API use its routes (see /api/v1/docs)",
                          EXIT_USAGE)
        values = parse_params(params)
        model = self.service.api_params.get(self.operation)
        if model is not None:  # checked here too, so a typo is named even with the system down
            try:
                model.model_validate(values)
            except ValidationError as exc:
                raise Failure(f"{self.service.name} {self.operation}: {describe_validation(exc)}",
                              EXIT_USAGE) from None
        result = asyncio.run(call_operation(self.service.name, self.operation, timeout, **values))
        print(json.dumps(result, indent=2, default=str))


class ServiceGroup(click.Group):
    def __init__(self, service: Any):
        self.service = service
        super().__init__(service.name, help=f"The {service.name} service's API operations.")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.service.apis)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.service.apis:
            return None
        return OperationCommand(self.service, name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if not name.startswith("-") and name not in self.service.apis:
            raise Failure(f"unknown operation {name!r} of {self.service.name}: `csms operations "
                          f"{self.service.name}` lists them", EXIT_USAGE)
        return super().resolve_command(ctx, args)


class ApiGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(registry())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        service = registry().get(name)
        return ServiceGroup(service) if service is not None else None

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if not name.startswith("-") and name not in registry():
            raise unknown_service(name)
        return super().resolve_command(ctx, args)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Operations (csms api SERVICE OPERATION --help for the parameters)"):
            formatter.write_dl([(name, ", ".join(sorted(service.apis)))
                                for name, service in sorted(registry().items())])


cli.add_command(ApiGroup("api", help="Call a service API operation: csms api SERVICE OPERATION name=value ... "
                                     "(values as JSON or text).", no_args_is_help=True))


# ---- what the system offers ------------------------------------------------------------------------------
@cli.command(help="List the OCPP actions, both directions, and the service owning each.")
def actions() -> None:
    services = list(registry().values())
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


def _complete_service(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(name) for name in sorted(registry()) if name.startswith(incomplete)]


@cli.command(help="List each service's API operations and their parameters.")
@click.argument("service", required=False, shell_complete=_complete_service)
def operations(service: str | None) -> None:
    services = registry()
    if service is not None and service not in services:
        raise unknown_service(service)
    for name in [service] if service else sorted(services):
        print(name)
        for operation in sorted(services[name].apis):
            doc = summary(services[name].apis[operation])
            print(f"  {operation}" + (f"  -- {doc}" if doc else ""))
            for line in parameters(services[name].api_params.get(operation)):
                print(f"      {line}")


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# ---- database ----------------------------------------------------------------------------------------
@cli.group(help="Database migrations: upgrade | downgrade TARGET | current.")
def db() -> None:
    pass


@db.command(help="Create the database if missing and migrate it (to every head by default).")
@click.argument("target", default="heads", required=False)
def upgrade(target: str) -> None:
    run(_db("upgrade", target))


@db.command(help="Migrate down to TARGET (e.g. transactions@-1).")
@click.argument("target")
def downgrade(target: str) -> None:
    run(_db("downgrade", target))


@db.command(help="Print the revisions the database is at; exit 1 when behind the code.")
def current() -> None:
    run(_db("current", None))


async def _db(command: str, target: str | None) -> int:
    import asyncpg

    from csms.db import migrate, redacted

    settings = load_settings()
    try:
        if command == "upgrade":
            await migrate.ensure_database(settings)
            await migrate.upgrade(settings, target)
            print("at", ", ".join(sorted(await migrate.current(settings))) or "nothing")
            return EXIT_OK
        if command == "downgrade":
            await migrate.downgrade(settings, target)
            return EXIT_OK
        at = sorted(await migrate.current(settings))
        print("at", ", ".join(at) or "nothing", "| heads", ", ".join(sorted(migrate.heads(settings))))
        problem = await migrate.check(settings)
        if problem:
            print(f"csms: {problem}", file=sys.stderr)
        return EXIT_OK if problem is None else EXIT_ERROR
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError) as exc:
        raise Failure(f"cannot reach PostgreSQL at {redacted(settings.database_url)}: {one_line(exc)}",
                      EXIT_UNREACHABLE) from None
    except asyncpg.PostgresError as exc:
        raise Failure(f"PostgreSQL: {one_line(exc)}", EXIT_ERROR) from None


# ---- shell completion ------------------------------------------------------------------------------------
@cli.command(help="Print the shell completion script: eval \"$(csms completion bash)\" (or zsh, fish).")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)(cli, {}, "csms", "_CSMS_COMPLETE")
    print(completer.source())


def _register_extensions() -> None:
    from csms.cli_keys import api_keys

    cli.add_command(api_keys)


_register_extensions()


# ---- entry point -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    root = logging.getLogger()
    if not root.handlers:  # library log lines would break "one line on stderr"
        root.addHandler(logging.NullHandler())
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = cli.main(args, prog_name="csms", standalone_mode=False)
        return code if isinstance(code, int) else EXIT_OK
    except click.exceptions.Exit as done:
        return done.exit_code
    except Failure as failure:
        print(f"csms: {failure}", file=sys.stderr)
        return failure.code
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "csms"
        print(f"{where}: {one_line(exc.format_message())} (see {where} --help)", file=sys.stderr)
        return EXIT_USAGE
    except click.ClickException as exc:
        print(f"csms: {one_line(exc.format_message())}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        print("csms: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (csms actions | head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - never a traceback, always one line
        print(f"csms: unexpected error: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # python -m csms.cli: run the imported module, so there is one copy of its classes
    from csms.cli import main as _main

    raise SystemExit(_main())
