"""Start and stop the files HTTP and FTP servers together, and publish the URLs they are reached at.

With FILES_TLS_CERT_FILE / FILES_TLS_KEY_FILE the HTTP server speaks HTTPS and the FTP server FTPS (explicit:
AUTH TLS is required before logging in, PROT P before any transfer), TLS 1.2 or newer; the default public URLs
are then https:// and ftps://.
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

from aiohttp import web

from csms.config import Settings
from services.diagnostics.ftp_server import FtpIntake, ftps_context, parse_port_range
from services.diagnostics.http_server import build_http_app
from services.diagnostics.intake import FileIntake, PublicUrls


class TlsMaterialError(Exception):
    """FILES_TLS_* cannot be used (one line)."""


class FileServers(NamedTuple):
    intake: FileIntake
    runner: web.AppRunner
    ftp: FtpIntake | None
    http_port: int        # where the servers listen (the public URLs are intake.urls)
    ftp_port: int | None


def https_context(settings: Settings) -> ssl.SSLContext | None:
    """The HTTPS server context (None without FILES_TLS_CERT_FILE). Raises TlsMaterialError."""
    if not settings.files_tls:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.files_tls_cert_file, settings.files_tls_key_file,
                                password=settings.files_tls_key_password or None)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsMaterialError(f"FILES_TLS_CERT_FILE / FILES_TLS_KEY_FILE ({settings.files_tls_cert_file}, "
                               f"{settings.files_tls_key_file}): {exc}") from None
    return context


@contextlib.asynccontextmanager
async def run_file_servers(
    intake: FileIntake,
    *,
    operator_token: str,
    enable_ftp: bool = True,
    ftp_options: dict[str, Any] | None = None,
) -> AsyncIterator[FileServers]:
    """Serve HTTP(S) on FILES_HOST:FILES_HTTP_PORT and FTP(S) on FILES_HOST:FILES_FTP_PORT (0: a free port).

    ``operator_token`` guards the operator routes (required: they are never open). ``intake.urls`` become the
    public URLs: FILES_PUBLIC_HTTP_URL / FILES_PUBLIC_FTP_URL when set, else the public host with the bound
    ports. FTP passive ports and masquerade address come from ``ftp_options`` or FILES_FTP_PASSIVE_PORTS /
    FILES_FTP_MASQUERADE_ADDRESS. Raises TlsMaterialError.
    """
    settings = intake.settings
    https = https_context(settings)
    try:
        ftps = ftps_context(settings) if enable_ftp else None
    except ValueError as exc:
        raise TlsMaterialError(str(exc)) from None
    runner = web.AppRunner(build_http_app(intake, operator_token=operator_token), access_log=None)
    await runner.setup()
    ftp: FtpIntake | None = None
    try:
        site = web.TCPSite(runner, settings.files_host, settings.files_port, ssl_context=https)
        await site.start()
        http_port = _bound_port(runner, settings.files_port)
        if enable_ftp:
            options = dict(ftp_options or {})
            options.setdefault("passive_ports", parse_port_range(settings.ftp_passive_ports))
            options.setdefault("masquerade_address", settings.ftp_masquerade_address or None)
            ftp = FtpIntake(intake, settings.files_host, settings.ftp_port, tls_context=ftps, **options)
            ftp.start()
        intake.urls = PublicUrls.from_settings(settings, http_port, ftp.port if ftp else None)
        yield FileServers(intake, runner, ftp, http_port, ftp.port if ftp else None)
    finally:
        if ftp is not None:
            await asyncio.to_thread(ftp.stop)
        await runner.cleanup()


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        if isinstance(address, (tuple, list)) and len(address) >= 2:
            return int(address[1])
    return configured
