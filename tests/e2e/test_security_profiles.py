"""OCPP 1.6 security profiles at the gateway, with real TLS (certificates made here with ``cryptography``): Basic
auth over ws and wss, client certificates issued by the security service's CA after SignCertificate, a downgrade
refused once a higher profile is recorded, and OCTT's TC_083 and TC_085-TC_088 as named scenarios."""
from __future__ import annotations

import asyncio
import base64
import datetime
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets
from cryptography import x509
from ocpp.v16 import call
from websockets.exceptions import InvalidStatus

from csms import pki
from services.registry import load_services
from tests.support import pki as test_pki
from tests.support.chargepoint import connect
from tests.support.system import System, make_settings

KEY = "0123456789abcdef0123456789abcdef01234567"   # an AuthorizationKey as the whitepaper has it: 20 bytes, hex
PASSWORD = bytes.fromhex(KEY)                     # what the charge point presents


@dataclass
class ServerTls:
    """The gateway's TLS material, from a CA of the test's own (the CA charge points trust for the server)."""

    ca: x509.Certificate
    ca_key: object
    cert_file: str
    key_file: str

    @property
    def ca_pem(self) -> str:
        return pki.to_pem(self.ca)

    def context(self, chain=None, key=None, **options) -> ssl.SSLContext:
        context = test_pki.client_context(self.ca_pem, chain, key)
        for name, value in options.items():
            setattr(context, name, value)
        return context


@pytest.fixture
def server_tls(tmp_path: Path) -> ServerTls:
    ca, ca_key = test_pki.make_ca("Test server CA")
    cert, key = test_pki.issue_server(ca, ca_key, "localhost")
    cert_file, key_file = test_pki.write_pair(tmp_path, "gateway", [cert], key)
    return ServerTls(ca, ca_key, cert_file, key_file)


@pytest.fixture
async def secure(infrastructure, server_tls):
    """The whole system with authentication on (the default) and TLS served by the gateway."""
    settings = make_settings(infrastructure, gateway_auth="basic", gateway_tls_cert_file=server_tls.cert_file,
                             gateway_tls_key_file=server_tls.key_file)
    sut = await System(settings, load_services()).start()
    try:
        yield sut
    finally:
        await sut.stop()


def basic(cp_id: str, password: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(cp_id.encode() + b":" + password).decode()}


async def refused(url: str, *, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None,
                  subprotocols=("ocpp1.6",)) -> int:
    """The HTTP status a handshake is answered with (fails if it is accepted)."""
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(url, subprotocols=list(subprotocols), open_timeout=5,
                                 additional_headers=headers or {}, **({"ssl": context} if context else {}))
    return info.value.response.status_code


async def station(sut: System, cp_id: str) -> dict:
    return await sut.api("stations", "get_station", charge_point_id=cp_id)


async def recorded_profile(sut: System, cp_id: str, expected: int, field: str = "security_profile",
                           timeout: float = 10.0) -> dict:
    """Wait until the stations service recorded ``expected`` as the station's profile (or ``field``: it follows
    the station.connected event)."""
    async with asyncio.timeout(timeout):
        while True:
            view = await station(sut, cp_id)
            if view[field] == expected:
                return view
            await asyncio.sleep(0.05)


async def certificate_by_csms(sut: System, cp, identity: test_pki.ChargePointIdentity) -> None:
    """SignCertificate -> CertificateSigned (TC_074): the charge point gets a certificate from the security
    service's CA."""
    ca_pem = (await sut.api("security", "ca_certificate"))["pem"]
    cp.respond("CertificateSigned", identity.on_certificate_signed(ca_pem))
    assert (await cp.call_ok(call.SignCertificate(csr=identity.csr_pem()))).status == "Accepted"
    await cp.wait_for("CertificateSigned")
    assert identity.chain_pem, cp.received["CertificateSigned"]


