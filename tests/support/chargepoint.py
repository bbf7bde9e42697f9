"""The project's test charge point is the testing kit's simulated charge point (csms.testing)."""
from csms.testing.chargepoint import DEFAULT_RESPONSES, ChargePoint, Responder, boot_raw, connect

__all__ = ["DEFAULT_RESPONSES", "ChargePoint", "Responder", "boot_raw", "connect"]
