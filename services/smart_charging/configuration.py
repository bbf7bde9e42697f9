"""What a charge point advertises for smart charging: its configuration keys (GetConfiguration), read on boot
(``SMART_CHARGING_READ_CONFIGURATION=on_boot``) or when first needed -- before its first SetChargingProfile,
GetCompositeSchedule or site cap -- and on an operator's ``refresh_configuration``."""
from __future__ import annotations

import logging

from csms.contracts.base import utc_now
from csms.service import ServiceContext
from services.smart_charging.store import CONFIGURATION_KEYS, ChargePointRecord, PgStore, throttle

log = logging.getLogger(__name__)


async def learn_configuration(ctx: ServiceContext, cp: str, *, every: float = 60.0) -> bool:
    """Read the charge point's smart-charging configuration keys (GetConfiguration), at most once per
    ``every`` seconds; True when they were read."""
    if every > 0 and not await throttle(ctx.redis, ctx.key("smart_charging", cp, "configuration"), every):
        return False
    result = await ctx.send_command(cp, "GetConfiguration", {"key": list(CONFIGURATION_KEYS)},
                                    timeout=ctx.settings.sc_configuration_timeout)
    if not result.ok or not isinstance(result.payload, dict):
        log.info("%s: configuration keys not read (%s %s)", cp, result.status, result.error_description)
        return False
    keys = {item["key"]: item.get("value") for item in result.payload.get("configurationKey") or []
            if isinstance(item, dict) and item.get("key") in CONFIGURATION_KEYS}
    unknown = [key for key in result.payload.get("unknownKey") or [] if key in CONFIGURATION_KEYS]
    await PgStore(ctx.db).set_configuration(cp, keys, unknown, utc_now())
    log.info("%s: smart charging configuration %s (unknown: %s)", cp, keys, unknown)
    return True


async def known_charge_point(ctx: ServiceContext, cp: str) -> ChargePointRecord:
    """The charge point's record, its smart-charging configuration keys read first if they never were (at most
    once a minute while it does not answer)."""
    record = await PgStore(ctx.db).charge_point(cp)
    if record.configuration_at is None and await learn_configuration(ctx, cp):
        record = await PgStore(ctx.db).charge_point(cp)
    return record
