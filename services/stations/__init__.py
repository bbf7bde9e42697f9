"""Stations service: what the system knows about each charge point.

Owns: BootNotification (the boot answer: policy ``CSMS_BOOT_POLICY``, registration, per-station override),
Heartbeat, StatusNotification (the newest status per connector, ordered by instants; resends ignored),
FirmwareStatusNotification, DataTransfer from charge points; the station-level commands (ChangeAvailability,
ChangeConfiguration, GetConfiguration, ClearCache, Reset, TriggerMessage, UnlockConnector, DataTransfer);
charge point passwords (AuthorizationKey, Basic auth), security profiles (recorded, raised by an accepted
ChangeConfiguration(SecurityProfile) once the station connects at it) and the gateway's handshake question
(``admit``).

Publishes ``station.booted``, ``connector.status_changed``, ``firmware.status_changed``,
``datatransfer.received``, ``station.configuration_changed``; follows ``station.connected`` /
``station.disconnected``.

Records in PostgreSQL (``st_*`` tables; ``legacy.py`` imports what an older version kept in Redis), hot state in
Redis (connector status cache, last seen); presence is
the gateway's Redis key. Files: ``handlers.py`` (entry points), ``rules.py`` (decisions), ``credentials.py``
(passwords), ``verifier.py`` (bounded password checks, the same work for every id), ``store.py`` (storage).
"""
