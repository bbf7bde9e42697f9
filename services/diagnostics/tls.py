"""The file intake's TLS material (FILES_TLS_CERT_FILE / FILES_TLS_KEY_FILE): HTTPS and explicit FTPS, TLS 1.2 or
newer, read again when the files change (checked every FILES_TLS_RELOAD_INTERVAL seconds -- a renewed Kubernetes
Secret) and on SIGHUP, like the gateway's (services/gateway/tls.py): new handshakes get the new material,
connections already open keep theirs, and a replacement that cannot be used keeps the previous one (logged).

HTTPS: the listening socket keeps the context it was opened with; its SNI callback (called for every ClientHello)
moves each new handshake to the newest context. FTPS: the FTP server's handler class gets the newest pyOpenSSL
context, which every new control connection takes (ftp_server.FtpIntake.set_tls_context).
"""
from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

from csms.config import Settings
from csms.filewatch import FileWatch, reload_or_keep, stamp
from services.diagnostics.ftp_server import ftps_context

log = logging.getLogger("services.diagnostics.tls")



class TlsMaterialError(Exception):
    """FILES_TLS_* cannot be used (one line)."""


def https_context(settings: Settings) -> ssl.SSLContext:
    """An HTTPS server context of the files. Raises TlsMaterialError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.files_tls_cert_file, settings.files_tls_key_file,
                                password=settings.files_tls_key_password or None)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsMaterialError(f"FILES_TLS_CERT_FILE / FILES_TLS_KEY_FILE ({settings.files_tls_cert_file}, "
                               f"{settings.files_tls_key_file}): {exc}") from None
    return context


class FilesTls:
    """The current HTTPS and FTPS contexts (none without FILES_TLS_CERT_FILE)."""

    def __init__(self, settings: Settings, ftps: bool = True):
        self.settings = settings
        self.ftps_enabled = ftps
        self.listening: ssl.SSLContext | None = None   # what the HTTPS socket was opened with
        self.https: ssl.SSLContext | None = None       # the newest, every new handshake moves to it
        self.ftps: Any = None                          # the newest pyOpenSSL context
        self.on_ftps: Callable[[Any], None] | None = None
        interval = settings.files_tls_reload_interval
        self.watch = FileWatch(self._files, interval, self.reload, "file intake TLS")
        self.reloads = 0

    @property
    def serving(self) -> bool:
        return self.settings.files_tls

    def _files(self) -> list[str]:
        s = self.settings
        return [f for f in (s.files_tls_cert_file, s.files_tls_key_file) if f] if self.serving else []

    def load(self) -> None:
        """Read the files and build both contexts. Raises TlsMaterialError."""
        if not self.serving:
            return
        files_now = stamp(self._files())
        https = https_context(self.settings)
        try:
            ftps = ftps_context(self.settings) if self.ftps_enabled else None
        except ValueError as exc:
            raise TlsMaterialError(str(exc)) from None
        https.sni_callback = self._select
        self.https, self.ftps = https, ftps
        if self.listening is None:
            self.listening = https
        if ftps is not None and self.on_ftps is not None:
            self.on_ftps(ftps)
        self.watch.mark(files_now)

    def _select(self, ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        current = self.https
        if current is not None and context is not current:
            ssl_object.context = current

    def reload(self, why: str = "requested") -> bool:
        """Load the files again; on failure keep what was loaded. True when new material is in use."""
        if not reload_or_keep(self.load, TlsMaterialError, "file intake TLS material", why, log):
            return False
        self.reloads += 1
        return True
