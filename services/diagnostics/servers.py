"""Start and stop the files HTTP and FTP servers together, and publish the URLs they are reached at.

With FILES_TLS_CERT_FILE / FILES_TLS_KEY_FILE the HTTP server speaks HTTPS and the FTP server FTPS (explicit:
AUTH TLS is required before logging in, PROT P before any transfer), TLS 1.2 or newer; the default public URLs
are then https:// and ftps://. The material is read again when its files change and on SIGHUP (tls.py).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

from aiohttp import web

from services.diagnostics.ftp_server import FtpIntake, parse_port_range
from services.diagnostics.http_server import build_http_app
from services.diagnostics.intake import FileIntake, PublicUrls
from services.diagnostics.tls import FilesTls, TlsMaterialError

__all__ = ["FileServers", "TlsMaterialError", "run_file_servers"]


class FileServers(NamedTuple):
    intake: FileIntake
    runner: web.AppRunner
    ftp: FtpIntake | None
    http_port: int        # where the servers listen (the public URLs are intake.urls)
    ftp_port: int | None
    tls: FilesTls         # the HTTPS / FTPS material, reloadable


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
    tls = FilesTls(settings, ftps=enable_ftp)
    tls.load()
    runner = web.AppRunner(build_http_app(intake, operator_token=operator_token), access_log=None)
    await runner.setup()
    ftp: FtpIntake | None = None
    try:
        site = web.TCPSite(runner, settings.files_host, settings.files_port, ssl_context=tls.listening)
        await site.start()
        http_port = _bound_port(runner, settings.files_port)
        if enable_ftp:
            options = dict(ftp_options or {})
            options.setdefault("passive_ports", parse_port_range(settings.ftp_passive_ports))
            options.setdefault("masquerade_address", settings.ftp_masquerade_address or None)
            ftp = FtpIntake(intake, settings.files_host, settings.ftp_port, tls_context=tls.ftps, **options)
            ftp.start()
            tls.on_ftps = ftp.set_tls_context
        intake.urls = PublicUrls.from_settings(settings, http_port, ftp.port if ftp else None)
        tls.watch.start()
        yield FileServers(intake, runner, ftp, http_port, ftp.port if ftp else None, tls)
    finally:
        await tls.watch.stop()
        if ftp is not None:
            await asyncio.to_thread(ftp.stop)
        await runner.cleanup()


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        if isinstance(address, (tuple, list)) and len(address) >= 2:
            return int(address[1])
    return configured
