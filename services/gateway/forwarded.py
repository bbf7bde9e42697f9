"""TLS offload: what a trusted proxy (an ingress controller terminating TLS) says about a handshake. Pure
functions, unit-tested in tests/unit/test_gateway_profiles.py.

Only a peer inside GATEWAY_TRUSTED_PROXIES is believed: ``X-Forwarded-Proto`` (https/wss: the charge point used
TLS), ``X-Forwarded-For`` (the charge point's address, for the login lockout) and the client certificate header.
The certificate is verified here again (chain to a trusted CA, validity, client-auth usage): the proxy only
proves that the charge point holds its key.

Every per-address limit of the login lockout counts an *address group* (:func:`address_group`): an IPv4 address,
or an IPv6 address's network of GATEWAY_AUTH_IPV6_PREFIX bits (64: one host usually gets a whole /64 and could
rotate within it at will).
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
from typing import Iterable, Sequence
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from csms import pki

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_CERT_HEADER_CHARS = 16 * 1024   # a URL-encoded PEM certificate is ~1-3 KiB
MAX_FORWARDED_FOR_ENTRIES = 32


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:           # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:                         # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def trusted(address: str, networks: Sequence[Network]) -> bool:
    ip = _ip(address) if address else None
    return ip is not None and any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: str | None, networks: Sequence[Network]) -> str:
    """The charge point's address: the peer's, or -- when the peer is a trusted proxy -- the nearest address in
    X-Forwarded-For that is not a trusted proxy (entries further left can be forged by the client)."""
    if not forwarded_for or not trusted(peer, networks):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",")][-MAX_FORWARDED_FOR_ENTRIES:]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            return peer  # garbage: keep what the socket says
        if not any(ip in network for network in networks):
            return str(ip)
    return peer


def address_group(address: str, ipv6_prefix: int) -> str:
    """What the per-address limits count for ``address``: an IPv4 address as it is (an IPv4-mapped IPv6 address as
    its IPv4 address), an IPv6 address as its network of ``ipv6_prefix`` bits (``2001:db8:1:2::/64``; the zone of a
    link-local address dropped), anything else (no address: a Unix socket) as it is."""
    ip = _ip(address) if address else None
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    plain = ipaddress.IPv6Address(int(ip))                 # (without a %zone)
    if ipv6_prefix >= 128:
        return str(plain)
    return str(ipaddress.IPv6Network((plain, ipv6_prefix), strict=False))


def forwarded_tls(proto: str | None) -> bool:
    """X-Forwarded-Proto of a trusted proxy: the charge point connected with TLS."""
    first = (proto or "").split(",", 1)[0].strip().lower()
    return first in ("https", "wss")


def certificate_from_header(value: str) -> x509.Certificate:
    """The client certificate a proxy forwarded: an Envoy X-Forwarded-Client-Cert element (``Cert="<URL-encoded
    PEM>"``), URL-encoded PEM (nginx ``$ssl_client_escaped_cert``), PEM with spaces for newlines, or base64 DER.
    Raises ValueError (one line)."""
    if len(value) > MAX_CERT_HEADER_CHARS:
        raise ValueError(f"client certificate header longer than {MAX_CERT_HEADER_CHARS} characters")
    text = value.strip()
    if "Cert=" in text or "cert=" in text:
        if "," in _outside_quotes(text):
            raise ValueError("client certificate header names several proxies' certificates")
        text = _xfcc_cert(text)
    text = unquote(text)
    if "-----BEGIN CERTIFICATE-----" in text:
        body = text.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
        der_text = "".join(body.split())
    else:
        der_text = "".join(text.split())
    try:
        der = base64.b64decode(der_text, validate=True)
        return x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError):
        raise ValueError("client certificate header is not a certificate") from None


def _outside_quotes(text: str) -> str:
    out, quoted = [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted:
            out.append(ch)
    return "".join(out)


def _xfcc_cert(element: str) -> str:
    for pair in _split_pairs(element):
        key, _, value = pair.partition("=")
        if key.strip().lower() == "cert":
            return value.strip().strip('"')
    raise ValueError("X-Forwarded-Client-Cert carries no Cert")


def _split_pairs(element: str) -> Iterable[str]:
    part, quoted = [], False
    for ch in element:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            yield "".join(part)
            part = []
        else:
            part.append(ch)
    yield "".join(part)


def verify_client_certificate(cert: x509.Certificate, trust: Sequence[x509.Certificate],
                              now: dt.datetime | None = None) -> str | None:
    """Why a forwarded client certificate is not acceptable, or None: it must be signed by a trusted CA
    certificate (itself valid now), be valid now, not be a CA and allow client authentication."""
    now = now or pki.utcnow()
    if not pki.not_before(cert) <= now <= pki.not_after(cert):
        return "the client certificate is expired or not valid yet"
    if pki.is_ca(cert):
        return "the client certificate is a CA certificate"
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usage and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usage:
            return "the client certificate does not allow client authentication"
    except x509.ExtensionNotFound:
        pass
    for issuer in trust:
        if pki.signed_by(cert, issuer) and pki.not_before(issuer) <= now <= pki.not_after(issuer):
            return None
    return "the client certificate is not issued by a trusted CA"
