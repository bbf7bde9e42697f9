"""TLS served by the gateway (security profiles 2 and 3) and the CAs client certificates are trusted from.

* The server certificate chain and key come from GATEWAY_TLS_CERT_FILE / GATEWAY_TLS_KEY_FILE (files, e.g. a
  Kubernetes Secret). They are read again when the files change (checked every GATEWAY_TLS_RELOAD_INTERVAL
  seconds) and on SIGHUP: new handshakes get the new material, established connections are not touched. The
  listening socket keeps one SSLContext; its SNI callback (called for every ClientHello, with or without SNI)
  moves each new handshake to the current context -- certificate, key and trusted CAs.
* TLS 1.2 or newer; the whitepaper's cipher suites (ECDHE-ECDSA/RSA AES-GCM, and the RSA AES-GCM ones it lists)
  for TLS 1.2, OpenSSL's for TLS 1.3.
* Client certificates are requested, not required (profile 2 charge points have none). One that does not chain
  to a trusted CA fails the handshake. Trusted: the security service's CA (fetched over the bus, refreshed) and
  GATEWAY_TLS_CLIENT_CA_FILE. Which charge point a certificate names, and whether it is revoked, is checked at
  the websocket handshake (handshake.py).
A reload that fails (a half-written file, a key that does not match) keeps the previous material and says why.
"""
from __future__ import annotations

import logging
import ssl
from typing import Any

from cryptography import x509

from csms import pki
from csms.config import Settings
from csms.filewatch import FileWatch, reload_or_keep, stamp

log = logging.getLogger("services.gateway.tls")

# TLS 1.2 suites: the whitepaper's (TLS_ECDHE_ECDSA_WITH_AES_128/256_GCM, TLS_RSA_WITH_AES_128/256_GCM) and the
# ECDHE-RSA / ChaCha20 ones modern clients prefer. TLS 1.3 suites are OpenSSL's defaults (all AEAD).
TLS12_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"
                 "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                 "AES128-GCM-SHA256:AES256-GCM-SHA384")
EXPIRY_WARNING_DAYS = 30


class TlsUnavailable(Exception):
    """The TLS material cannot be used (one line: which file, what is wrong)."""


class GatewayTls:
    """The gateway's TLS server context (when GATEWAY_TLS_CERT_FILE is set) and its trusted client CAs."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.context: ssl.SSLContext | None = None
        self.server_chain: list[x509.Certificate] = []
        self.csms_cas: list[x509.Certificate] = []     # the security service's CA chain
        self.extra_cas: list[x509.Certificate] = []    # GATEWAY_TLS_CLIENT_CA_FILE
        self.watch = FileWatch(self._files, settings.gateway_tls_reload_interval, self.reload, "TLS")
        self.reloads = 0                               # material loaded after the first time

    @property
    def serving(self) -> bool:
        return bool(self.settings.gateway_tls_cert_file)

    def _files(self) -> list[str]:
        s = self.settings
        return [f for f in (s.gateway_tls_cert_file, s.gateway_tls_key_file, s.gateway_tls_client_ca_file) if f]

    def trusted(self) -> list[x509.Certificate]:
        """Every CA certificate a client certificate may be issued by."""
        seen, found = set(), []
        for cert in [*self.csms_cas, *self.extra_cas]:
            fingerprint = pki.fingerprint(cert)
            if fingerprint not in seen:
                seen.add(fingerprint)
                found.append(cert)
        return found

    # ---- loading --------------------------------------------------------------------------------
    def load(self) -> None:
        """Read the files and build the context. Raises TlsUnavailable."""
        s = self.settings
        files_now = stamp(self._files())
        extra: list[x509.Certificate] = []
        if s.gateway_tls_client_ca_file:
            try:
                extra = pki.load_certificates(pki.read_pem_file(s.gateway_tls_client_ca_file))
            except (OSError, ValueError) as exc:
                raise TlsUnavailable(f"GATEWAY_TLS_CLIENT_CA_FILE {s.gateway_tls_client_ca_file}: {exc}") from None
        chain: list[x509.Certificate] = []
        context = None
        if self.serving:
            try:
                chain = pki.load_certificates(pki.read_pem_file(s.gateway_tls_cert_file))
            except (OSError, ValueError) as exc:
                raise TlsUnavailable(f"GATEWAY_TLS_CERT_FILE {s.gateway_tls_cert_file}: {exc}") from None
            context = self._build(extra + self.csms_cas)
        self.extra_cas, self.server_chain = extra, chain
        self.watch.mark(files_now)
        if context is not None:
            self.context = context
            self._describe()

    def _build(self, trust: list[x509.Certificate]) -> ssl.SSLContext:
        s = self.settings
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(TLS12_CIPHERS)
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
        try:
            context.load_cert_chain(s.gateway_tls_cert_file, s.gateway_tls_key_file,
                                    password=s.gateway_tls_key_password or None)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsUnavailable(f"GATEWAY_TLS_CERT_FILE / GATEWAY_TLS_KEY_FILE ({s.gateway_tls_cert_file}, "
                                 f"{s.gateway_tls_key_file}): {exc}") from None
        if trust:
            context.load_verify_locations(cadata=pki.to_pem(trust))
        # requested, not required: profile 3 presents one, profile 2 none. Always: a handshake keeps the verify mode
        # of the listening socket's context (the SNI switch below changes certificate and CAs, not the mode), so a
        # CA that arrives later works without a restart
        context.verify_mode = ssl.CERT_OPTIONAL
        context.sni_callback = self._select
        return context

    def _select(self, ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        """Every new handshake uses the newest context (called by OpenSSL for each ClientHello)."""
        current = self.context
        if current is not None and context is not current:
            ssl_object.context = current

    def _describe(self) -> None:
        leaf = self.server_chain[0]
        days = (pki.not_after(leaf) - pki.utcnow()).days
        level = logging.WARNING if days < EXPIRY_WARNING_DAYS else logging.INFO
        log.log(level, "TLS server certificate %s (serial %s) valid until %s (%d days); client certificates "
                       "trusted from %d CA certificate(s)", leaf.subject.rfc4514_string(),
                pki.serial_hex(leaf.serial_number), pki.not_after(leaf).isoformat(), days, len(self.trusted()))

    def reload(self, why: str = "requested") -> bool:
        """Load the files again; on failure keep what was loaded. True when new material is in use."""
        if not reload_or_keep(self.load, TlsUnavailable, "TLS material", why, log):
            return False
        self.reloads += 1
        return True

    def set_csms_cas(self, chain: list[x509.Certificate]) -> bool:
        """The security service's CA chain; the context is rebuilt when it changed. True when it changed."""
        if [pki.fingerprint(c) for c in chain] == [pki.fingerprint(c) for c in self.csms_cas]:
            return False
        previous = self.csms_cas
        self.csms_cas = chain
        if self.serving:
            try:
                self.context = self._build(self.extra_cas + chain)
            except TlsUnavailable as exc:
                self.csms_cas = previous
                log.error("client CAs not updated: %s", exc)
                return False
        log.info("client certificates issued by %s are trusted (the security service's CA)",
                 chain[0].subject.rfc4514_string() if chain else "-")
        return True

    # ---- watching the files -------------------------------------------------------------------------
    def start_watching(self) -> None:
        self.watch.start()

    async def stop_watching(self) -> None:
        await self.watch.stop()


def peer_certificate(transport: Any) -> x509.Certificate | None:
    """The client certificate the TLS handshake verified (None: plain connection or no certificate)."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def is_tls(transport: Any) -> bool:
    return transport is not None and transport.get_extra_info("ssl_object") is not None
