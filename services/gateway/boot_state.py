"""OCPP 1.6 section 4.2 (BootNotification) as protocol state of one connection, enforced by the gateway.
Pure functions, unit-tested in tests/unit/test_gateway_boot_state.py; docs/adr/boot-state-enforcement.md.

The state is the last BootNotification answer the station got: fetched from the stations service during the
handshake (so a station that booted before and merely reconnects is served as usual) and updated from every
BootNotification answer that passes through the connection.
"""
from __future__ import annotations

# While Pending the Central System may query and configure the charge point, but not start or stop charging.
NOT_WHILE_PENDING = frozenset({"RemoteStartTransaction", "RemoteStopTransaction"})
SECTION = "OCPP 1.6 section 4.2"


def refuse_call(boot_status: str | None, action: str) -> str | None:
    """Why a CALL from the charge point must be answered with CALLERROR SecurityError, or None to serve it."""
    if action == "BootNotification" or boot_status in ("Accepted", "Pending"):
        return None
    if boot_status == "Rejected":
        return (f"{action} refused: the last BootNotification was Rejected; send BootNotification again after "
                f"the interval it gave ({SECTION})")
    return (f"{action} refused: this charge point has not been accepted yet; send BootNotification first "
            f"({SECTION})")


def refuse_command(boot_status: str | None, action: str) -> str | None:
    """Why a command must not be sent to the charge point now, or None to send it.

    A station that never booted may be commanded (TriggerMessage BootNotification is how an operator brings
    one in after its records were lost)."""
    if boot_status == "Rejected":
        return (f"{action} not sent: the charge point's BootNotification was Rejected, it receives no command "
                f"({SECTION})")
    if boot_status == "Pending" and action in NOT_WHILE_PENDING:
        return (f"{action} not sent: the charge point is Pending (BootNotification); it may be queried and "
                f"configured, but not started or stopped until Accepted ({SECTION})")
    return None
