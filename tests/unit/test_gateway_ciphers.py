"""The gateway's TLS settings as the README states them."""
from __future__ import annotations

import re
from pathlib import Path

from services.gateway import tls

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_names_the_tls_1_2_cipher_suites_the_gateway_enables():
    section = (ROOT / "README.md").read_text().split("### TLS", 1)[1].split("###", 1)[0]
    named = set(re.findall(r"`((?:ECDHE-(?:ECDSA|RSA)-)?(?:AES\d+-GCM-SHA\d+|CHACHA20-POLY1305))`", section))
    assert named == set(tls.TLS12_CIPHERS.split(":"))
