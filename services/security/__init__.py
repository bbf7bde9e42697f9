"""Security service: the certificate side of the OCPP 1.6 security extension (whitepaper edition 2) and the
charge points' security events.

What it owns
    SignCertificate (CALL): the CSR is checked (rules.check_csr), signed by the CA (ca.py: a Signer; an in-process
    CA from SECURITY_CA_CERT_FILE / SECURITY_CA_KEY_FILE, or a loudly logged development CA), and CertificateSigned
    is sent once the CALLRESULT is out. CertificateSigned, InstallCertificate, DeleteCertificate,
    GetInstalledCertificateIds and ExtendedTriggerMessage (commands): checked (PEM, sizes), forwarded, the answers
    recorded. SecurityEventNotification (CALL): stored, published, critical ones logged at WARNING. An expiry
    check sends ExtendedTriggerMessage(SignChargePointCertificate) for certificates about to expire.
    PostgreSQL (store.py): charge point certificates, installed CA certificates, SignCertificate requests,
    security events. No private key is stored in the database, logged or sent on the bus.

Where things are
    handlers.py   the OCPP CALL/command handlers, the API operations, the expiry check
    rules.py      CSR checks, certificate statuses, installed-certificate matching, critical events (pure)
    ca.py         the Signer interface and the in-process CA        store.py   the PostgreSQL repository

Events published: ``security.event_received`` (SecurityEventReceived), ``security.certificate_changed``
(CertificateChanged). Decisions: rules.py's docstring; docs/adr/security-ca.md, docs/adr/security-keys.md.
"""
