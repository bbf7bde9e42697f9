"""The security service's entry points: one handler per OCPP message of the 1.6 security extension it owns, the
API operations and the expiry check. Decisions are in rules.py, records in store.py (PostgreSQL), the CA in ca.py.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

from csms import pki
from csms.contracts.api.security import (
    CaCertificateParams, CaCertificateView, CertificateRef, CertificateView, InstalledCertificatesParams,
    InstalledCertificateView, ListCertificatesParams, ListSecurityEventsParams, ListSignRequestsParams,
    RenewalRequested, RenewalView, RenewCertificateParams, RevokeCertificateParams, ScanExpiringParams,
    SecurityEventView, SignRequestView,
)
from csms.contracts.bus import Command, CommandResult
from csms.contracts.events import CertificateChanged, SecurityEventReceived
from csms.contracts.ocpp16 import (
    CertificateSignedRequest, DeleteCertificateRequest, ExtendedTriggerMessageRequest,
    GetInstalledCertificateIdsRequest, InstallCertificateRequest, SecurityEventNotificationRequest,
    SecurityEventNotificationResponse, SignCertificateRequest, SignCertificateResponse,
)
from csms.service import ApiContext, ApiError, CallContext, CommandContext, Service, ServiceContext
from services.security import rules
from services.security.ca import CaUnavailable, Signer, load_signer
from services.security.store import EventListing, PostgresStore, Updated

log = logging.getLogger("services.security")

service = Service("security")

SIGN_CHARGE_POINT_CERTIFICATE = "SignChargePointCertificate"
MAX_RENEWALS_PER_SCAN = 500   # certificates looked at per expiry check (the rest wait for the next one)
RENEWAL_CONCURRENCY = 16      # ExtendedTriggerMessages in flight at once during a check


def now_ms() -> datetime:
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# ---- wiring: the CA and the background tasks start and stop with the service -----------------------
class _Runtime:
    signer: Signer | None = None
    tasks: set[asyncio.Task] = set()


_runtime = _Runtime()


def signer() -> Signer | None:
    """The CA of this process (None before startup)."""
    return _runtime.signer


def _spawn(coro) -> asyncio.Task:
    task = asyncio.create_task(coro)
    _runtime.tasks.add(task)
    task.add_done_callback(_runtime.tasks.discard)
    return task


def _store(ctx: ServiceContext) -> PostgresStore:
    return PostgresStore(ctx.db)


@service.on_startup
async def start_security(svc: Service) -> None:
    try:
        _runtime.signer = await asyncio.to_thread(load_signer, svc.settings)
    except CaUnavailable as exc:
        raise RuntimeError(f"security: the CA cannot be used: {exc}") from None
    _spawn(_expiry_loop(ServiceContext(svc)))


@service.on_shutdown
async def stop_security(svc: Service) -> None:
    tasks = list(_runtime.tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    _runtime.signer = None


# ---- charge point certificates -----------------------------------------------------------------------
async def _publish_certificate(ctx: ServiceContext, cert: CertificateView, previous: str | None,
                               status: str | None = None) -> None:
    await ctx.publish(CertificateChanged(
        charge_point_id=cert.charge_point_id, serial_number=cert.serial_number, fingerprint=cert.fingerprint,
        status=status or cert.status, previous_status=previous, subject=cert.subject, not_after=cert.not_after,
        issued_by_csms=cert.issued_by_csms))


async def _publish_updated(ctx: ServiceContext, updated: Updated | None) -> None:
    if updated is not None and updated.written and updated.before.status != updated.after.status:
        await _publish_certificate(ctx, updated.after, updated.before.status)


async def _record_delivery(ctx: ServiceContext, fingerprint: str, result: CommandResult) -> CertificateView | None:
    """The outcome of a CertificateSigned: the certificate's status, and older ones superseded on Accepted."""
    now = now_ms()
    store = _store(ctx)
    updated = await store.update_certificate(fingerprint, lambda c: rules.record_delivery(c, result, now))
    await _publish_updated(ctx, updated)
    if updated is None:
        return None
    if updated.after.status == rules.ACCEPTED:
        for older in await store.update_others(updated.after.charge_point_id, fingerprint,
                                               lambda c: rules.supersede(c, now)):
            await _publish_updated(ctx, older)
    return updated.after


