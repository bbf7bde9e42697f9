"""Prometheus series. Each process part (the gateway, each service) has a :class:`Metrics` with a registry
of its own, so tests read one part's values and several parts share one process; every series carries a
``service`` label naming the part, and the ops endpoint merges the registries (:func:`exposition`).

Labels are bounded: actions are OCPP action names (anything else is ``unknown``), outcomes and statuses
are the closed sets of the code that counts them.
"""
from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from csms import ocpp16

disable_created_metrics()  # no *_created series: they double the output and nobody graphs them

# seconds: from a few ms (a CALL through the bus) up to a command that waits for a slow charge point
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_KNOWN_ACTIONS = frozenset(ocpp16.ALL_CP_TO_CSMS) | frozenset(ocpp16.ALL_CSMS_TO_CP)


def action_label(action: object) -> str:
    return action if isinstance(action, str) and action in _KNOWN_ACTIONS else "unknown"


class Metrics:
    """The series of one process part."""

    def __init__(self, service: str):
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._connected = Gauge("csms_connected_charge_points", "Charge points connected to this gateway",
                                ["service"], registry=r)
        self._calls = Counter("csms_ocpp_calls_total", "Charge point CALLs answered by the gateway, by action "
                              "and outcome (result, or the CALLERROR code)", ["service", "action", "outcome"],
                              registry=r)
        self._call_seconds = Histogram("csms_ocpp_call_duration_seconds", "Round trip of a charge point CALL at "
                                       "the gateway: frame received to answer sent", ["service", "action"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self._rpc_seconds = Histogram("csms_bus_rpc_duration_seconds", "Request/reply over RabbitMQ, by kind "
                                      "and outcome", ["service", "kind", "outcome"], buckets=LATENCY_BUCKETS,
                                      registry=r)
        self._commands = Counter("csms_commands_total", "CSMS->CP commands handled by their owning service, by "
                                 "action and result status", ["service", "action", "status"], registry=r)
        self._command_seconds = Histogram("csms_command_duration_seconds", "A CSMS->CP command at its owning "
                                          "service: received to result", ["service", "action"],
                                          buckets=LATENCY_BUCKETS, registry=r)
        self._messages = Counter("csms_messages_handled_total", "Bus messages a service handled, by kind and "
                                 "outcome", ["service", "kind", "outcome"], registry=r)
        self._auth_failures = Counter("csms_auth_failures_total", "Charge point handshakes refused by "
                                      "authentication, by reason", ["service", "reason"], registry=r)
        self._uploads = Counter("csms_uploads_total", "Diagnostics files stored, by protocol",
                                ["service", "protocol"], registry=r)
        self._upload_bytes = Counter("csms_upload_bytes_total", "Bytes of diagnostics files stored, by protocol",
                                     ["service", "protocol"], registry=r)
        self._dead_letters = Counter("csms_dead_letters_total", "Events a service failed to handle and "
                                     "dead-lettered, by event type", ["service", "event"], registry=r)
        self._reconnects = Counter("csms_reconnects_total", "Dependencies reached again after an outage",
                                   ["service", "dependency"], registry=r)
        self._outage_seconds = Counter("csms_outage_seconds_total", "Seconds dependencies were unreachable",
                                       ["service", "dependency"], registry=r)
        self._replies_unsent = Counter("csms_replies_unsent_total", "Replies to bus requests that could not be "
                                       "sent because the channel was gone (an outage)", ["service"], registry=r)
        self._ready = Gauge("csms_ready", "1 when this part is ready (see /readyz)", ["service"], registry=r)
        self._ready.labels(service)

    # ---- gateway --------------------------------------------------------------------------
    def connected(self, count: int) -> None:
        self._connected.labels(self.service).set(count)

    def call(self, action: str, outcome: str, seconds: float) -> None:
        action = action_label(action)
        self._calls.labels(self.service, action, outcome).inc()
        self._call_seconds.labels(self.service, action).observe(seconds)

    def auth_failure(self, reason: str) -> None:
        self._auth_failures.labels(self.service, reason).inc()

    # ---- bus and services ------------------------------------------------------------------
    def rpc(self, kind: str, outcome: str, seconds: float) -> None:
        self._rpc_seconds.labels(self.service, kind, outcome).observe(seconds)

    def command(self, action: str, status: str, seconds: float) -> None:
        action = action_label(action)
        self._commands.labels(self.service, action, status).inc()
        self._command_seconds.labels(self.service, action).observe(seconds)

    def message(self, kind: str, outcome: str) -> None:
        self._messages.labels(self.service, kind, outcome).inc()

    def reply_unsent(self) -> None:
        self._replies_unsent.labels(self.service).inc()

    def upload(self, protocol: str | None, size: int) -> None:
        protocol = protocol if protocol in ("http", "ftp") else "other"
        self._uploads.labels(self.service, protocol).inc()
        self._upload_bytes.labels(self.service, protocol).inc(max(size, 0))

    def dead_letter(self, event_type: str) -> None:
        self._dead_letters.labels(self.service, event_type).inc()

    def reconnected(self, dependency: str, outage_seconds: float) -> None:
        self._reconnects.labels(self.service, dependency).inc()
        self._outage_seconds.labels(self.service, dependency).inc(max(outage_seconds, 0.0))

    def ready(self, ready: bool) -> None:
        self._ready.labels(self.service).set(1 if ready else 0)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when it has none yet): for tests and tools."""
        return self.registry.get_sample_value(name, {"service": self.service, **labels}) or 0.0


class _Merged:
    """Families of the same name from several registries, as one (their ``service`` labels differ)."""

    def __init__(self, registries: Iterable[CollectorRegistry]):
        self.registries = list(registries)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for registry in self.registries:
            for family in registry.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type,
                                                            family.unit)
                merged.samples.extend(family.samples)
        return families.values()


def process_registry() -> CollectorRegistry:
    """The process's own series (CPU, memory, file descriptors, garbage collector)."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def exposition(registries: Iterable[CollectorRegistry]) -> bytes:
    """The Prometheus text format of every series in ``registries``."""
    return generate_latest(_Merged(registries))  # type: ignore[arg-type]