# ---- TC_085: Basic authentication, valid and invalid ----------------------------------------------------------
@pytest.mark.ocpp("BootNotification", "Heartbeat")
async def test_tc_085_basic_authentication_valid_and_invalid(secure, server_tls, cp_id):
    await secure.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
    # profile 1 (ws) and profile 2 (wss): the decoded key gets in
    async with connect(secure.url(cp_id), password=PASSWORD) as cp:
        assert (await cp.boot()).status == "Accepted"
    async with connect(secure.wss_url(cp_id), password=PASSWORD, ssl=server_tls.context()) as cp:
        await cp.heartbeat()
    # wrong password, another user, no credentials at all, an id nobody knows
    assert await refused(secure.url(cp_id), headers=basic(cp_id, b"wrong-password-12")) == 401
    assert await refused(secure.wss_url(cp_id), headers=basic(cp_id, b"wrong-password-12"),
                         context=server_tls.context()) == 401
    assert await refused(secure.url(cp_id), headers=basic("OTHER", PASSWORD)) == 401
    assert await refused(secure.url(cp_id)) == 401
    assert await refused(secure.url("CP-unknown"), headers=basic("CP-unknown", PASSWORD)) == 401


# ---- TC_086: TLS, server certificate -------------------------------------------------------------------------
async def test_tc_086_tls_server_certificate(secure, server_tls, cp_id):
    """TLS 1.2 or above with the whitepaper's cipher suites; the server certificate chains to the CA the charge
    point trusts, carries a serial number and the endpoint's FQDN as CN."""
    await secure.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
    tls12 = server_tls.context(maximum_version=ssl.TLSVersion.TLSv1_2)
    tls12.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    async with websockets.connect(secure.wss_url(cp_id), subprotocols=["ocpp1.6"], ssl=tls12,
                                  additional_headers=basic(cp_id, PASSWORD)) as ws:
        ssl_object = ws.transport.get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.2" and ssl_object.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
        leaf = x509.load_der_x509_certificate(ssl_object.getpeercert(binary_form=True))
        assert pki.common_names(leaf.subject) == ["localhost"] and leaf.serial_number > 0
        assert pki.signed_by(leaf, server_tls.ca)
    async with websockets.connect(secure.wss_url(cp_id), subprotocols=["ocpp1.6"], ssl=server_tls.context(),
                                  additional_headers=basic(cp_id, PASSWORD)) as ws:
        assert ws.transport.get_extra_info("ssl_object").version() == "TLSv1.3"
    # older protocols are refused at the TLS handshake
    with warnings.catch_warnings():  # (ssl says TLS 1.1 is deprecated: that is the point)
        warnings.simplefilter("ignore", DeprecationWarning)
        old = server_tls.context(maximum_version=ssl.TLSVersion.TLSv1_1)
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, OSError)):
        await websockets.connect(secure.wss_url(cp_id), subprotocols=["ocpp1.6"], ssl=old, open_timeout=5)
    # a charge point that does not trust the CA refuses the server
    with pytest.raises(ssl.SSLCertVerificationError):
        await websockets.connect(secure.wss_url(cp_id), subprotocols=["ocpp1.6"], open_timeout=5,
                                 ssl=test_pki.client_context(pki.to_pem(test_pki.make_ca("Elsewhere")[0])))


# ---- TC_088: subprotocol -----------------------------------------------------------------------------------------
async def test_tc_088_subprotocol_negotiation(secure, server_tls, cp_id):
    await secure.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
    async with websockets.connect(secure.wss_url(cp_id), subprotocols=["ocpp2.0.1", "ocpp1.6"],
                                  ssl=server_tls.context(), additional_headers=basic(cp_id, PASSWORD)) as ws:
        assert ws.subprotocol == "ocpp1.6"
    for offered in ((), ("ocpp2.0.1",)):
        assert await refused(secure.wss_url(cp_id), headers=basic(cp_id, PASSWORD), context=server_tls.context(),
                             subprotocols=offered) == 400


# ---- TC_087: client certificate (profile 3) -------------------------------------------------------------------
@pytest.mark.ocpp("SignCertificate", "CertificateSigned", "BootNotification", "Heartbeat")
async def test_tc_087_client_certificate_from_sign_certificate(secure, server_tls, cp_id):
    """The full round trip: a profile-2 charge point asks for a certificate (SignCertificate), gets it
    (CertificateSigned), reconnects with it at profile 3 and is served; no Basic credentials are needed."""
    await secure.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
    identity = test_pki.ChargePointIdentity.new(cp_id)
    async with connect(secure.wss_url(cp_id), password=PASSWORD, ssl=server_tls.context()) as cp:
        assert (await cp.boot()).status == "Accepted"
        await certificate_by_csms(secure, cp, identity)
    async with connect(secure.wss_url(cp_id), ssl=identity.ssl_context(server_tls.ca_pem)) as cp:
        await cp.heartbeat()
    view = await recorded_profile(secure, cp_id, 3, "connected_profile")
    assert view["security_profile"] is None  # nothing asked to raise it