@service.call("SignCertificate")
async def sign_certificate(ctx: CallContext, req: SignCertificateRequest) -> SignCertificateResponse:
    cp, now, store = ctx.charge_point_id, now_ms(), _store(ctx)
    check = rules.check_csr(req.csr, cp, ctx.settings.security_csr_organization or None)
    reason, chain = check.reason, None
    if reason is None and not rules.may_issue(await store.count_issued_since(cp, now - timedelta(days=1))):
        reason = f"more than {rules.MAX_ISSUED_PER_DAY} certificates issued to this charge point in 24 hours"
    ca = _runtime.signer
    if reason is None and ca is None:
        reason = "the CA is not available"
    if reason is None:
        try:
            chain = await ca.sign(check.csr, cp)
        except Exception:  # noqa: BLE001 - an external signer may fail in many ways: the answer is Rejected
            log.exception("%s: the CA could not sign the CSR", cp)
            reason = "the CA could not sign"
    chain_pem = pki.to_pem(chain) if chain else ""
    if chain and len(chain_pem) > rules.MAX_CHAIN_CHARS:
        reason = f"the certificate chain is longer than {rules.MAX_CHAIN_CHARS} characters (configure a shorter chain)"
        log.error("%s: %s", cp, reason)
    subject = rules.subject_text(check.csr.subject) if check.csr is not None else None
    if reason is not None:
        log.warning("%s: SignCertificate rejected: %s", cp, reason)
        await store.add_sign_request(SignRequestView(charge_point_id=cp, received_at=ctx.call.received_at,
                                                     status="Rejected", reason=reason, csr_subject=subject))
        return SignCertificateResponse(status="Rejected")
    cert = rules.new_certificate(chain, cp, issued_by_csms=True, now=now)
    await store.add_certificate(cert)
    await store.add_sign_request(SignRequestView(
        charge_point_id=cp, received_at=ctx.call.received_at, status="Accepted", csr_subject=subject,
        fingerprint=cert.fingerprint, serial_number=cert.serial_number))
    log.info("%s: certificate %s issued (serial %s, until %s)", cp, cert.fingerprint[:16], cert.serial_number,
             cert.not_after.isoformat())
    await _publish_certificate(ctx, cert, None)
    # CertificateSigned goes out after this CALLRESULT: calling the charge point from here would overtake it
    _spawn(_deliver_later(ServiceContext(ctx.service), cp, chain_pem, cert.fingerprint))
    return SignCertificateResponse(status="Accepted")


async def _deliver_later(ctx: ServiceContext, cp: str, chain_pem: str, fingerprint: str) -> None:
    await asyncio.sleep(ctx.settings.security_certificate_signed_delay)
    try:
        result = await ctx.send_command(cp, "CertificateSigned", {"certificateChain": chain_pem})
        cert = await _record_delivery(ctx, fingerprint, result)
        log.info("%s: CertificateSigned %s -> %s", cp, fingerprint[:16], cert.status if cert else rules.outcome(result))
    except Exception:  # noqa: BLE001 - a background task: log, never crash the service
        log.exception("%s: delivering certificate %s failed", cp, fingerprint[:16])


@service.command("CertificateSigned")
async def certificate_signed(ctx: CommandContext, req: CertificateSignedRequest) -> CommandResult:
    cp, now, store = ctx.charge_point_id, now_ms(), _store(ctx)
    parsed = rules.parse_chain(req.certificate_chain, rules.MAX_CHAIN_CHARS)
    if parsed.refusal:
        return ctx.refuse(f"certificateChain: {parsed.refusal}")
    leaf = parsed.certificates[0]
    fingerprint = pki.fingerprint(leaf)
    known = await store.get_certificate(fingerprint)
    tracked = known is None or known.charge_point_id == cp
    if not tracked:
        ctx.warn(f"this certificate was issued for charge point {known.charge_point_id!r}")
    for warning in rules.chain_warnings(parsed.certificates, cp, known if tracked else None, now):
        ctx.warn(warning)
    if known is None:
        ca = _runtime.signer
        ours = ca is not None and pki.signed_by(leaf, ca.ca_chain()[0])
        await store.add_certificate(rules.new_certificate(parsed.certificates, cp, issued_by_csms=ours, now=now))
    result = await ctx.forward()
    cert = await _record_delivery(ctx, fingerprint, result) if tracked else None
    return result.model_copy(update={"server": {
        "fingerprint": fingerprint, "serial_number": pki.serial_hex(leaf.serial_number),
        "status": cert.status if cert else None}})


