# syntax=docker/dockerfile:1
# One image for every process of the CSMS: python -m services.<gateway|stations|transactions|smart_charging|
# diagnostics|security|api|all>. Dependencies come from requirements.lock (pinned, with hashes: regenerate it with
# `pip-compile --generate-hashes --strip-extras --allow-unsafe --output-file requirements.lock pyproject.toml`).
# The runtime stage has no compiler and no pip cache, and runs as uid 10001 with a read-only root filesystem
# (only /tmp and FILES_ROOT need to be writable volumes).

FROM python:3.11-slim-bookworm AS build
WORKDIR /build
RUN python -m venv /opt/csms
COPY requirements.lock ./
RUN /opt/csms/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY libs /app/libs
COPY services /app/services
# byte-compile once here: the running container cannot write .pyc files
RUN /opt/csms/bin/python -m compileall -q /app /opt/csms

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 csms \
    && useradd --system --uid 10001 --gid csms --home-dir /app --no-create-home --shell /usr/sbin/nologin csms \
    && mkdir -p /data/files && chown csms:csms /data/files
COPY --from=build /opt/csms /opt/csms
COPY --from=build /app /app
COPY LICENSE README.md /app/
ENV PATH=/opt/csms/bin:$PATH \
    PYTHONPATH=/app/libs:/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    FILES_ROOT=/data/files
WORKDIR /app
USER 10001:10001
# websocket gateway (ws, wss), diagnostics HTTP(S) and FTP(S), HTTP API, ops endpoint (/healthz /readyz /metrics)
EXPOSE 9000 9443 9080 9021 8080 9100
# the process handles SIGTERM itself (drain), also as PID 1
STOPSIGNAL SIGTERM
CMD ["python", "-m", "services.all"]
