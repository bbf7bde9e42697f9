"""Running the CSMS as an operable process (issue 8).

* :mod:`csms.ops.logs`      structured logs (JSON or text) with the charge point, message, action and
                            correlation id of what is being handled; one rate-limited line per outage.
* :mod:`csms.ops.metrics`   the Prometheus series of each process part, in a registry of its own.
* :mod:`csms.ops.tracing`   OpenTelemetry spans across the bus (context in AMQP headers); off unless
                            ``OTEL_TRACES_EXPORTER`` names an exporter.
* :mod:`csms.ops.retry`     start-up and reconnect with backoff for RabbitMQ, Redis and PostgreSQL.
* :mod:`csms.ops.health`    the ops HTTP endpoint of a process: ``/healthz``, ``/readyz``, ``/metrics``.
* :mod:`csms.ops.lifecycle` one process: settings, signals (SIGTERM drains), parts, exit status.
"""
