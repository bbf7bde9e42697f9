"""Development TLS material for the gateway (wss, security profiles 2 and 3) and the file intake (HTTPS, FTPS):

    python tools/dev_tls.py var/tls --host localhost --host csms.local --host 192.168.1.20

writes a development CA (``ca.crt.pem`` -- what charge points trust for the server -- and ``ca.key.pem``) and a
server certificate for the given host names and addresses (``server.crt.pem``, ``server.key.pem``; the first
host is the subject CN, as the 1.6 security whitepaper wants the FQDN there). Keys are written mode 0600 and
nothing is overwritten. Not for production: use certificates from your CA there.

docker compose mounts ``server.*.pem`` as secrets; the containers run as uid 10001, so give it the key
(``sudo chown 10001 var/tls/server.key.pem``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

from csms import pki  # noqa: E402

CA_DAYS, SERVER_DAYS = 5 * 365, 825


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="development CA and TLS server certificate")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--host", action="append", dest="hosts", help="DNS name or IP address (repeatable)")
    parser.add_argument("--key-type", default="ec-p256", choices=pki.KEY_TYPES)
    args = parser.parse_args(argv)
    hosts = args.hosts or ["localhost", "127.0.0.1"]
    folder: Path = args.directory
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    names = ["ca.crt.pem", "ca.key.pem", "server.crt.pem", "server.key.pem"]
    existing = [name for name in names if (folder / name).exists()]
    if existing:
        print(f"{folder}: {', '.join(existing)} exist already; nothing written", file=sys.stderr)
        return 1
    ca_key = pki.generate_key(args.key_type)
    ca = pki.issue_certificate(subject=pki.name("CSMS development TLS CA", "ocpp-csms development"),
                               public_key=ca_key.public_key(), issuer_cert=None, issuer_key=ca_key, days=CA_DAYS,
                               usage="ca")
    key = pki.generate_key(args.key_type)
    cert = pki.issue_certificate(subject=pki.name(hosts[0]), public_key=key.public_key(), issuer_cert=ca,
                                 issuer_key=ca_key, days=SERVER_DAYS, usage="server", hosts=hosts)
    pki.write_public(folder / "ca.crt.pem", pki.to_pem(ca))
    pki.write_private_key(folder / "ca.key.pem", ca_key)
    pki.write_public(folder / "server.crt.pem", pki.to_pem([cert, ca]))
    pki.write_private_key(folder / "server.key.pem", key)
    print(f"wrote {', '.join(names)} to {folder} (server certificate for {', '.join(hosts)}); charge points "
          f"trust {folder / 'ca.crt.pem'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
