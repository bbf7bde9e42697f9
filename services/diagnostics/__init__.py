"""Diagnostics service: GetDiagnostics / DiagnosticsStatusNotification and UpdateFirmware tracking, the security
extension's GetLog / LogStatusNotification and SignedUpdateFirmware / SignedFirmwareStatusNotification (matched by
the requestId this service chooses), and the file intake charge points upload diagnostics and logs to and download
firmware from (HTTP and FTP); hosted firmware is signed for SignedUpdateFirmware (signing.py).

What it owns
    PostgreSQL (system of record): diagnostics and log requests, firmware updates with their history, uploaded
    files' metadata, hosted firmware (store.py). Disk: the bytes, under FILES_ROOT (disk.py). Redis: the
    one-time upload grants only (grants.py); losing Redis loses unspent grants, nothing else.

Where things are
    handlers.py     the OCPP command/CALL handlers, API operations, the firmware.status_changed follower
    rules.py        placeholders, URL masking, status transitions (pure, unit-tested)
    store.py        the PostgreSQL repository       grants.py      the Redis grants
    intake.py       uploads and firmware: grants + disk + records, public URLs
    http_server.py  the aiohttp upload/download server    ftp_server.py  the pyftpdlib upload server
    servers.py      starts both                           disk.py        the files root, safe names
    signing.py      the firmware signing certificate and key (or loudly generated development material)

Events published: ``diagnostics.status_changed`` (DiagnosticsStatusChanged), ``diagnostics.uploaded``
(FileUploaded), ``firmware.update_changed`` (FirmwareUpdateChanged), ``diagnostics.log_status_changed``
(LogStatusChanged). Follows ``firmware.status_changed``.
Decisions: rules.py's docstring; the records split: docs/adr/diagnostics-records.md; requestIds:
docs/adr/security-request-ids.md; keys: docs/adr/security-keys.md.
"""
