"""tests/support/pki.py is what the gateway's TLS tests will build on: its TLS client context must really present
the certificate the CSMS's CA signed (security profile 3)."""
from __future__ import annotations

import asyncio
import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from csms import pki as csms_pki
from services.security.ca import LocalCA
from tests.support import pki


def _server_context(ca_cert, ca_key, client_ca_pem: str) -> ssl.SSLContext:
    key = csms_pki.generate_key("ec-p256")
    now = csms_pki.utcnow()
    cert = (x509.CertificateBuilder().subject_name(csms_pki.name("127.0.0.1")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + csms_pki.dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=client_ca_pem)
    context.verify_mode = ssl.CERT_REQUIRED
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = Path(folder) / "s.crt", Path(folder) / "s.key"
        cert_file.write_text(pki.pem(cert))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context.load_cert_chain(cert_file, key_file)
    return context


async def test_a_charge_point_presents_the_certificate_the_csms_signed():
    csms_root, csms_key = pki.make_ca("CSMS CA")
    ca = LocalCA(csms_pki.Material([csms_root], csms_key), validity_days=30)
    identity = pki.ChargePointIdentity.new("CP-TLS")
    chain = await ca.sign(x509.load_pem_x509_csr(identity.csr_pem().encode()), "CP-TLS")
    assert identity.on_certificate_signed(pki.pem(csms_root))({"certificate_chain": csms_pki.to_pem(chain)}) == {
        "status": "Accepted"}
    server_root, server_key = pki.make_ca("Server CA")
    seen: list[str] = []

    async def on_client(reader, writer):
        peer = writer.get_extra_info("peercert")
        seen.append(dict(item[0] for item in peer["subject"])["commonName"])
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0,
                                        ssl=_server_context(server_root, server_key, pki.pem(csms_root)))
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                       ssl=identity.ssl_context(pki.pem(server_root)))
        assert await reader.read() == b"hello"
        writer.close()
    assert seen == ["CP-TLS"]

    # a chain from another CA is rejected by the responder
    other_root, other_key = pki.make_ca("Other")
    other_leaf, _ = pki.issue(other_root, other_key, "CP-TLS")
    responder = pki.ChargePointIdentity.new("CP-TLS").on_certificate_signed(pki.pem(csms_root))
    assert responder({"certificate_chain": pki.pem(other_leaf) + pki.pem(other_root)}) == {"status": "Rejected"}