async def test_wrong_or_missing_client_certificates_are_refused(secure, server_tls, cp_id):
    identity = test_pki.ChargePointIdentity.new(cp_id)
    other = test_pki.ChargePointIdentity.new("CP-neighbour")
    for charge_point, who in ((identity, cp_id), (other, "CP-neighbour")):  # certificates from the CSMS's CA
        await secure.api("stations", "set_password", charge_point_id=who, password=KEY)
        async with connect(secure.wss_url(who), password=PASSWORD, ssl=server_tls.context()) as cp:
            await cp.boot()
            await certificate_by_csms(secure, cp, charge_point)
    await secure.api("stations", "set_security_profile", charge_point_id=cp_id, security_profile=3)
    # missing: Basic auth is not enough once profile 3 is recorded, over ws or wss
    assert await refused(secure.wss_url(cp_id), headers=basic(cp_id, PASSWORD), context=server_tls.context()) == 403
    assert await refused(secure.url(cp_id), headers=basic(cp_id, PASSWORD)) == 403
    # issued by a CA the CSMS does not trust: the TLS handshake fails
    rogue_ca, rogue_key = test_pki.make_ca("Rogue CA")
    rogue, rogue_cert_key = test_pki.issue(rogue_ca, rogue_key, cp_id)
    with pytest.raises((ssl.SSLError, OSError, websockets.exceptions.InvalidHandshake)) as info:
        async with connect(secure.wss_url(cp_id), ssl=server_tls.context([rogue], rogue_cert_key)) as cp:
            await cp.heartbeat()
    assert not isinstance(info.value, InvalidStatus)  # not an HTTP answer: no TLS session at all
    # a good certificate, of another charge point
    assert await refused(secure.wss_url(cp_id), context=other.ssl_context(server_tls.ca_pem)) == 403
    # its own: in
    async with connect(secure.wss_url(cp_id), ssl=identity.ssl_context(server_tls.ca_pem)) as cp:
        await cp.heartbeat()
    # revoked in the security service's records: the connection that uses it is closed, and it is refused from then on
    async with connect(secure.wss_url(cp_id), ssl=identity.ssl_context(server_tls.ca_pem)) as cp:
        fingerprint = pki.fingerprint(identity.certificate)
        await secure.api("security", "revoke_certificate", fingerprint=fingerprint, reason="key leaked")
        await asyncio.wait_for(cp._connection.wait_closed(), 5)
        assert (cp._connection.close_code, cp._connection.close_reason) == (1008, "client certificate revoked")
    assert await refused(secure.wss_url(cp_id), context=identity.ssl_context(server_tls.ca_pem)) == 403


# ---- TC_083: raising the security profile; the old one is refused afterwards ------------------------------------
@pytest.mark.ocpp("ChangeConfiguration", "Reset", "BootNotification", "StatusNotification", "SignCertificate",
                  "CertificateSigned")
