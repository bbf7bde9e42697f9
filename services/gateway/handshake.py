"""Who gets in: the websocket handshake of a charge point, from its id to the security profile it connects at.

1. The id from the path (admission.py); the source address (a trusted proxy's X-Forwarded-For, forwarded.py) and
   the address group every per-address limit counts (an IPv6 address by its /64, forwarded.address_group).
2. Locked out (lockout.py)? 429 + Retry-After, before anything else is looked at.
3. The transport: TLS served here (tls.py) or at a trusted proxy (X-Forwarded-Proto). A client certificate: the
   one the TLS handshake verified, or the one a trusted proxy forwarded (verified here). It must name this charge
   point (subject CN) and not be revoked in the security service's records.
4. One round trip to the stations service (``stations.admit``): the last boot answer, the recorded security
   profile and -- when Basic credentials came and no certificate -- whether the password is right. The revocation
   check runs at the same time.
5. The profile decision (profiles.py): never below the recorded profile nor the deployment's floor, and never
   without credentials for a station that has a password.
Failed logins are counted (lockout.py) -- to the end even when the handshake's budget runs out meanwhile (the
bookkeeping is shielded from its cancellation); nothing here keeps state of its own.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from cryptography import x509
from redis.exceptions import RedisError
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from csms import pki
from csms.client import ApiCallFailed, call_api
from csms.config import proxy_networks
from csms.contracts.api.stations import AdmitResult
from csms.contracts.base import format_utc, utc_now
from csms.contracts.events import CertificateChanged
from services.gateway import admission, forwarded, lanes, lockout, profiles, tls
from services.gateway.admission import Refused

if TYPE_CHECKING:
    from services.gateway.app import Gateway

log = logging.getLogger("services.gateway.handshake")

ADMIT_RETRY_AFTER = 10  # seconds a charge point is asked to wait when the handshake cannot be answered
CA_REFRESH_SECONDS = 300.0  # how often the security service's CA is fetched again
CLAIM_POLL_SECONDS = 0.1  # how often a clean check asks again for its address's place held by another instance
CLOSE_POLICY_VIOLATION = 1008  # the charge point may no longer be connected (its certificate was revoked)
WWW_AUTHENTICATE = {"WWW-Authenticate": 'Basic realm="ocpp", charset="UTF-8"'}


@dataclass(frozen=True)
class Admitted:
    """What the handshake established, kept on the websocket connection until the Link exists."""

    charge_point_id: str
    boot_status: str | None
    security_profile: int | None = None
    certificate: str | None = None  # SHA-256 fingerprint of the client certificate (profile 3)
    remote_address: str = ""        # the charge point's address (a trusted proxy's X-Forwarded-For)
    login_address: str = ""         # the address group it authenticated from (lockout.py: a known pair); "": profile 0
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    connected_at: str = field(default_factory=lambda: format_utc(utc_now()))


@dataclass
class _Certificate:
    cert: x509.Certificate | None = None
    fingerprint: str | None = None
    problem: str | None = None       # presented but not acceptable


def unavailable(message: str = "the central system cannot admit charge points now") -> Refused:
    return Refused(HTTPStatus.SERVICE_UNAVAILABLE, message, {"Retry-After": str(ADMIT_RETRY_AFTER)})


class Handshake:
    def __init__(self, gateway: "Gateway"):
        self.gateway = gateway
        self.settings = gateway.settings
        self.proxies = proxy_networks(self.settings.gateway_trusted_proxies)
        self.tls = tls.GatewayTls(self.settings)
        self.floor = profiles.floor(self.settings.gateway_auth, self.settings.gateway_min_security_profile)
        self._ca_task: asyncio.Task | None = None
        self.checks = lanes.ChecksInFlight(self.settings.gateway_auth_checks_per_address)
        # the longest a handshake may take: its address's turn (another check) and its own stations.admit, plus the
        # Redis round trips; then 503 + Retry-After (the websocket server's open_timeout is a little longer)
        self.budget = 2 * self.settings.call_timeout + 2
        self._stations_refuse: set[str] = set()  # admit parameters an older stations service does not know
        self._bookkeeping: set[asyncio.Task] = set()  # counts and releases that outlive a cancelled handshake

    @property
    def certificates_possible(self) -> bool:
        """Profile 3 can happen here: TLS served by the gateway or a trusted proxy."""
        return self.tls.serving or bool(self.proxies)

    # ---- lifecycle ---------------------------------------------------------------------------------
    async def load(self) -> None:
        """Read the TLS material (before anything else starts). Raises TlsUnavailable."""
        await asyncio.to_thread(self.tls.load)

    async def start(self) -> None:
        """Fetch the security service's CA, follow revocations, watch the TLS files (after :meth:`load`)."""
        if self.certificates_possible:
            await self.refresh_csms_ca()
            self._ca_task = asyncio.create_task(self._refresh_loop())
            await self._follow_revocations()
        self.tls.start_watching()

    async def _follow_revocations(self) -> None:
        """A certificate revoked while its charge point is connected closes that connection (1008)."""
        bus = self.gateway.bus
        queue = await bus.channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(bus.names.events, CertificateChanged.EVENT_TYPE)
        await queue.consume(self._on_certificate_changed, no_ack=True)

    async def _on_certificate_changed(self, message: Any) -> None:
        try:
            event = CertificateChanged.model_validate_json(message.body)
        except ValueError:
            log.warning("malformed %s event ignored", CertificateChanged.EVENT_TYPE)
            return
        if event.status != "revoked":
            return
        for link in list(self.gateway.links.values()):
            if link.certificate == event.fingerprint:
                log.warning("%s: its client certificate %s was revoked: disconnected", link.charge_point_id,
                            event.fingerprint[:16])
                link.close_reason = "client certificate revoked"
                await link.ws.close(CLOSE_POLICY_VIOLATION, link.close_reason)

    async def stop(self) -> None:
        if self._bookkeeping:  # counts still being written for handshakes that ran out of time
            await asyncio.wait(list(self._bookkeeping), timeout=5)
        if self._ca_task is not None:
            self._ca_task.cancel()
            await asyncio.gather(self._ca_task, return_exceptions=True)
            self._ca_task = None
        await self.tls.stop_watching()

    async def reload(self) -> None:
        """SIGHUP: the TLS files and the security service's CA again."""
        await asyncio.to_thread(self.tls.reload, "SIGHUP")
        if self.certificates_possible:
            await self.refresh_csms_ca()

    async def refresh_csms_ca(self) -> bool:
        """Trust the security service's current CA for client certificates. False when it cannot be asked."""
        try:
            answer = await call_api(self.gateway.rpc, "security", "ca_certificate", timeout=5.0)
            chain = pki.load_certificates(answer["pem"])
        except (ApiCallFailed, ValueError, KeyError, TypeError) as exc:
            log.warning("the security service's CA is not known (%s): client certificates it issued are not "
                        "accepted until it answers", exc)
            return False
        self.tls.set_csms_cas(chain)
        return True

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(CA_REFRESH_SECONDS if self.tls.csms_cas else 10.0)
            try:
                await self.refresh_csms_ca()
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("refreshing the security service's CA failed")

    # ---- the handshake -----------------------------------------------------------------------------
    async def admit(self, connection: ServerConnection, request: Request) -> Admitted:
        """Raises Refused."""
        s = self.settings
        deadline = time.monotonic() + self.budget  # (app.py answers 503 then: no stations question outlives it)
        cp = admission.charge_point_id(request.path, s.max_charge_point_id_length)
        headers = request.headers
        peer = connection.remote_address[0] if connection.remote_address else ""
        via_proxy = bool(self.proxies) and forwarded.trusted(peer, self.proxies)
        address = forwarded.client_address(peer, headers.get("X-Forwarded-For"), self.proxies)
        group = forwarded.address_group(address, s.gateway_auth_ipv6_prefix)  # what every per-address limit counts
        transport = connection.transport
        authorization = headers.get("Authorization")
        brings_certificate = tls.peer_certificate(transport) is not None or (
            via_proxy and bool(headers.get(s.gateway_client_cert_header)))
        # no credentials at all, where nothing is accepted without: counted per address, answered without asking
        anonymous = authorization is None and not brings_certificate and self.floor > 0
        lock = await self._check_lockout(cp, group, anonymous)

        # TLS here, or at a trusted proxy: it says so, or it forwards a client certificate (only TLS carries one)
        secure = tls.is_tls(transport) or (via_proxy and (forwarded.forwarded_tls(headers.get("X-Forwarded-Proto"))
                                                          or bool(headers.get(s.gateway_client_cert_header))))
        certificate = self._certificate(cp, transport, headers, via_proxy, peer)
        if anonymous:
            self.gateway.metrics.auth_failure("missing_credentials")
            log.info("%s refused from %s: no credentials (HTTP Basic or a client certificate)", cp, address)
            raise Refused(HTTPStatus.UNAUTHORIZED, profiles.UNAUTHENTICATED, WWW_AUTHENTICATE)
        if certificate.problem is not None:
            await self._failed(cp, group, "certificate", f"{cp}: client certificate refused ({address}): "
                                                         f"{certificate.problem}")
            raise Refused(HTTPStatus.FORBIDDEN, certificate.problem)
        password = None if certificate.cert is not None else admission.basic_password(authorization, cp)
        presented_password: bool | None = None
        if password is not None:
            answer = await self._check_password(cp, group, password, lock.standing, deadline)
            presented_password = answer.authenticated is True
        elif certificate.cert is None and authorization is not None:
            # credentials that cannot be right (another user, not Basic, not base64 ...): refused without asking --
            # counted like a wrong password, so they are bounded per address group like wrong passwords are
            await self._failed(cp, group, "wrong_credentials",
                               f"charge point authentication failed for {cp!r} from {address} (unusable credentials)")
            raise Refused(HTTPStatus.UNAUTHORIZED, profiles.WRONG_CREDENTIALS, WWW_AUTHENTICATE)
        else:
            answer, revoked = await asyncio.gather(self._ask_stations(cp, None, lock.standing, deadline),
                                                   self._revoked(certificate))
            if revoked:
                await self._failed(cp, group, "certificate", f"{cp}: client certificate refused ({address}): "
                                                             f"{revoked}")
                raise Refused(HTTPStatus.FORBIDDEN, revoked)

        presented = profiles.Presented(tls=secure, certificate=certificate.cert is not None,
                                       password=presented_password)
        required = profiles.required_profile(answer.security_profile, self.floor, has_password=answer.has_password)
        decision = profiles.decide(presented, required)
        if decision.status is not None:
            if presented.password is not False:  # (a wrong password is counted already)
                reason = "profile_too_low" if decision.status == HTTPStatus.FORBIDDEN else "missing_credentials"
                self.gateway.metrics.auth_failure(reason)
                log.warning("%s refused from %s: %s (recorded profile %s%s, presented %d)", cp, address,
                            decision.reason, answer.security_profile, ", has a password" if answer.has_password
                            else "", profiles.presented_profile(presented))
            extra = WWW_AUTHENTICATE if decision.status == HTTPStatus.UNAUTHORIZED else {}
            raise Refused(decision.status, decision.answer, extra)
        profile = profiles.presented_profile(presented)
        if profile > 0:
            await self.remember(cp, group, login=True)
        remote = address if address != peer else ""  # "" : the socket's own address:port is reported
        return Admitted(cp, answer.boot_status, security_profile=profile, certificate=certificate.fingerprint,
                        remote_address=remote, login_address=group if profile > 0 else "")

    async def _check_lockout(self, cp: str, group: str, anonymous: bool = False) -> lockout.Lock:
        """Raises Refused (429) when the address group or the id is locked for it; else the handshake's standing."""
        guard = self.gateway.logins
        if guard is None:
            return lockout.Lock(False)
        try:
            lock = await guard.check(cp, group, anonymous)
        except RedisError as exc:
            log.warning("login lockout check for %s skipped: %s", cp, exc)
            return lockout.Lock(False)
        if lock.refused:
            self.gateway.metrics.auth_failure("locked")
            retry_after = max(1, math.ceil(lock.retry_after))
            log.info("%s from %s refused: %s locked after failed logins, %d s left", cp, group, lock.what,
                     retry_after)
            raise Refused(HTTPStatus.TOO_MANY_REQUESTS,
                          f"too many failed logins: try again in {retry_after} s", {"Retry-After": str(retry_after)})
        return lock

    async def _check_password(self, cp: str, group: str, password: bytes, standing: lockout.Standing,
                              deadline: float) -> AdmitResult:
        """The stations service's answer with the password checked in the lane of the handshake's standing
        (lanes.py). Raises Refused."""
        try:
            with self.checks.hold(group):
                if standing == "clean":
                    async with self.checks.clean_turn(group) as turn:
                        claim = await self._claim(cp, group)
                        while not (claim.claimed or claim.failed):  # another instance has the place: wait for it
                            await asyncio.sleep(CLAIM_POLL_SECONDS)  # (the handshake's budget bounds the wait)
                            claim = await self._claim(cp, group)
                        if claim.good:
                            turn.pass_on()  # a good address's checks go side by side
                        if claim.claimed:
                            return await self._clean_check(cp, group, password, claim, deadline)
                    standing = "suspect"    # it failed meanwhile
                return await self._checked(cp, group, password, standing, deadline)
        except lanes.TooMany:
            self.gateway.metrics.auth_failure("busy")
            raise Refused(HTTPStatus.TOO_MANY_REQUESTS, "too many logins from this address at once: try again",
                          {"Retry-After": "1"}) from None

    async def _clean_check(self, cp: str, group: str, password: bytes, claim: lockout.Claim,
                           deadline: float) -> AdmitResult:
        authenticated = False
        try:
            answer = await self._checked(cp, group, password, "clean", deadline)
            authenticated = answer.authenticated is True
            return answer
        finally:
            # the address is good before its place is free (the next check of it then goes side by side)
            await self._completed(self._settle_claim(cp, group, claim, authenticated))

    async def _claim(self, cp: str, group: str) -> lockout.Claim:
        guard = self.gateway.logins
        if guard is None:
            return lockout.Claim(True)
        try:
            return await guard.claim(cp, group)
        except RedisError as exc:
            log.warning("clean-lane claim for %s skipped: %s", group, exc)
            return lockout.Claim(True)

    async def _settle_claim(self, cp: str, group: str, claim: lockout.Claim, authenticated: bool) -> None:
        guard = self.gateway.logins
        if guard is None:
            return
        if authenticated:
            await self._remember(cp, group, login=True)
        try:
            await guard.release(group, claim)
        except RedisError as exc:
            log.warning("clean-lane claim of %s not released (it expires): %s", group, exc)

    async def _checked(self, cp: str, group: str, password: bytes, standing: lockout.Standing,
                       deadline: float) -> AdmitResult:
        """The answer, a wrong password counted before the clean turn passes on (the next one sees the failure)."""
        answer = await self._ask_stations(cp, password, standing, deadline, group)
        if answer.authenticated is not True:
            await self._failed(cp, group, "wrong_credentials",
                               f"charge point authentication failed for {cp!r} from {group}")
        return answer

    async def _completed(self, bookkeeping: Awaitable[None]) -> None:
        """Await ``bookkeeping`` (a login counted, a place released ...), which goes on to its end even when the
        handshake is cancelled meanwhile (its budget ran out: 503): a flood must not go uncounted because it made
        the handshakes slow."""
        task = asyncio.ensure_future(bookkeeping)
        self._bookkeeping.add(task)
        task.add_done_callback(self._bookkeeping.discard)
        await asyncio.shield(task)

    async def _crowded(self, group: str) -> None:
        guard = self.gateway.logins
        if guard is None:
            return
        await self._completed(self._count_crowded(guard, group))

    async def _count_crowded(self, guard: lockout.LoginGuard, group: str) -> None:
        try:
            if await guard.crowded(group):
                log.warning("source address %s locked for %s s: it failed logins and keeps sending more password "
                            "checks than are made (charge points that logged in from it before still get in)",
                            group, self.settings.gateway_auth_lockout)
        except RedisError as exc:
            log.warning("crowded login of %s not counted: %s", group, exc)

    async def remember(self, cp: str, group: str, *, login: bool) -> None:
        """A known pair (lockout.py): at each login with credentials, and again when its connection ends."""
        if self.gateway.logins is None or not group:
            return
        await self._completed(self._remember(cp, group, login=login))

    async def _remember(self, cp: str, group: str, *, login: bool) -> None:
        guard = self.gateway.logins
        if guard is None:
            return
        try:
            forgotten = await guard.succeeded(cp, group, login=login)
        except RedisError as exc:
            log.warning("login of %s from %s not remembered: %s", cp, group, exc)
            return
        if forgotten:
            log.info("%s logged in from %s: %s no longer a known address of it (GATEWAY_AUTH_KNOWN_ADDRESSES_PER_ID "
                     "%d)", cp, group, ", ".join(forgotten), self.settings.gateway_auth_known_addresses_per_id)

    async def _failed(self, cp: str, group: str, reason: str, message: str) -> None:
        self.gateway.metrics.auth_failure(reason)
        log.warning("%s", message)
        guard = self.gateway.logins
        if guard is None:
            return
        await self._completed(self._count_failure(guard, cp, group))

    async def _count_failure(self, guard: lockout.LoginGuard, cp: str, group: str) -> None:
        try:
            counted = await guard.failed(cp, group)
        except RedisError as exc:
            log.warning("failed login of %s not counted: %s", cp, exc)
            return
        s = self.settings
        if counted.address_locked:
            log.warning("source address %s locked for %s s after %d failed logins within %s s (charge points that "
                        "logged in from it before still get in)", group, s.gateway_auth_lockout,
                        s.gateway_auth_max_failures_per_address, s.gateway_auth_failure_window)
        if counted.id_locked:
            log.warning("charge point id %r locked for %s s after %d failed logins within %s s (addresses that "
                        "have not failed for it still get in)", cp, s.gateway_auth_lockout,
                        s.gateway_auth_max_failures_per_id, s.gateway_auth_failure_window)

    def _certificate(self, cp: str, transport: Any, headers: Any, via_proxy: bool, peer: str) -> _Certificate:
        """The client certificate of this handshake, checked (chain: by TLS or here; the charge point it names)."""
        header = self.settings.gateway_client_cert_header
        cert = tls.peer_certificate(transport)
        forwarded_value = headers.get(header)
        if cert is None and forwarded_value:
            if not via_proxy:
                log.warning("%s: %s header from %s ignored (not a trusted proxy, GATEWAY_TRUSTED_PROXIES)", cp,
                            header, peer)
                return _Certificate()
            try:
                cert = forwarded.certificate_from_header(forwarded_value)
            except ValueError as exc:
                return _Certificate(problem=f"forwarded client certificate: {exc}")
            problem = forwarded.verify_client_certificate(cert, self.tls.trusted())
            if problem is not None:
                return _Certificate(cert, pki.fingerprint(cert), problem)
        if cert is None:
            return _Certificate()
        fingerprint = pki.fingerprint(cert)
        names = pki.common_names(cert.subject)
        if names != [cp]:
            return _Certificate(cert, fingerprint, f"the client certificate names {names[0] if names else 'nobody'!r}, "
                                                   f"not this charge point")
        return _Certificate(cert, fingerprint)

    async def _ask_stations(self, cp: str, password: bytes | None, standing: lockout.Standing, deadline: float,
                            group: str = "") -> AdmitResult:
        """``deadline`` (monotonic): when the handshake gives up -- the stations service is told the instant, and
        drops a password check still waiting a margin before it (verifier.py) rather than hash it for nobody."""
        timeout = min(self.settings.call_timeout, max(0.001, deadline - time.monotonic()))
        params: dict[str, Any] = {"charge_point_id": cp}
        if password is not None:
            params["password_b64"] = base64.b64encode(password).decode()
            # (``suspect`` is understood by stations services of the previous version too; ``lane`` and
            # ``deadline`` are newer: dropped once such a service refuses them)
            if standing == "suspect":
                params["suspect"] = True
            elif standing == "known" and "lane" not in self._stations_refuse:
                params["lane"] = "known"
            if "deadline" not in self._stations_refuse:
                params["deadline"] = format_utc(utc_now() + dt.timedelta(seconds=timeout))
        try:
            return AdmitResult.model_validate(await call_api(
                self.gateway.rpc, "stations", "admit", timeout=timeout, **params))
        except ApiCallFailed as exc:
            refused = [name for name in ("lane", "deadline") if name in params and exc.status == 400
                       and name in str(exc)]
            if refused:
                log.warning("the stations service does not know the admit parameter %s yet (an older version): not "
                            "sent until it is upgraded", ", ".join(refused))
                self._stations_refuse.update(refused)
                return await self._ask_stations(cp, password, standing, deadline, group)
            level = logging.INFO if standing == "suspect" else logging.WARNING if exc.status == 503 else logging.ERROR
            log.log(level, "cannot admit %s: %s", cp, exc)
            if standing == "suspect" and exc.status == 503 and password is not None and group:
                await self._crowded(group)  # no room for a suspect's check: it counts against the address
            raise unavailable() from None
        except ValueError as exc:
            log.error("cannot admit %s: %s", cp, exc)
            raise unavailable() from None

    async def _revoked(self, certificate: _Certificate) -> str | None:
        """Why the certificate may not be used according to the security service's records (revoked), or None."""
        if certificate.cert is None or certificate.problem is not None:
            return None
        try:
            record = await call_api(self.gateway.rpc, "security", "get_certificate", timeout=self.settings.call_timeout,
                                    fingerprint=certificate.fingerprint)
        except ApiCallFailed as exc:
            if exc.status == 404:
                return None  # not issued by (or delivered through) this system: its CA vouches for it
            log.error("revocation of certificate %s not checked: %s", certificate.fingerprint[:16], exc)
            raise unavailable("the central system cannot check client certificates now") from None
        if isinstance(record, dict) and record.get("status") == "revoked":
            return "the client certificate is revoked"
        return None