# ---- CA certificates on the charge point ---------------------------------------------------------------
@service.command("InstallCertificate")
async def install_certificate(ctx: CommandContext, req: InstallCertificateRequest) -> CommandResult:
    cp, now = ctx.charge_point_id, now_ms()
    parsed = rules.parse_chain(req.certificate, rules.MAX_INSTALL_CHARS)
    if parsed.refusal:
        return ctx.refuse(f"certificate: {parsed.refusal}")
    if len(parsed.certificates) != 1:
        return ctx.refuse(f"certificate: exactly one PEM certificate expected, got {len(parsed.certificates)}")
    cert = parsed.certificates[0]
    for warning in rules.install_warnings(cert, now):
        ctx.warn(warning)
    result = await ctx.forward()
    record = rules.installed_from_pem(cert, cp, req.certificate_type, now)
    if result.ok and (result.payload or {}).get("status") == "Accepted":
        await _store(ctx).change_installed(cp, None, lambda current: rules.add_installed(current, record))
    return result.model_copy(update={"server": {"hash_data": rules.hash_data_of(record),
                                                "fingerprint": record.fingerprint}})


@service.command("DeleteCertificate")
async def delete_certificate(ctx: CommandContext, req: DeleteCertificateRequest) -> CommandResult:
    cp, store = ctx.charge_point_id, _store(ctx)
    wanted = req.certificate_hash_data.to_ocpp()
    if not any(rules.matches(r, wanted) for r in await store.list_installed(cp, None)):
        ctx.warn("no record of this certificate on this charge point")
    result = await ctx.forward()
    status = (result.payload or {}).get("status") if result.ok else None
    if status in ("Accepted", "NotFound"):  # either way the charge point does not have it (any more)
        await store.change_installed(cp, None, lambda current: [r for r in current if not rules.matches(r, wanted)])
    return result


@service.command("GetInstalledCertificateIds")
async def get_installed_certificate_ids(ctx: CommandContext, req: GetInstalledCertificateIdsRequest) -> CommandResult:
    cp, now = ctx.charge_point_id, now_ms()
    result = await ctx.forward()
    if not result.ok:
        return result
    payload = result.payload or {}
    reported = payload.get("certificateHashData") or [] if payload.get("status") == "Accepted" else []
    kind = req.certificate_type
    records = await _store(ctx).change_installed(
        cp, kind, lambda current: rules.refresh_installed(current, reported, cp, kind, now))
    return result.model_copy(update={"server": {"installed": [r.model_dump(mode="json") for r in records]}})


# ---- ExtendedTriggerMessage and renewal ----------------------------------------------------------------
async def _current_certificate(ctx: ServiceContext, cp: str) -> CertificateView | None:
    current = await _store(ctx).list_certificates(cp, rules.ACCEPTED, 1)
    return current[0] if current else None


@service.command("ExtendedTriggerMessage")
async def extended_trigger_message(ctx: CommandContext, req: ExtendedTriggerMessageRequest) -> CommandResult:
    result = await ctx.forward()
    if req.requested_message == SIGN_CHARGE_POINT_CERTIFICATE:
        current = await _current_certificate(ctx, ctx.charge_point_id)
        if current is not None:
            now = now_ms()
            await _store(ctx).update_certificate(current.fingerprint,
                                                 lambda c: rules.record_renewal(c, rules.outcome(result), now))
    return result


