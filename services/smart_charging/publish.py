"""Events smart charging publishes about profiles."""
from __future__ import annotations

from collections import defaultdict

from csms.charging import StoredProfile
from csms.contracts.events import ChargingProfilesChanged
from csms.service import ServiceContext


async def publish_changes(ctx: ServiceContext, cp: str, change: str, profiles: list[StoredProfile]) -> None:
    """One ``charging.profiles_changed`` per connector touched."""
    by_connector: dict[int, list[int]] = defaultdict(list)
    for stored in profiles:
        by_connector[stored.connector_id].append(stored.profile_id)
    for connector_id, ids in sorted(by_connector.items()):
        await ctx.publish(ChargingProfilesChanged(charge_point_id=cp, connector_id=connector_id, change=change,
                                                  profile_ids=ids))


def profile_lock(ctx: ServiceContext, cp: str, wait: float):
    """One Set/ClearChargingProfile (or site cap) at a time per charge point, across instances."""
    from services.smart_charging.store import redis_lock
    return redis_lock(ctx.redis, ctx.key("smart_charging", cp, "lock"), wait=wait, hold=wait + 10.0)
