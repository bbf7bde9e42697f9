"""Charge point passwords for HTTP Basic auth (OCPP security profiles 1 and 2), per the 1.6 security
whitepaper: ChangeConfiguration carries ``AuthorizationKey`` hex-encoded and the charge point then presents
the decoded bytes as its password. Passwords are bytes end to end; only scrypt hashes are kept.

How a key is read (docs/adr/authorization-key-encoding.md):

* hex text (an even number of hex digits): the password is the decoded bytes; a charge point that presents
  the hex text itself is accepted too (the text carries exactly the same secret);
* anything else: the password is the text's UTF-8 bytes, and the operator is warned that the whitepaper
  wants hex.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re

_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_HEX_BYTES = re.compile(rb"(?:[0-9A-Fa-f]{2})+")
MAX_PASSWORD_BYTES = 512  # bound on what a charge point may present (the whitepaper's keys are <= 20 bytes)
MIN_KEY_BYTES, MAX_KEY_BYTES = 16, 20  # AuthorizationKey length in the whitepaper


def is_hex(value: str) -> bool:
    return bool(_HEX.fullmatch(value))


def key_bytes(value: str) -> bytes:
    """The password a configured AuthorizationKey stands for."""
    return bytes.fromhex(value) if is_hex(value) else value.encode("utf-8")


def key_warnings(value: str) -> list[str]:
    """What an operator should know about an AuthorizationKey before it is sent (it is sent anyway)."""
    if not is_hex(value):
        return ["AuthorizationKey is not hexadecimal as the OCPP 1.6 security whitepaper requires: the charge "
                "point will be expected to present this text itself as its password"]
    size = len(value) // 2
    if not MIN_KEY_BYTES <= size <= MAX_KEY_BYTES:
        return [f"AuthorizationKey decodes to {size} bytes; the OCPP 1.6 security whitepaper asks for "
                f"{MIN_KEY_BYTES} to {MAX_KEY_BYTES}"]
    return []


def candidates(presented: bytes) -> list[bytes]:
    """The secrets a presented password may stand for: itself, and its decoding when it is hex text."""
    found = [presented]
    if _HEX_BYTES.fullmatch(presented):
        found.append(binascii.unhexlify(presented))
    return found


def hash_secret(secret: bytes) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret, salt=salt, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_secret(secret: bytes, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
        salt_bytes, digest_bytes = base64.b64decode(salt), base64.b64decode(digest)
    except (ValueError, binascii.Error):
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(secret, salt=salt_bytes, **_SCRYPT)
    return hmac.compare_digest(candidate, digest_bytes)


def verify(presented: bytes, stored: str) -> bool:
    """Does a presented Basic-auth password match a stored key hash (either reading of hex text)?"""
    if not 0 < len(presented) <= MAX_PASSWORD_BYTES:
        return False
    return any(verify_secret(secret, stored) for secret in candidates(presented))