async def scan_expiring(ctx: ServiceContext) -> list[RenewalView]:
    """Send ExtendedTriggerMessage(SignChargePointCertificate) for certificates expiring soon (rules.renewal_due);
    each certificate is claimed in its row first, so several instances never trigger it twice."""
    settings, store, now = ctx.settings, _store(ctx), now_ms()

    def due(cert: CertificateView) -> bool:
        return rules.renewal_due(cert, now=now, renew_before_days=settings.security_renew_before_days,
                                 period=settings.security_renewal_period)

    candidates = await store.expiring(now + timedelta(days=settings.security_renew_before_days),
                                      MAX_RENEWALS_PER_SCAN)
    gate = asyncio.Semaphore(RENEWAL_CONCURRENCY)

    async def renew(cert: CertificateView) -> RenewalView | None:
        async with gate:
            claimed = await store.update_certificate(
                cert.fingerprint, lambda c: due(c) and rules.record_renewal(c, "sending", now))
            if claimed is None or not claimed.written:
                return None
            result = await ctx.send_command(cert.charge_point_id, "ExtendedTriggerMessage",
                                            {"requestedMessage": SIGN_CHARGE_POINT_CERTIFICATE})
            outcome = rules.outcome(result)
            await store.update_certificate(cert.fingerprint, lambda c: rules.record_renewal(c, outcome, now))
            log.info("%s: certificate %s expires %s: ExtendedTriggerMessage(SignChargePointCertificate) -> %s",
                     cert.charge_point_id, cert.fingerprint[:16], cert.not_after.isoformat(), outcome)
            return RenewalView(charge_point_id=cert.charge_point_id, fingerprint=cert.fingerprint,
                               not_after=cert.not_after, status=outcome)

    results = await asyncio.gather(*(renew(c) for c in candidates if due(c)))
    return [r for r in results if r is not None]


async def _expiry_loop(ctx: ServiceContext) -> None:
    """The expiry check and the security events' retention, at start and every SECURITY_EXPIRY_CHECK_INTERVAL."""
    while True:
        try:
            await scan_expiring(ctx)
            days = ctx.settings.security_events_retention_days
            pruned = await _store(ctx).prune_events(now_ms() - timedelta(days=days))
            if pruned:
                log.info("deleted %d security events older than %d days", pruned, days)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - try again next time
            log.exception("security expiry check failed")
        await asyncio.sleep(ctx.settings.security_expiry_check_interval)


# ---- SecurityEventNotification ---------------------------------------------------------------------------
@service.call("SecurityEventNotification")
async def security_event_notification(ctx: CallContext,
                                      req: SecurityEventNotificationRequest) -> SecurityEventNotificationResponse:
    cp = ctx.charge_point_id
    critical = rules.is_critical(req.type)
    event = SecurityEventView(charge_point_id=cp, type=req.type, timestamp=req.timestamp,
                              received_at=ctx.call.received_at, tech_info=rules.bounded_tech_info(req.tech_info),
                              critical=critical)
    record_id = await _store(ctx).add_event(event)
    log.log(logging.WARNING if critical else logging.INFO, "%s: %ssecurity event %r at %s, techInfo %r", cp,
            "CRITICAL " if critical else "", req.type, req.timestamp.isoformat(), event.tech_info)
    await ctx.publish(SecurityEventReceived(charge_point_id=cp, type=req.type, timestamp=req.timestamp,
                                            tech_info=event.tech_info, critical=critical, record_id=record_id))
    return SecurityEventNotificationResponse()


# ---- API -------------------------------------------------------------------------------------------------
@service.api("ca_certificate")
async def api_ca_certificate(ctx: ApiContext, params: CaCertificateParams) -> CaCertificateView:
    """The CA certificate (and its parents) charge points' certificates chain to: what the gateway trusts."""
    ca = _runtime.signer
    if ca is None:
        raise ApiError("the CA is not available", 503)
    chain = ca.ca_chain()
    return CaCertificateView(pem=pki.to_pem(chain), subject=chain[0].subject.rfc4514_string(),
                             not_after=pki.not_after(chain[0]), fingerprint=pki.fingerprint(chain[0]),
                             development=ca.development)


@service.api("list_certificates")
async def api_list_certificates(ctx: ApiContext, params: ListCertificatesParams) -> list[CertificateView]:
    """Charge point certificates, newest first."""
    return await _store(ctx).list_certificates(params.charge_point_id, params.status, params.limit)