async def test_tc_083_upgrade_security_profile_and_refuse_the_lower_one(secure, server_tls, cp_id):
    await secure.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
    async with connect(secure.url(cp_id), password=PASSWORD) as cp:                            # profile 1
        assert (await cp.boot()).status == "Accepted"
        result = await secure.send(cp_id, "ChangeConfiguration", {"key": "SecurityProfile", "value": "2"})
        assert result.payload == {"status": "Accepted"} and result.warnings == []
        assert (await secure.send(cp_id, "Reset", {"type": "Hard"})).payload == {"status": "Accepted"}
    view = await recorded_profile(secure, cp_id, 1, "connected_profile")
    assert (view["security_profile"], view["security_profile_pending"]) == (None, 2)
    # until it has connected at profile 2 the old profile still works (a charge point that cannot make it falls back)
    async with connect(secure.url(cp_id), password=PASSWORD) as cp:
        await cp.heartbeat()
    async with connect(secure.wss_url(cp_id), password=PASSWORD, ssl=server_tls.context()) as cp:  # profile 2
        assert (await cp.boot()).status == "Accepted"
        await cp.status(0, "Available")
    view = await recorded_profile(secure, cp_id, 2)
    assert (view["security_profile_pending"], view["security_profile_source"]) == (None, "ChangeConfiguration")
    assert await refused(secure.url(cp_id), headers=basic(cp_id, PASSWORD)) == 403           # the downgrade

    # and on to profile 3: a certificate from the CSMS's CA first, then SecurityProfile=3
    identity = test_pki.ChargePointIdentity.new(cp_id)
    async with connect(secure.wss_url(cp_id), password=PASSWORD, ssl=server_tls.context()) as cp:
        await certificate_by_csms(secure, cp, identity)
        result = await secure.send(cp_id, "ChangeConfiguration", {"key": "SecurityProfile", "value": "3"})
        assert result.payload == {"status": "Accepted"}
    async with connect(secure.wss_url(cp_id), ssl=identity.ssl_context(server_tls.ca_pem)) as cp:  # profile 3
        assert (await cp.boot()).status == "Accepted"
    await recorded_profile(secure, cp_id, 3)
    assert await refused(secure.wss_url(cp_id), headers=basic(cp_id, PASSWORD), context=server_tls.context()) == 403

    # asking for a lower profile: sent (the charge point decides, TC_084), with a warning; nothing recorded
    async with connect(secure.wss_url(cp_id), ssl=identity.ssl_context(server_tls.ca_pem)) as cp:
        cp.respond("ChangeConfiguration", {"status": "Rejected"})
        result = await secure.send(cp_id, "ChangeConfiguration", {"key": "SecurityProfile", "value": "1"})
        assert result.payload == {"status": "Rejected"}
        assert len(result.warnings) == 1 and "below the recorded profile 3" in result.warnings[0]
    view = await station(secure, cp_id)
    assert (view["security_profile"], view["security_profile_pending"]) == (3, None)
    # the operator is the only way down (a replaced charge point)
    await secure.api("stations", "set_security_profile", charge_point_id=cp_id, security_profile=1)
    async with connect(secure.url(cp_id), password=PASSWORD) as cp:
        await cp.heartbeat()


async def test_gateway_auth_none_still_holds_stations_to_their_recorded_profile(infrastructure, cp_id):
    """GATEWAY_AUTH=none (development) lets unknown charge points in without credentials, but a station with a
    recorded profile is never accepted below it."""
    sut = await System(make_settings(infrastructure, gateway_auth="none"), load_services()).start()
    try:
        async with connect(sut.url(cp_id)) as cp:
            assert (await cp.boot()).status == "Accepted"
        await recorded_profile(sut, cp_id, 0, "connected_profile")
        await sut.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
        await sut.api("stations", "set_security_profile", charge_point_id=cp_id, security_profile=1)
        assert await refused(sut.url(cp_id)) == 401
        assert await refused(sut.url(cp_id), headers=basic(cp_id, b"wrong-password-12")) == 401
        async with connect(sut.url(cp_id), password=PASSWORD) as cp:
            await cp.heartbeat()
    finally:
        await sut.stop()


async def test_gateway_auth_none_never_lets_a_station_with_a_password_in_without_it(infrastructure, cp_id):
    """A station the operator gave a password authenticates in every mode -- also without a recorded profile
    (set_password records none): GATEWAY_AUTH=none relaxes only stations that have no credentials at all."""
    sut = await System(make_settings(infrastructure, gateway_auth="none"), load_services()).start()
    try:
        await sut.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
        assert (await station(sut, cp_id))["security_profile"] is None
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(sut.url(cp_id), subprotocols=["ocpp1.6"], open_timeout=5)
        assert (info.value.response.status_code, info.value.response.body) == (
            401, b"charge point authentication required\n")
        assert await refused(sut.url(cp_id), headers=basic(cp_id, b"wrong-password-12")) == 401
        async with connect(sut.url(cp_id), password=PASSWORD) as cp:
            assert (await cp.boot()).status == "Accepted"
        async with connect(sut.url(f"{cp_id}-no-password")) as cp:      # (the relaxation itself still holds)
            assert (await cp.boot()).status == "Accepted"
    finally:
        await sut.stop()


