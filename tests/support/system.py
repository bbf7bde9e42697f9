"""The system under test comes from the testing kit (csms.testing)."""
from csms.testing.system import System, create_schema, drop_schema, make_settings, remove_test_system

__all__ = ["System", "create_schema", "drop_schema", "make_settings", "remove_test_system"]
