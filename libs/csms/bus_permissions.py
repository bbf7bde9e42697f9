"""The RabbitMQ permissions each part of the system needs with a user of its own (AMQP_SERVICE_URLS, one AMQP_URL
per process), and an integration that sends commands and follows events -- nothing more (README "The bus: trust
boundary"; checked against a real broker by tests/e2e/test_rabbitmq_users.py).

RabbitMQ checks *configure* to declare or delete an exchange or queue, *write* to publish to an exchange and to
bind a queue (on the queue), *read* to consume from a queue and to bind one to an exchange (on the exchange);
*topic permissions* narrow the routing keys of publishing and binding on a topic exchange. Read on an exchange
lets a user bind a queue of its own and so receive a copy of what is published there: that is why each service
binds only its own API operations, CALLs and commands, and the events it follows.

    python -m csms.bus_permissions csms     # the rabbitmqctl commands for the namespace ``csms``, one user a part
"""
from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from csms.bus import api_key, call_key, command_key

# private queues (exclusive: RPC replies, event streams): named by the server (amq.gen-...) or, on the robust
# connections the parts use, by aio-pika (amq_<uuid hex>) so that they can be declared again after a reconnect
PRIVATE = r"amq\.gen-.*|amq_[0-9a-f]{32}"
EXCHANGES = ("ocpp.calls", "ocpp.gateway", "commands", "api", "events", "dead-letter")  # every client declares them
INTEGRATION = "integration"
FOLLOWS_ALL_EVENTS = {"api"}           # the HTTP API's event stream (services/api/stream.py) binds "#"


@dataclass(frozen=True)
class Grant:
    configure: str
    write: str
    read: str
    topics: dict[str, tuple[str, str]] = field(default_factory=dict)  # exchange -> (write, read) routing keys


def _names(namespace: str, names: Iterable[str]) -> str:
    return "|".join(re.escape(f"{namespace}.{name}") for name in dict.fromkeys(names))


def _keys(keys: Iterable[str]) -> str:
    listed = sorted(keys)
    return "^(" + "|".join(re.escape(k) for k in listed) + ")$" if listed else "^$"


def _grant(namespace: str, configure: Iterable[str], write: Iterable[str], read: Iterable[str], *,
           own: str = "", default_exchange: bool = False,
           topics: dict[str, tuple[str, str]] | None = None) -> Grant:
    """``own``: a regex (within the namespace) of queues the part declares, binds and consumes."""
    mine = [re.escape(f"{namespace}.") + own] if own else []

    def regex(names: Iterable[str], *extra: str) -> str:
        listed = _names(namespace, names)
        return "^(" + "|".join([PRIVATE, *extra, *mine, *([listed] if listed else [])]) + ")$"
    return Grant(configure=regex([*EXCHANGES, *configure]),
                 write=regex(write, *([r"amq\.default"] if default_exchange else [])),
                 read=regex(read),
                 topics={f"{namespace}.{exchange}": keys for exchange, keys in (topics or {}).items()})


def service_grant(namespace: str, service) -> Grant:
    """A service (csms.service.Service): its queues, replies and events, commands forwarded to the gateway, other
    services' APIs and commands; it binds only the API operations, CALLs, commands and events it handles."""
    follows = ".*" if service.name in FOLLOWS_ALL_EVENTS else _keys(service.events)
    return _grant(
        namespace, configure=["dead-letter"], write=["dead-letter", "ocpp.gateway", "api", "commands", "events"],
        read=["dead-letter", "ocpp.calls", "commands", "api", "events"],
        own=re.escape(f"svc.{service.name}") + r"(\.events)?", default_exchange=True,
        topics={"api": (".*", _keys(api_key(service.name, op) for op in service.apis)),
                "ocpp.calls": ("^$", _keys(call_key(action) for action in service.calls)),
                "commands": (".*", _keys(command_key(action) for action in service.commands)),
                "events": (".*", follows)})


def gateway_grant(namespace: str) -> Grant:
    """The gateway: CALLs from charge points to the services, commands for its charge points to its own queue,
    the services' APIs, its events; of the events it follows only certificate revocations."""
    return _grant(namespace, configure=[], write=["ocpp.calls", "ocpp.gateway", "api", "events"],
                  read=["ocpp.gateway", "events"], own=r"gateway\..+", default_exchange=True,
                  topics={"api": (".*", "^$"), "ocpp.calls": (".*", "^$"),
                          "events": (".*", r"^security\.certificate_changed$")})


def integration_grant(namespace: str) -> Grant:
    """An integration: commands through the owning services (their checks and records apply) and every event
    (from a server-named queue) -- no OCPP straight to charge points, no API calls, no events of its own."""
    return _grant(namespace, configure=[], write=["commands"], read=["events"],
                  topics={"commands": (".*", "^$"), "events": ("^$", ".*")})


def permissions(namespace: str, services: Iterable) -> dict[str, Grant]:
    """Part name -> its grant: ``gateway``, each service, ``integration``."""
    grants = {"gateway": gateway_grant(namespace)}
    for service in services:
        grants[service.name] = service_grant(namespace, service)
    grants[INTEGRATION] = integration_grant(namespace)
    return grants


def rabbitmqctl_commands(namespace: str, services: Iterable, vhost: str = "/") -> list[str]:
    """What an operator runs (after ``rabbitmqctl add_user csms-<part> ...`` for each part)."""
    lines = []
    for part, grant in permissions(namespace, services).items():
        user = f"csms-{part}".replace("_", "-")
        lines.append(f"rabbitmqctl set_permissions -p '{vhost}' {user} '{grant.configure}' '{grant.write}' "
                     f"'{grant.read}'")
        for exchange, (write, read) in grant.topics.items():
            lines.append(f"rabbitmqctl set_topic_permissions -p '{vhost}' {user} {exchange} '{write}' '{read}'")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m csms.bus_permissions NAMESPACE [VHOST]", file=sys.stderr)
        return 2
    from services.registry import load_services
    print("\n".join(rabbitmqctl_commands(args[0], load_services(), *args[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
