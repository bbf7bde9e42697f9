"""Charge point passwords for HTTP Basic auth (OCPP security profiles 1 and 2), per the 1.6 security
whitepaper: ChangeConfiguration carries ``AuthorizationKey`` hex-encoded and the charge point then presents
the decoded bytes as its password. Passwords are bytes end to end; only scrypt hashes are kept.

How a key is read (docs/adr/authorization-key-encoding.md):

* hex text (an even number of hex digits): the password is the decoded bytes; a charge point that presents
  the hex text itself is accepted too (the text carries exactly the same secret);
* anything else: the password is the text's UTF-8 bytes, and the operator is warned that the whitepaper
  wants hex.

A pending key (an AuthorizationKey change the charge point has not confirmed) is hashed with the salt of the
current one, so one scrypt of the presented password checks both (:func:`matching`): a station with a pending
key costs the same work as any other id (docs/adr/basic-auth-under-attack.md).
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


def hash_secret(secret: bytes, salt: bytes | None = None) -> str:
    """The stored form of a key: ``scrypt$<salt>$<digest>`` (a fresh salt unless ``salt`` is given: the pending
    key takes the current one's, see :func:`salt_of`)."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(secret, salt=salt, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def _parse(stored: str) -> tuple[bytes, bytes] | None:
    try:
        scheme, salt, digest = stored.split("$")
        salt_bytes, digest_bytes = base64.b64decode(salt), base64.b64decode(digest)
    except (ValueError, binascii.Error):
        return None
    return (salt_bytes, digest_bytes) if scheme == "scrypt" and salt_bytes and digest_bytes else None


def salt_of(stored: str | None) -> bytes | None:
    """The salt of a stored hash (None: no hash, or not one of ours)."""
    parsed = _parse(stored) if stored else None
    return parsed[0] if parsed else None


def matching(presented: bytes, stored: list[str]) -> int | None:
    """Which of the stored hashes a presented Basic-auth password matches (either reading of hex text), or None.

    The work is one scrypt per reading of the password and per distinct salt -- a station's current and pending
    key share one salt, so one scrypt per reading for every station -- and every digest is compared in constant
    time whichever matches (no early return)."""
    if not 0 < len(presented) <= MAX_PASSWORD_BYTES:
        return None
    parsed = [_parse(value) for value in stored]
    salts = list(dict.fromkeys(p[0] for p in parsed if p is not None))
    found: int | None = None
    for secret in candidates(presented):
        for salt in salts:
            candidate = hashlib.scrypt(secret, salt=salt, **_SCRYPT)
            for index, entry in enumerate(parsed):
                if entry is not None and entry[0] == salt and hmac.compare_digest(candidate, entry[1]) \
                        and found is None:
                    found = index
    return found


def verify(presented: bytes, stored: str) -> bool:
    """Does a presented Basic-auth password match a stored key hash (either reading of hex text)?"""
    return matching(presented, [stored]) is not None
