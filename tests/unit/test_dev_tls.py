"""tools/dev_tls.py: development TLS material that a TLS client accepts for the given names, written without
overwriting anything, keys readable by their owner only."""
from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

from csms import pki

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "dev_tls.py"), *args], capture_output=True,
                          text=True, timeout=60)


def test_dev_tls_writes_a_ca_and_a_server_certificate_once(tmp_path):
    folder = tmp_path / "tls"
    result = run(str(folder), "--host", "csms.local", "--host", "127.0.0.1")
    assert result.returncode == 0, result.stderr
    chain = pki.load_certificates((folder / "server.crt.pem").read_bytes())
    ca = pki.load_certificates((folder / "ca.crt.pem").read_bytes())[0]
    assert pki.common_names(chain[0].subject) == ["csms.local"] and pki.signed_by(chain[0], ca)
    assert pki.load_material(str(folder / "server.crt.pem"), str(folder / "server.key.pem")).certificate == chain[0]
    for key in ("ca.key.pem", "server.key.pem"):
        assert (folder / key).stat().st_mode & 0o777 == 0o600
    # a TLS server with it is accepted by a client that trusts the CA, for both names
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "server.crt.pem", folder / "server.key.pem")
    for name in ("csms.local", "127.0.0.1"):
        client = ssl.create_default_context(cafile=str(folder / "ca.crt.pem"))
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        c = client.wrap_bio(incoming, outgoing, server_hostname=name)
        s = server.wrap_bio(s_in, s_out, server_side=True)
        for _ in range(10):
            for side in (c, s):
                try:
                    side.do_handshake()
                except ssl.SSLWantReadError:
                    pass
            s_in.write(outgoing.read())
            incoming.write(s_out.read())
        assert c.version() in ("TLSv1.2", "TLSv1.3")
    before = (folder / "server.key.pem").read_bytes()
    again = run(str(folder))
    assert again.returncode == 1 and "nothing written" in again.stderr
    assert (folder / "server.key.pem").read_bytes() == before
