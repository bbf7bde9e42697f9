"""The file intake's TLS material (FILES_TLS_CERT_FILE / FILES_TLS_KEY_FILE) is read again when its files change and
on SIGHUP, like the gateway's: new HTTPS and FTPS handshakes get the new certificate, a download already going on
keeps its connection, a broken replacement keeps the material in use."""
from __future__ import annotations

import asyncio
import ftplib
import signal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from csms import pki
from tests.support import pki as test_pki
from tests.support.process import CsmsProcess
from tests.support.system import System, create_schema, remove_test_system


def replace_material(folder: Path, ca, ca_key, host: str = "localhost") -> x509.Certificate:
    return test_pki.replace_pair(folder, "files", ca, ca_key, host)


async def https_serial(port: int, ca_pem: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=test_pki.client_context(ca_pem),
                                                   server_hostname="localhost")
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()


def _ftps_serial(port: int, ca_pem: str) -> int:
    ftp = ftplib.FTP_TLS(context=test_pki.client_context(ca_pem))
    try:
        ftp.connect("127.0.0.1", port, timeout=5)
        ftp.auth()                                   # AUTH TLS: the control connection's handshake
        return x509.load_der_x509_certificate(ftp.sock.getpeercert(binary_form=True)).serial_number
    finally:
        ftp.close()


async def served(ports: tuple[int, int], ca_pem: str) -> tuple[int, int]:
    return await https_serial(ports[0], ca_pem), await asyncio.to_thread(_ftps_serial, ports[1], ca_pem)


async def eventually_served(ports: tuple[int, int], ca_pem: str, serial: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while await served(ports, ca_pem) != (serial, serial):
            await asyncio.sleep(0.05)


@pytest.fixture
def material(tmp_path):
    ca, ca_key = test_pki.make_ca("Files CA")
    first = replace_material(tmp_path, ca, ca_key)
    return ca, ca_key, first


def tls_settings(settings, folder: Path, interval: float):
    return settings.replace(files_tls_cert_file=str(folder / "files.crt.pem"),
                            files_tls_key_file=str(folder / "files.key.pem"), files_public_host="localhost",
                            files_tls_reload_interval=interval)


async def test_changed_files_are_served_to_new_handshakes_without_dropping_connections(settings, tmp_path, material):
    from services.diagnostics.handlers import service as diagnostics_service

    ca, ca_key, first = material
    ca_pem = pki.to_pem(ca)
    sut = await System(tls_settings(settings, tmp_path, 0.1), [diagnostics_service]).start()
    try:
        endpoints = await sut.api("diagnostics", "endpoints")
        ports = (urlsplit(endpoints["http_base_url"]).port, endpoints["ftp_port"])
        assert await served(ports, ca_pem) == (first.serial_number, first.serial_number)
        # a connection made with the first certificate (a firmware download in progress)
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[0], ssl=test_pki.client_context(ca_pem),
                                                       server_hostname="localhost")
        second = replace_material(tmp_path, ca, ca_key)
        await eventually_served(ports, ca_pem, second.serial_number)
        writer.write(b"GET /firmware/none.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 404")   # still served
        writer.close()
        # a broken replacement (the key of another certificate) keeps the material in use
        stray, _ = test_pki.issue_server(ca, ca_key, "localhost")
        (tmp_path / "files.crt.pem").write_text(pki.to_pem(stray))
        await asyncio.sleep(0.5)
        assert await served(ports, ca_pem) == (second.serial_number, second.serial_number)
    finally:
        await sut.stop()


async def test_sighup_reloads_the_file_intake_tls_material(settings, tmp_path, material):
    ca, ca_key, first = material
    ca_pem = pki.to_pem(ca)
    run = tls_settings(settings, tmp_path, 3600)  # only the signal reloads within the test
    await create_schema(run)
    process = await CsmsProcess("services.diagnostics", run).start()
    try:
        match = await process.wait_for_message(r"file intake listening on \S+ \(HTTPS (\d+), FTPS (\d+)\)", 30)
        ports = (int(match.group(1)), int(match.group(2)))
        assert await served(ports, ca_pem) == (first.serial_number, first.serial_number)
        second = replace_material(tmp_path, ca, ca_key)
        process.signal(signal.SIGHUP)
        await process.wait_for_message(r"file intake TLS material reloaded \(SIGHUP\)")
        assert await served(ports, ca_pem) == (second.serial_number, second.serial_number)
        process.signal()
        assert await process.wait() == 0, process.output()
    finally:
        await process.stop()
        await remove_test_system(run, [])
