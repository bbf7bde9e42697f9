"""The gateway's TLS material is read again when its files change and on SIGHUP: new handshakes get the new
certificate, connections already open stay up; a broken replacement keeps the old material."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from pydantic import ValidationError

from csms import pki
from services.registry import load_services
from tests.support import pki as test_pki
from tests.support.chargepoint import connect
from tests.support.process import ROOT, CsmsProcess, environment
from tests.support.system import System, make_settings, remove_test_system


def replace_material(folder: Path, ca, ca_key, host: str = "localhost") -> x509.Certificate:
    return test_pki.replace_pair(folder, "gateway", ca, ca_key, host)


async def served_certificate(port: int, ca_pem: str) -> x509.Certificate:
    """The certificate a TLS handshake with the gateway gets (verified against ``ca_pem``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=test_pki.client_context(ca_pem),
                                                   server_hostname="localhost")
    try:
        return x509.load_der_x509_certificate(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
    finally:
        writer.close()


async def eventually_served(port: int, ca_pem: str, serial: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while (await served_certificate(port, ca_pem)).serial_number != serial:
            await asyncio.sleep(0.05)


async def test_changed_files_are_served_to_new_handshakes_without_dropping_connections(infrastructure, tmp_path,
                                                                                      cp_id):
    ca, ca_key = test_pki.make_ca("Test server CA")
    ca_pem = pki.to_pem(ca)
    first = replace_material(tmp_path, ca, ca_key)
    settings = make_settings(infrastructure, gateway_tls_cert_file=str(tmp_path / "gateway.crt.pem"),
                             gateway_tls_key_file=str(tmp_path / "gateway.key.pem"), gateway_tls_reload_interval=0.1)
    sut = await System(settings, load_services()).start()
    try:
        port = sut.gateways[0].tls_port
        assert (await served_certificate(port, ca_pem)).serial_number == first.serial_number
        async with connect(sut.wss_url(cp_id), ssl=test_pki.client_context(ca_pem)) as cp:
            assert (await cp.boot()).status == "Accepted"
            second = replace_material(tmp_path, ca, ca_key)
            await eventually_served(port, ca_pem, second.serial_number)
            await cp.heartbeat()  # the connection made with the old certificate is still served
            # a broken replacement (the key of another certificate) keeps the material in use
            stray_cert, _ = test_pki.issue_server(ca, ca_key)
            (tmp_path / "gateway.crt.pem").write_text(pki.to_pem(stray_cert))
            await asyncio.sleep(0.5)
            assert (await served_certificate(port, ca_pem)).serial_number == second.serial_number
            await cp.heartbeat()
        async with connect(sut.wss_url(cp_id), ssl=test_pki.client_context(ca_pem)) as cp:
            await cp.heartbeat()
    finally:
        await sut.stop()


async def test_sighup_reloads_the_tls_material(settings, tmp_path):
    ca, ca_key = test_pki.make_ca("Test server CA")
    ca_pem = pki.to_pem(ca)
    first = replace_material(tmp_path, ca, ca_key)
    settings = settings.replace(gateway_tls_cert_file=str(tmp_path / "gateway.crt.pem"),
                                gateway_tls_key_file=str(tmp_path / "gateway.key.pem"), gateway_auth="basic",
                                gateway_tls_reload_interval=3600)  # only the signal reloads within the test
    gateway = await CsmsProcess("services.gateway", settings).start()
    try:
        match = await gateway.wait_for_message(r"listening on [^:]+:\d+ \(ws\) and (\d+) \(wss\)")
        port = int(match.group(1))
        assert (await served_certificate(port, ca_pem)).serial_number == first.serial_number
        second = replace_material(tmp_path, ca, ca_key)
        gateway.signal(signal.SIGHUP)
        await gateway.wait_for_message(r"TLS material reloaded \(SIGHUP\)")
        assert (await served_certificate(port, ca_pem)).serial_number == second.serial_number
        gateway.signal()
        assert await gateway.wait() == 0
    finally:
        await gateway.stop()
        await remove_test_system(settings, [])


def test_unusable_material_stops_the_gateway_with_one_line(settings, tmp_path):
    """A key that does not belong to the certificate: the process exits 1 with one line naming the files."""
    ca, ca_key = test_pki.make_ca("Test server CA")
    cert, _ = test_pki.issue_server(ca, ca_key)
    _, other_key = test_pki.issue_server(ca, ca_key)
    cert_file, key_file = test_pki.write_pair(tmp_path, "gateway", [cert], other_key)
    env = environment(settings.replace(gateway_tls_cert_file=cert_file, gateway_tls_key_file=key_file,
                                       gateway_auth="basic"))
    result = subprocess.run([sys.executable, "-m", "services.gateway"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "TLS cannot be served" in output and "gateway.key.pem" in output and "Traceback" not in output


@pytest.mark.parametrize("given", ["cert", "key"])
def test_tls_setting_pairs_are_checked(settings, given):
    with pytest.raises(ValidationError, match="set both or neither"):
        settings.replace(**{f"gateway_tls_{given}_file": "/somewhere.pem"})


async def test_a_ca_that_arrives_after_the_start_is_trusted_without_a_restart(infrastructure, tmp_path, cp_id):
    """The security service starts after the gateway: client certificates it issues are accepted once the gateway
    has its CA (refreshed every few seconds while unknown) -- on the listener opened before."""
    from ocpp.v16 import call

    from services.security.handlers import service as security_service
    ca, ca_key = test_pki.make_ca("Test server CA")
    ca_pem = pki.to_pem(ca)
    replace_material(tmp_path, ca, ca_key)
    settings = make_settings(infrastructure, gateway_tls_cert_file=str(tmp_path / "gateway.crt.pem"),
                             gateway_tls_key_file=str(tmp_path / "gateway.key.pem"))
    others = [service for service in load_services() if service.name != "security"]
    sut = await System(settings, others).start()
    try:
        gateway = sut.gateways[0]
        assert gateway.handshake.tls.csms_cas == []
        await security_service.start(settings)
        sut.services.append(security_service)
        assert await gateway.handshake.refresh_csms_ca()
        identity = test_pki.ChargePointIdentity.new(cp_id)
        async with connect(sut.wss_url(cp_id), ssl=test_pki.client_context(ca_pem)) as cp:
            assert (await cp.boot()).status == "Accepted"
            cp.respond("CertificateSigned", identity.on_certificate_signed((await sut.api(
                "security", "ca_certificate"))["pem"]))
            await cp.call_ok(call.SignCertificate(csr=identity.csr_pem()))
            await cp.wait_for("CertificateSigned")
        async with connect(sut.wss_url(cp_id), ssl=identity.ssl_context(ca_pem)) as cp:
            await cp.heartbeat()
        async with asyncio.timeout(10):  # (recorded from the station.connected event)
            while (await sut.api("stations", "get_station", charge_point_id=cp_id))["connected_profile"] != 3:
                await asyncio.sleep(0.05)
    finally:
        await sut.stop()
