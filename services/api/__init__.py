"""api: the HTTP API (``python -m services.api``) -- OpenAPI 3.1, API keys with scopes, synchronous and
asynchronous commands, webhooks and server-sent events.

It reaches the rest of the system only over the bus: service API operations and commands through
``csms.client.CsmsClient``, live status from a subscription to the events exchange. Its own records (PostgreSQL,
Alembic branch ``api``): ``api_keys`` (SHA-256 of each key, scopes, webhook) and ``api_commands`` (asynchronous
commands and their results, kept ``API_COMMAND_RETENTION_DAYS``).

Two parts run in the process: the ``api`` service on the bus (``api.create_key``, ``api.list_keys``,
``api.revoke_key``: what ``csms api-keys ...`` calls) and the HTTP server (``server.HttpApi``).

Events: publishes ``command.completed`` when an asynchronous command has its outcome.

Decisions (docs/adr/http-api-framework.md, http-api-keys.md, http-api-async-commands.md): FastAPI + uvicorn with the
contracts' pydantic models as the OpenAPI schemas; keys are random 256-bit secrets stored as SHA-256, scopes
read < command < admin; asynchronous results are kept in PostgreSQL (any replica answers a poll), webhooks are
signed with HMAC-SHA256 and retried with doubling waits, a bounded number of times.

Files: ``app.py`` (routes), ``auth.py`` (keys and scopes), ``edge.py`` (body limits and checks, request log and
series), ``commands.py`` (commands, async results, webhooks), ``stream.py`` (server-sent events), ``server.py`` (the
process part), ``handlers.py`` (the bus operations), ``store.py`` (PostgreSQL), ``rules.py`` (pure decisions),
``metrics.py`` (its Prometheus series).
"""