def test_a_standalone_gateway_refuses_gateway_auth_none(settings):
    """``python -m services.gateway`` is a deployment's gateway: GATEWAY_AUTH=none stops it at start (exit 2, one
    line); only the development mode (services.all) and in-process test systems may relax authentication."""
    import subprocess
    import sys

    from services.gateway.__main__ import REFUSED_NONE
    from tests.support.process import ROOT, environment

    result = subprocess.run([sys.executable, "-m", "services.gateway"], cwd=ROOT, capture_output=True, text=True,
                            env=environment(settings.replace(gateway_auth="none")), timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip().splitlines() == [REFUSED_NONE]


async def test_by_default_no_charge_point_gets_in_without_credentials(infrastructure, cp_id):
    settings = make_settings(infrastructure)
    sut = await System(settings.replace(gateway_auth=type(settings)().gateway_auth), load_services()).start()
    try:
        assert sut.settings.gateway_auth == "basic"
        assert await refused(sut.url(cp_id)) == 401
        assert await refused(sut.url(cp_id), headers=basic(cp_id, PASSWORD)) == 401  # nobody set a password
    finally:
        await sut.stop()


# ---- TLS offload behind an ingress ---------------------------------------------------------------------------------
@pytest.fixture
async def behind_proxy(infrastructure, tmp_path):
    """The gateway behind a TLS-terminating proxy at 127.0.0.1 that forwards client certificates; client
    certificates of a manufacturer's CA (GATEWAY_TLS_CLIENT_CA_FILE) are trusted besides the CSMS's own."""
    manufacturer, manufacturer_key = test_pki.make_ca("Manufacturer CA")
    ca_file = tmp_path / "manufacturer.pem"
    ca_file.write_text(pki.to_pem(manufacturer))
    settings = make_settings(infrastructure, gateway_auth="basic", gateway_trusted_proxies="127.0.0.1/32",
                             gateway_tls_client_ca_file=str(ca_file))
    sut = await System(settings, load_services()).start()
    sut.manufacturer = (manufacturer, manufacturer_key)
    try:
        yield sut
    finally:
        await sut.stop()


def forwarded(cert: x509.Certificate | None, *, style: str = "envoy", client: str = "10.1.2.3") -> dict[str, str]:
    from urllib.parse import quote
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": f"{client}, 127.0.0.1"}
    if cert is not None:
        escaped = quote(pki.to_pem(cert), safe="")
        headers["X-Forwarded-Client-Cert"] = (
            f'Hash=00;Cert="{escaped}";Subject="CN=x"' if style == "envoy" else escaped)
    return headers


async def test_tls_offload_trusts_the_forwarded_certificate_only_from_a_trusted_proxy(behind_proxy, cp_id):
    sut = behind_proxy
    cert, _ = test_pki.issue(*sut.manufacturer, cp_id)                 # factory-installed, manufacturer's CA
    await sut.api("stations", "set_security_profile", charge_point_id=cp_id, security_profile=3)
    for style in ("envoy", "nginx"):
        async with connect(sut.url(cp_id), headers=forwarded(cert, style=style)) as cp:
            assert (await cp.boot()).status == "Accepted"
    view = await recorded_profile(sut, cp_id, 3, "connected_profile")
    assert view["remote_address"] == "10.1.2.3"
    # the same headers from an address that is not a trusted proxy are ignored: no TLS, no certificate
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(sut.url(cp_id), subprotocols=["ocpp1.6"], open_timeout=5,
                                 additional_headers=forwarded(cert), local_addr=("127.0.0.2", 0))
    # (not authenticated: the answer is the same for every id; what it lacks goes to the log)
    assert (info.value.response.status_code, info.value.response.body) == (401, b"charge point authentication "
                                                                                 b"required\n")
    # a forwarded certificate is verified here: another CA's, another charge point's, an expired one
    rogue = test_pki.issue(*test_pki.make_ca("Rogue CA"), cp_id)[0]
    neighbours = test_pki.issue(*sut.manufacturer, "CP-neighbour")[0]
    manufacturer, manufacturer_key = sut.manufacturer
    expired = pki.issue_certificate(subject=pki.name(cp_id), public_key=pki.generate_key("ec-p256").public_key(),
                                    issuer_cert=manufacturer, issuer_key=manufacturer_key, days=1, usage="client",
                                    now=pki.utcnow() - datetime.timedelta(days=3))
    for bad, why in ((rogue, b"not issued by a trusted CA"), (neighbours, b"names 'CP-neighbour'"),
                     (expired, b"expired")):
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(sut.url(cp_id), subprotocols=["ocpp1.6"], open_timeout=5,
                                     additional_headers=forwarded(bad))
        assert info.value.response.status_code == 403 and why in info.value.response.body, info.value.response.body
    # profile 2 behind the proxy: Basic auth, TLS at the proxy
    other = f"{cp_id}-2"
    await sut.api("stations", "set_password", charge_point_id=other, password=KEY)
    await sut.api("stations", "set_security_profile", charge_point_id=other, security_profile=2)
    async with connect(sut.url(other), password=PASSWORD, headers=forwarded(None)) as cp:
        await cp.boot()
    assert await refused(sut.url(other), headers=basic(other, PASSWORD)) == 403  # plain ws at the proxy: profile 1


# ---- the development process as the README has it --------------------------------------------------------------
async def test_the_development_process_asks_for_credentials_unless_told_otherwise(settings, cp_id):
    """``python -m services.all`` authenticates charge points like production and says how to let one in (a
    password); only an explicit GATEWAY_AUTH=none lets charge points in without one, said at WARNING."""
    from csms.client import CsmsClient
    from tests.support.process import CsmsProcess, eventually_status
    from tests.support.system import remove_test_system

    for gateway_auth in ("basic", "none"):
        run = settings.replace(gateway_auth=gateway_auth, namespace=f"{settings.namespace}-{gateway_auth}")
        process = await CsmsProcess("services.all", run, DATABASE_MIGRATE="true").start()
        try:
            await eventually_status(await process.ops_port(), "/readyz", 200, timeout=30)
            port = int((await process.wait_for_message(r"gateway \S+ listening on [^:]+:(\d+)")).group(1))
            url = f"ws://127.0.0.1:{port}/ocpp/{cp_id}"
            warned = [line["message"] for line in process.lines
                      if line.get("level") == "WARNING" and "NOT authenticated" in line.get("message", "")]
            if gateway_auth == "basic":
                assert not warned and any("set_password" in m for m in process.messages())
                assert await refused(url) == 401
                async with CsmsClient(run) as client:
                    await client.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
                async with connect(url, password=PASSWORD) as cp:
                    assert (await cp.boot()).status == "Accepted"
            else:
                assert len(warned) == 1, process.output()
                async with connect(url) as cp:
                    assert (await cp.boot()).status == "Accepted"
            process.signal()
            assert await process.wait(timeout=30) == 0, process.output()
        finally:
            await process.stop()
            await remove_test_system(run, load_services())


async def test_each_part_connects_with_its_own_rabbitmq_url(infrastructure, cp_id):
    """AMQP_SERVICE_URLS: a part named there uses its own URL (its own RabbitMQ user in production); here the
    gateway and the stations service reach the same broker under another host name."""
    own = infrastructure.amqp_url.replace("127.0.0.1", "localhost")
    if own == infrastructure.amqp_url:
        pytest.skip("the broker URL has no 127.0.0.1 to vary")
    settings = make_settings(infrastructure, amqp_service_urls={"gateway": own, "stations": own})
    sut = await System(settings, load_services()).start()
    try:
        parts = {service.name: service for service in sut.services}
        assert sut.gateways[0].settings.amqp_url == own and parts["stations"].settings.amqp_url == own
        assert parts["transactions"].settings.amqp_url == infrastructure.amqp_url
        async with connect(sut.url(cp_id)) as cp:
            assert (await cp.boot()).status == "Accepted"
    finally:
        await sut.stop()


async def test_a_security_profile_whose_answer_was_lost_is_recorded_once_the_charge_point_uses_it(secure, server_tls,
                                                                                                 cp_id):
    await secure.api("stations", "set_password", charge_point_id=cp_id, password=KEY)
    async with connect(secure.url(cp_id), password=PASSWORD) as cp:
        await cp.boot()

        async def silent(kwargs):
            await asyncio.sleep(5)
        cp.respond("ChangeConfiguration", silent)
        result = await secure.send(cp_id, "ChangeConfiguration", {"key": "SecurityProfile", "value": "2"}, timeout=0.5)
        assert result.status == "timeout" and any("recorded if it connects" in w for w in result.warnings)
    assert (await station(secure, cp_id))["security_profile_pending"] == 2
    async with connect(secure.url(cp_id), password=PASSWORD):  # it did not apply it (yet): still in
        pass
    async with connect(secure.wss_url(cp_id), password=PASSWORD, ssl=server_tls.context()):
        pass
    await recorded_profile(secure, cp_id, 2)
    assert await refused(secure.url(cp_id), headers=basic(cp_id, PASSWORD)) == 403
