"""Diagnostics service: GetDiagnostics / DiagnosticsStatusNotification and UpdateFirmware tracking, and the
file intake charge points upload diagnostics to and download firmware from (HTTP and FTP).

What it owns
    PostgreSQL (system of record): diagnostics requests and firmware updates with their history, uploaded
    files' metadata, hosted firmware (store.py). Disk: the bytes, under FILES_ROOT (disk.py). Redis: the
    one-time upload grants only (grants.py); losing Redis loses unspent grants, nothing else.

Where things are
    handlers.py     the OCPP command/CALL handlers, API operations, the firmware.status_changed follower
    rules.py        placeholders, URL masking, status transitions (pure, unit-tested)
    store.py        the PostgreSQL repository       grants.py      the Redis grants
    intake.py       uploads and firmware: grants + disk + records, public URLs
    http_server.py  the aiohttp upload/download server    ftp_server.py  the pyftpdlib upload server
    servers.py      starts both                           disk.py        the files root, safe names

Events published: ``diagnostics.status_changed`` (DiagnosticsStatusChanged), ``diagnostics.uploaded``
(FileUploaded), ``firmware.update_changed`` (FirmwareUpdateChanged). Follows ``firmware.status_changed``.
Decisions: rules.py's docstring; the records split: docs/adr/diagnostics-records.md.
"""
