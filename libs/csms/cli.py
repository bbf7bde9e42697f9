"""Command line: send commands to charge points and call service APIs over the bus.

    csms send CP-1 Reset '{"type": "Soft"}' --timeout 10
    csms api stations get_station charge_point_id=CP-1
    csms db upgrade            # create the database if missing and migrate it to every head
    csms db current            # the revisions the database is at
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys

from csms.client import ApiCallFailed, CsmsClient
from csms.config import Settings, load_settings


async def _send(args: argparse.Namespace) -> int:
    async with CsmsClient(Settings()) as client:
        result = await client.send(args.charge_point_id, args.action, json.loads(args.payload), timeout=args.timeout)
    print(result.model_dump_json(indent=2))
    return 0 if result.ok else 1


async def _api(args: argparse.Namespace) -> int:
    params = {}
    for item in args.params:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    async with CsmsClient(Settings()) as client:
        try:
            result = await client.api(args.service, args.operation, **params)
        except ApiCallFailed as exc:
            print(f"error {exc.status}: {exc.error}", file=sys.stderr)
            return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


async def _db(args: argparse.Namespace) -> int:
    from csms.db import migrate

    settings = load_settings()
    if args.db_cmd == "upgrade":
        await migrate.ensure_database(settings)
        await migrate.upgrade(settings, args.target)
        print("at", ", ".join(sorted(await migrate.current(settings))) or "nothing")
        return 0
    if args.db_cmd == "downgrade":
        await migrate.downgrade(settings, args.target)
        return 0
    at = sorted(await migrate.current(settings))
    print("at", ", ".join(at) or "nothing", "| heads", ", ".join(sorted(migrate.heads(settings))))
    problem = await migrate.check(settings)
    return 0 if problem is None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="csms", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    send = sub.add_parser("send", help="send a CSMS->CP command and print the charge point's answer")
    send.add_argument("charge_point_id")
    send.add_argument("action")
    send.add_argument("payload", nargs="?", default="{}")
    send.add_argument("--timeout", type=float, default=30.0)
    api = sub.add_parser("api", help="call a service API operation (params as key=value, values JSON or text)")
    api.add_argument("service")
    api.add_argument("operation")
    api.add_argument("params", nargs="*")
    db = sub.add_parser("db", help="database migrations: upgrade | downgrade TARGET | current")
    db_sub = db.add_subparsers(dest="db_cmd", required=True)
    upgrade = db_sub.add_parser("upgrade", help="create the database if missing and migrate it")
    upgrade.add_argument("target", nargs="?", default="heads")
    downgrade = db_sub.add_parser("downgrade", help="migrate down to TARGET (e.g. transactions@-1)")
    downgrade.add_argument("target")
    db_sub.add_parser("current", help="print the revisions the database is at; exit 1 when behind")
    args = parser.parse_args(argv)
    runners = {"send": _send, "api": _api, "db": _db}
    return asyncio.run(runners[args.cmd](args))


if __name__ == "__main__":
    raise SystemExit(main())
