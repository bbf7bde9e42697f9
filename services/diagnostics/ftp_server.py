"""The files FTP server (pyftpdlib, in a thread of its own): a charge point logs in with the one-time
credentials of its upload URL and STORs exactly one file; nothing can be read, listed or deleted.

pyftpdlib is synchronous, so every grant, record and commit operation runs on the service's event loop
(``asyncio.run_coroutine_threadsafe``): the FTP and HTTP paths share one implementation (intake.py).
Each login gets an empty jail directory; the file is moved into place when the transfer completes.

With a TLS context (FILES_TLS_*) it is explicit FTPS: AUTH TLS before USER/PASS and PROT P before PASV/PORT are
required (pyftpdlib's TLS handlers over pyOpenSSL), TLS 1.2 or newer; the credentials and the file never cross the
network in clear.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.log import logger as ftp_logger
from pyftpdlib.servers import FTPServer

from services.diagnostics.disk import safe_filename, unlink
from services.diagnostics.errors import GrantBusy, GrantNotFound, GrantSpent
from services.diagnostics.grants import Grant
from services.diagnostics.intake import FileIntake

if TYPE_CHECKING:
    from csms.config import Settings

log = logging.getLogger("csms.diagnostics.ftp")

T = TypeVar("T")
# longest an FTP session waits for the event loop (a grant check, a commit)
LOOP_TIMEOUT = 30.0


def ftps_context(settings: "Settings") -> Any:
    """The pyOpenSSL context of explicit FTPS (None without FILES_TLS_CERT_FILE). Raises ValueError (one line)."""
    if not settings.files_tls:
        return None
    from OpenSSL import SSL

    from csms import pki

    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION)
    try:
        key = pki.load_private_key(pki.read_pem_file(settings.files_tls_key_file),
                                   settings.files_tls_key_password or None)
        context.use_certificate_chain_file(settings.files_tls_cert_file)
        context.use_privatekey(key)
        context.check_privatekey()
    except (SSL.Error, OSError, ValueError, TypeError) as exc:
        raise ValueError(f"FILES_TLS_CERT_FILE / FILES_TLS_KEY_FILE ({settings.files_tls_cert_file}, "
                         f"{settings.files_tls_key_file}) for FTPS: {exc}") from None
    return context


def parse_port_range(spec: str | None) -> list[int] | None:
    """``"60000-60100"`` or ``"60000,60001"`` -> list of ports; empty/None -> None."""
    if not spec or not spec.strip():
        return None
    ports: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            ports.extend(range(lo, hi + 1))
        else:
            ports.append(int(part))
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise ValueError(f"invalid port range: {spec!r}")
    return ports


class _FtpUpload:
    """State of one STOR: the claimed grant and the jail file being written."""

    def __init__(self, server: FtpIntake, grant: Grant, claim_id: str, name: str, path: str) -> None:
        self.server = server
        self.grant = grant
        self.claim_id = claim_id
        self.name = name
        self.path = path
        self.finished = False
        self.last_refresh = time.monotonic()

    def refresh(self) -> None:
        files = self.server.files
        if time.monotonic() - self.last_refresh > files.claim_lease / 3:
            self.last_refresh = time.monotonic()
            try:
                self.server.run(files.grants.refresh(self.grant.token, self.claim_id, files.claim_lease))
            except Exception:
                log.warning("could not refresh FTP upload claim", exc_info=True)

    def discard(self) -> None:
        if self.finished:
            return
        self.finished = True
        unlink(self.path)
        try:
            self.server.run(self.server.files.grants.release(self.grant.token, self.claim_id))
        except Exception:  # the lease expires on its own
            log.warning("could not release FTP upload claim", exc_info=True)


class _LimitedFile:
    """File object handed to pyftpdlib: counts and hashes, and stops writing past the limit."""

    def __init__(self, raw: Any, upload: _FtpUpload) -> None:
        self._raw = raw
        self.upload = upload
        self.name = raw.name
        self.size = 0
        self.sha = hashlib.sha256()
        self.exceeded = False

    def write(self, data: bytes) -> int:
        if self.exceeded:
            return len(data)
        if self.size + len(data) > self.upload.grant.max_bytes:
            self.exceeded = True
            return len(data)
        self._raw.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def close(self) -> None:
        self._raw.close()


class _Refused(Exception):
    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply


class _JailFS(AbstractedFS):
    """Only lets the session write the file its STOR announced; nothing can be read."""

    def open(self, filename: str, mode: str) -> Any:
        handler = self.cmd_channel
        upload = getattr(handler, "_upload", None)
        if mode != "wb" or upload is None or os.path.realpath(filename) != os.path.realpath(upload.path):
            raise PermissionError(errno.EACCES, "Operation not permitted")
        return _LimitedFile(open(filename, "wb"), upload)  # noqa: SIM115 - closed by pyftpdlib

    def mkstemp(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Operation not permitted")


class _IntakeDTPHandler(DTPHandler):
    def handle_read(self) -> None:
        super().handle_read()
        f = self.file_obj
        if self._closed or not isinstance(f, _LimitedFile):
            return
        if f.exceeded:
            self.transfer_finished = False
            self.close()
        else:
            f.upload.refresh()

    def close(self) -> None:
        f = self.file_obj
        if not self._closed and self.receive and isinstance(f, _LimitedFile):
            if f.exceeded:
                self.transfer_finished = False
                self._resp = (f"552 Transfer aborted: file exceeds {f.upload.grant.max_bytes} bytes.", ftp_logger.info)
            elif self.transfer_finished:
                try:
                    self.cmd_channel._complete_upload(f)
                except _Refused as exc:
                    self.transfer_finished = False
                    self._resp = (exc.reply, ftp_logger.info)
                except Exception:
                    log.exception("storing FTP upload failed")
                    self.transfer_finished = False
                    self._resp = ("451 Local error: upload not stored.", ftp_logger.warning)
        super().close()


class _GrantAuthorizer(DummyAuthorizer):
    """Credentials come from the grants; every session gets only 'elw'."""

    PERMS = "elw"

    def __init__(self, server: FtpIntake) -> None:
        super().__init__()
        self.server = server

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        try:
            grant = self.server.run(self.server.files.grants.ftp_login(username, password))
        except Exception:
            log.exception("FTP login check failed")
            raise AuthenticationFailed("Authentication temporarily unavailable.") from None
        if grant is None:
            raise AuthenticationFailed("Authentication failed.")
        handler._grant = grant

    def get_home_dir(self, username: str) -> str:
        return str(self.server.sessions_dir)  # replaced by a per-session dir in handle_auth_success

    def has_user(self, username: str) -> bool:
        return False

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return perm in self.PERMS

    def get_perms(self, username: str) -> str:
        return self.PERMS

    def get_msg_login(self, username: str) -> str:
        return "Login successful; upload your file with STOR."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."


class _IntakeFTPHandler(FTPHandler):
    server_ref: FtpIntake  # set on the per-server subclass

    def __init__(self, conn: Any, server: Any, ioloop: Any = None) -> None:
        self._grant: Grant | None = None
        self._upload: _FtpUpload | None = None
        self._homes: list[str] = []
        super().__init__(conn, server, ioloop=ioloop)

    # -- session

    def handle_auth_success(self, home: str, password: str, msg_login: str) -> None:
        session_home = tempfile.mkdtemp(prefix="s-", dir=self.server_ref.sessions_dir)
        self._homes.append(session_home)
        super().handle_auth_success(session_home, password, msg_login)

    def flush_account(self) -> None:
        super().flush_account()
        if self._upload is not None and self.data_channel is None:
            self._discard()
        self._grant = None

    def on_disconnect(self) -> None:
        self._discard()
        for home in self._homes:
            shutil.rmtree(home, ignore_errors=True)
        self._homes.clear()

    def _discard(self) -> None:
        upload, self._upload = self._upload, None
        if upload is not None:
            upload.discard()

    # -- uploads

    def ftp_STOR(self, file: str, mode: str = "w") -> str | None:
        if "a" in mode:
            self.respond("550 Appending is not allowed.")
            return None
        if self._restart_position:
            self._restart_position = 0
            self.respond("554 Resuming uploads is not supported.")
            return None
        if self._upload is not None:
            self.respond("450 An upload is already in progress in this session.")
            return None
        grant = self._grant
        if grant is None or self.fs is None:
            self.respond("530 Log in first.")
            return None
        files = self.server_ref.files
        try:
            claim_id = self.server_ref.run(files.grants.claim(grant.token, files.claim_lease))
        except GrantSpent:
            self.respond("550 This upload URL has already been used.")
            return None
        except GrantBusy:
            self.respond("450 Another upload for this URL is in progress.")
            return None
        except GrantNotFound:
            self.respond("550 This upload URL has expired.")
            return None
        except Exception:
            log.exception("FTP claim failed")
            self.respond("451 Local error; try again later.")
            return None
        name = safe_filename(os.path.basename(file.replace("\\", "/")))
        path = os.path.join(self.fs.root, name)
        self._upload = _FtpUpload(self.server_ref, grant, claim_id, name, path)
        result = super().ftp_STOR(path, mode)
        if result is None:  # could not open the file
            self._discard()
        return result

    def ftp_STOU(self, line: str) -> None:
        self.respond("502 STOU not supported; use STOR.")

    def ftp_APPE(self, file: str) -> None:
        self.respond("550 Appending is not allowed.")

    def _complete_upload(self, f: _LimitedFile) -> None:
        """Called by the data channel when the whole file arrived (before replying 226)."""
        upload = f.upload
        f.close()
        if f.size == 0:
            raise _Refused("550 Empty file rejected.")
        try:
            self.server_ref.run(self.server_ref.files.commit(
                upload.grant, upload.claim_id, upload.path, filename=upload.name, size=f.size,
                sha256=f.sha.hexdigest(), protocol="ftp"))
        except GrantSpent:
            raise _Refused("550 This upload URL has already been used.") from None
        upload.finished = True
        if self._upload is upload:
            self._upload = None

    def on_incomplete_file_received(self, file: str) -> None:
        self._discard()

    def on_file_received(self, file: str) -> None:
        if self._upload is not None and self._upload.finished:
            self._upload = None


class FtpIntake:
    """pyftpdlib server in a background thread accepting one STOR per upload grant.

    ``passive_ports``: ports for PASV data connections (None: OS-assigned).
    ``masquerade_address``: public IP announced in PASV replies when behind NAT.
    ``auth_failed_delay``: seconds before answering a refused login (slows brute force).
    """

    def __init__(
        self,
        files: FileIntake,
        host: str = "0.0.0.0",
        port: int = 0,
        *,
        passive_ports: Sequence[int] | None = None,
        masquerade_address: str | None = None,
        idle_timeout: float = 120.0,
        data_timeout: float = 120.0,
        auth_failed_delay: float = 1.0,
        max_connections: int = 256,
        max_connections_per_ip: int = 16,
        tls_context: Any = None,
    ) -> None:
        self.files = files
        self.host = host
        self.port = port
        self.passive_ports = list(passive_ports) if passive_ports else None
        self.masquerade_address = masquerade_address
        self.idle_timeout = idle_timeout
        self.data_timeout = data_timeout
        self.auth_failed_delay = auth_failed_delay
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.tls_context = tls_context  # pyOpenSSL context: explicit FTPS (ftps_context)
        self.sessions_dir = files.disk.ftp_dir / uuid.uuid4().hex[:12]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: FTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def set_tls_context(self, context: Any) -> None:
        """New FTPS material (services/diagnostics/tls.py): control connections from now on use it (AUTH TLS reads
        the handler class's context; a session's data channels keep its control connection's)."""
        self.tls_context = context
        if self._server is not None and context is not None:
            self._server.handler.ssl_context = context

    def run(self, coroutine: Awaitable[T]) -> T:
        """Run ``coroutine`` on the service's event loop and wait for it (called from the FTP thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            if asyncio.iscoroutine(coroutine):
                coroutine.close()
            raise RuntimeError("the event loop is gone")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(LOOP_TIMEOUT)  # type: ignore[arg-type]

    def start(self) -> None:
        """Bind (``self.port`` becomes the real port) and serve in a daemon thread. Call it from the event
        loop the intake runs on."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.sessions_dir.mkdir(parents=True, exist_ok=True)

        tls = self.tls_context is not None
        dtp_bases = (_IntakeDTPHandler, TLS_DTPHandler) if tls else (_IntakeDTPHandler,)
        handler_bases = (_IntakeFTPHandler, TLS_FTPHandler) if tls else (_IntakeFTPHandler,)
        tls_options = {"ssl_context": self.tls_context, "tls_control_required": True,
                       "tls_data_required": True} if tls else {}
        dtp_cls = type("IntakeDTPHandler", dtp_bases, {"timeout": self.data_timeout})
        handler_cls = type("IntakeFTPHandler", handler_bases, {
            **tls_options,
            "server_ref": self,
            "authorizer": _GrantAuthorizer(self),
            "abstracted_fs": _JailFS,
            "dtp_handler": dtp_cls,
            "passive_ports": self.passive_ports,
            "masquerade_address": self.masquerade_address,
            "timeout": self.idle_timeout,
            "auth_failed_timeout": self.auth_failed_delay,
            "banner": "CSMS file intake ready.",
            "use_sendfile": False,
            "permit_foreign_addresses": False,
            "permit_privileged_ports": False,
        })
        server = FTPServer((self.host, self.port), handler_cls, ioloop=IOLoop())
        server.max_cons = self.max_connections
        server.max_cons_per_ip = self.max_connections_per_ip
        self._server = server
        self.port = server.address[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"ftp-intake-{self.port}", daemon=True)
        self._thread.start()
        log.info("%s intake listening on %s:%s", "FTPS" if tls else "FTP", self.host, self.port)

    def _serve(self) -> None:
        server = self._server
        assert server is not None
        ioloop = server.ioloop
        try:
            while not self._stop.is_set():
                try:
                    if ioloop.socket_map:
                        ioloop.poll(0.1)
                    else:
                        time.sleep(0.1)
                    ioloop.sched.poll()
                except Exception:
                    log.exception("FTP intake loop error")
        finally:
            # release the grants of uploads cut off by the shutdown, then drop every socket
            for channel in list(ioloop.socket_map.values()):
                if isinstance(channel, _IntakeFTPHandler):
                    with contextlib.suppress(Exception):
                        channel._discard()
            with contextlib.suppress(Exception):
                server.close_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, disconnect clients and remove session directories. Call it off the event loop
        (``asyncio.to_thread``): the FTP thread may need the loop to release grants."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout)
        self._server = None
        shutil.rmtree(self.sessions_dir, ignore_errors=True)
