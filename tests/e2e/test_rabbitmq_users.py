"""Per-part RabbitMQ credentials on a real broker: every part of the system (the gateway, each service) and an
integration get a RabbitMQ user of their own with the permissions the README documents ("The bus: trust
boundary", ``csms.bus_permissions``), in a virtual host of the test's own (removed afterwards with its users). The
system works with them -- a charge point boots, is commanded by the integration, its events are followed -- and
each user is refused (ACCESS_REFUSED) what the README says it cannot do.

Needs ``rabbitmqctl`` against the local broker (as root): skipped without it, failed under CI=true."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import aiormq
import pytest

from csms import bus_permissions
from csms.bus import Names
from csms.client import CsmsClient
from services.registry import load_services
from tests.support.chargepoint import connect
from tests.support.events import EventRecorder
from tests.support.system import System, make_settings


def rabbitmqctl(*args: str, stdin: str | None = None) -> str:
    path = shutil.which("rabbitmqctl")
    if path is None:
        message = "rabbitmqctl is not installed here (it manages the local RabbitMQ's users)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run([path, "--quiet", *args], input=stdin, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        if os.environ.get("CI", "").lower() != "true" and "unable to perform an operation" in result.stderr:
            pytest.skip(f"rabbitmqctl cannot reach the broker: {result.stderr.strip()[:200]}")
        raise AssertionError(f"rabbitmqctl {' '.join(args[:1])} failed: {result.stderr.strip()}")
    return result.stdout


def password_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def url_for(base: str, user: str, password: str, vhost: str) -> str:
    parts = urlsplit(base)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, f"{quote(user, safe='')}:{quote(password, safe='')}@{host}",
                       "/" + quote(vhost, safe=""), "", ""))


@pytest.fixture
def broker_users(infrastructure):
    """A virtual host and one user per part (+ an integration), with the documented permissions; the admin user of
    the base URL gets everything on the vhost (the test's own setup and clean-up). Removed afterwards."""
    token = uuid.uuid4().hex[:8]
    vhost = f"csms-test-{token}"
    admin = urlsplit(infrastructure.amqp_url).username or "guest"
    settings = make_settings(infrastructure)
    grants = bus_permissions.permissions(settings.namespace, load_services())
    parts = list(grants)
    users, definitions = {}, {"vhosts": [{"name": vhost}], "users": [], "permissions": [], "topic_permissions": []}
    for part in parts:
        name, password = f"csms-test-{token}-{part}", secrets.token_urlsafe(16)
        users[part] = url_for(infrastructure.amqp_url, name, password, vhost)
        definitions["users"].append({"name": name, "password_hash": password_hash(password),
                                     "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []})
        grant = grants[part]
        definitions["permissions"].append({"user": name, "vhost": vhost, "configure": grant.configure,
                                           "write": grant.write, "read": grant.read})
        for exchange, (write, read) in grant.topics.items():
            definitions["topic_permissions"].append({"user": name, "vhost": vhost, "exchange": exchange,
                                                     "write": write, "read": read})
    definitions["permissions"].append({"user": admin, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"})
    rabbitmqctl("import_definitions", "--format", "json", stdin=json.dumps(definitions))
    try:
        admin_url = infrastructure.amqp_url.rsplit("/", 1)[0] + "/" + quote(vhost, safe="")
        yield settings.replace(amqp_url=admin_url,
                               amqp_service_urls={p: u for p, u in users.items() if p != "integration"}), users
    finally:
        rabbitmqctl("delete_vhost", vhost)
        for user in definitions["users"]:
            rabbitmqctl("delete_user", user["name"])


async def refused(url: str, action) -> str:
    """What RabbitMQ answers ``action(channel)`` done as the user of ``url``: the ACCESS_REFUSED text."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as info:
            await action(channel)
        return str(info.value)
    finally:
        await connection.close()


async def test_each_part_runs_with_its_own_rabbitmq_user_and_is_refused_the_rest(broker_users, cp_id):
    settings, users = broker_users
    names = Names.of(settings)
    sut = await System(settings, load_services()).start()
    try:
        parts = {service.name: service for service in sut.services}
        assert sut.gateways[0].settings.amqp_url == users["gateway"]
        assert all(parts[name].settings.amqp_url == users[name] for name in parts)
        integration = await CsmsClient(settings.replace(amqp_url=users["integration"], amqp_service_urls={})
                                       ).__aenter__()
        try:
            async with EventRecorder(settings.replace(amqp_url=users["integration"]), "station.#") as events, \
                    connect(sut.url(cp_id)) as cp:
                assert (await cp.boot()).status == "Accepted"                  # gateway -> stations -> gateway
                await cp.status(1, "Available")
                result = await integration.send(cp_id, "Reset", {"type": "Soft"})   # commands -> stations -> CP
                assert result.payload == {"status": "Accepted"}
                result = await integration.send(cp_id, "RemoteStartTransaction", {"idTag": "TAG-1"})
                assert result.payload == {"status": "Accepted"}                # transactions' command
                await events.wait("station.booted", charge_point_id=cp_id)
            station = await sut.api("stations", "get_station", charge_point_id=cp_id)
            assert station["boot_status"] == "Accepted"
        finally:
            await integration.__aexit__(None, None, None)

        def publish(exchange: str, key: str = "x"):
            async def action(channel):
                target = await channel.get_exchange(exchange, ensure=False)
                await target.publish(aio_pika.Message(b"{}"), key)
                await channel.declare_queue(exclusive=True)     # (a round trip: the refusal arrives by then)
            return action

        async def ignore(message) -> None:
            pass

        def consume(queue: str):
            async def action(channel):
                await (await channel.get_queue(queue, ensure=False)).consume(ignore)
            return action

        def bind(exchange: str, key: str):
            async def action(channel):
                queue = await channel.declare_queue(exclusive=True)
                await queue.bind(exchange, key)
            return action

        # an integration: no OCPP straight to a charge point, no API calls, no events of its own, not a service
        for exchange in (names.gateway, names.api, names.calls, names.events):
            assert "ACCESS_REFUSED" in await refused(users["integration"], publish(exchange))
        assert "ACCESS_REFUSED" in await refused(users["integration"], consume(settings.name("svc.stations")))
        # a service cannot answer in another's place, nor see the API calls made to another one (stations.admit
        # carries passwords), nor inject CALLs as if a charge point had sent them
        assert "ACCESS_REFUSED" in await refused(users["transactions"], consume(settings.name("svc.stations")))
        assert "ACCESS_REFUSED" in await refused(users["transactions"], bind(names.api, "stations.admit"))
        assert "ACCESS_REFUSED" in await refused(users["transactions"], bind(names.api, "#"))
        assert "ACCESS_REFUSED" in await refused(users["security"], publish(names.calls, "call.Heartbeat"))
        # the gateway cannot take a service's requests nor follow other events than the revocations it needs
        assert "ACCESS_REFUSED" in await refused(users["gateway"], consume(settings.name("svc.stations")))
        assert "ACCESS_REFUSED" in await refused(users["gateway"], bind(names.events, "#"))
    finally:
        await sut.stop()
