"""The HTTP API's series, in the part's own registry next to the common ones (csms.ops.metrics): requests by route
template (bounded: the routes of the app, else ``unmatched``), method and status; event-stream clients; webhook
deliveries by outcome."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from csms.ops.metrics import LATENCY_BUCKETS, Metrics


class ApiMetrics(Metrics):
    def __init__(self, service: str):
        super().__init__(service)
        r = self.registry
        self._requests = Counter("csms_http_requests_total", "HTTP API requests, by route template, method and "
                                 "status", ["service", "route", "method", "status"], registry=r)
        self._request_seconds = Histogram("csms_http_request_duration_seconds", "HTTP API requests: received to "
                                          "answered (event streams: to their first bytes)", ["service", "route"],
                                          buckets=LATENCY_BUCKETS, registry=r)
        self._sse = Gauge("csms_http_event_streams", "Server-sent event streams open", ["service"], registry=r)
        self._webhooks = Counter("csms_webhook_attempts_total", "Webhook attempts for asynchronous command "
                                 "results, by outcome (delivered, pending = failed and retried later, failed = "
                                 "given up, dropped)", ["service", "outcome"], registry=r)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._requests.labels(self.service, route, method, str(status)).inc()
        self._request_seconds.labels(self.service, route).observe(seconds)

    def sse_clients(self, count: int) -> None:
        self._sse.labels(self.service).set(count)

    def webhook(self, outcome: str) -> None:
        self._webhooks.labels(self.service, outcome).inc()
