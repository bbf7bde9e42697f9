"""Stations service: boot, heartbeat, connector status, firmware status, DataTransfer, and the
station-level commands (availability, configuration, reset, trigger, unlock ...)."""