async def _resolve(ctx: ServiceContext, ref: CertificateRef) -> CertificateView:
    store = _store(ctx)
    if ref.fingerprint:
        cert = await store.get_certificate(ref.fingerprint.lower())
        if cert is None:
            raise ApiError(f"unknown certificate {ref.fingerprint!r}", 404)
        return cert
    found = await store.find_by_serial(pki.normal_serial(ref.serial_number or ""))
    if not found:
        raise ApiError(f"unknown certificate serial {ref.serial_number!r}", 404)
    if len(found) > 1:
        raise ApiError(f"serial {ref.serial_number!r} names {len(found)} certificates: give the fingerprint", 409)
    return found[0]


@service.api("get_certificate")
async def api_get_certificate(ctx: ApiContext, params: CertificateRef) -> CertificateView:
    return await _resolve(ctx, params)


@service.api("revoke_certificate")
async def api_revoke_certificate(ctx: ApiContext, params: RevokeCertificateParams) -> CertificateView:
    """Mark a certificate revoked: renewal stops; ``get_certificate`` reports it (for the gateway's client certificate
    check)."""
    cert = await _resolve(ctx, params)
    now = now_ms()
    updated = await _store(ctx).update_certificate(cert.fingerprint, lambda c: rules.revoke(c, params.reason, now))
    await _publish_updated(ctx, updated)
    if updated is None:
        raise ApiError("the certificate is gone", 404)
    log.warning("%s: certificate %s revoked: %r", cert.charge_point_id, cert.fingerprint[:16], params.reason)
    return updated.after


@service.api("forget_certificate")
async def api_forget_certificate(ctx: ApiContext, params: CertificateRef) -> CertificateView:
    """Delete the record of a certificate (it is not revoked: a certificate is checked against these records
    only while they exist)."""
    cert = await _resolve(ctx, params)
    deleted = await _store(ctx).delete_certificate(cert.fingerprint)
    if deleted is None:
        raise ApiError("the certificate is gone", 404)
    await _publish_certificate(ctx, deleted, deleted.status, status="forgotten")
    return deleted


@service.api("installed_certificates")
async def api_installed_certificates(ctx: ApiContext,
                                     params: InstalledCertificatesParams) -> list[InstalledCertificateView]:
    """CA certificates installed on a charge point, as last reported or accepted."""
    return await _store(ctx).list_installed(params.charge_point_id, params.certificate_type)


@service.api("list_sign_requests")
async def api_list_sign_requests(ctx: ApiContext, params: ListSignRequestsParams) -> list[SignRequestView]:
    """SignCertificate requests with the decision (and why a CSR was rejected), newest first."""
    return await _store(ctx).list_sign_requests(params.charge_point_id, params.limit)


@service.api("list_security_events")
async def api_list_security_events(ctx: ApiContext, params: ListSecurityEventsParams) -> list[SecurityEventView]:
    """Security events, newest first."""
    return await _store(ctx).list_events(EventListing(
        charge_point_id=params.charge_point_id, since=params.since, until=params.until, critical=params.critical,
        type=params.type, limit=params.limit))


@service.api("renew_certificate")
async def api_renew_certificate(ctx: ApiContext, params: RenewCertificateParams) -> RenewalRequested:
    """Send ExtendedTriggerMessage(SignChargePointCertificate) now; returns its CommandResult."""
    request = ExtendedTriggerMessageRequest(requested_message=SIGN_CHARGE_POINT_CERTIFICATE)
    command = Command(charge_point_id=params.charge_point_id, action="ExtendedTriggerMessage",
                      payload=request.to_ocpp(), timeout=params.command_timeout or ctx.settings.command_timeout)
    result = await extended_trigger_message(CommandContext(ctx.service, command=command), request)
    return RenewalRequested.model_validate(result.model_dump())


@service.api("scan_expiring")
async def api_scan_expiring(ctx: ApiContext, params: ScanExpiringParams) -> list[RenewalView]:
    """Run the expiry check now; returns the ExtendedTriggerMessages it sent."""
    return await scan_expiring(ctx)
