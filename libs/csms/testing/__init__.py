"""Testing kit: run the central system in-process and drive it with simulated charge points.

    from csms.testing import EventRecorder, System, connect, make_settings, start_infrastructure

With pytest, installing ``ocpp-csms[test]`` registers the plugin :mod:`csms.testing.plugin` (fixtures
``csms_system``, ``csms_charge_point``, ``csms_events``, ``csms_settings``, ``csms_infrastructure``).
README: "Testing your integration".
"""
from csms.testing.chargepoint import DEFAULT_RESPONSES, ChargePoint, connect
from csms.testing.events import EventRecorder
from csms.testing.infra import Infrastructure, start_infrastructure
from csms.testing.system import System, create_schema, drop_schema, make_settings

__all__ = [
    "DEFAULT_RESPONSES", "ChargePoint", "EventRecorder", "Infrastructure", "System", "connect",
    "create_schema", "drop_schema", "make_settings", "start_infrastructure",
]
