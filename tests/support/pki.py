"""Certificates for tests: what a charge point does with keys, CSRs and chains (with ``cryptography``), and test
CAs. The gateway's TLS tests (security profiles 2/3) can reuse :class:`ChargePointIdentity` -- its
``ssl_context()`` connects with the certificate the CSMS signed -- and :func:`make_ca` / :func:`issue`.

    identity = ChargePointIdentity.new("CP-1")
    cp.responses["CertificateSigned"] = identity.on_certificate_signed(trusted_ca_pem)
    await cp.call_ok(call.SignCertificate(csr=identity.csr_pem()))
"""
from __future__ import annotations

import base64
import hashlib
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from csms import pki


def make_key(key_type: str = "ec-p256"):
    if key_type == "ec-p224":  # too weak for OCPP: for refusal tests
        return ec.generate_private_key(ec.SECP224R1())
    if key_type == "rsa-1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return pki.generate_key(key_type)


def make_csr(key, common_name: str, organization: str | None = None, *, extra_cn: str | None = None,
             hash_algorithm: hashes.HashAlgorithm | None = None) -> str:
    """A PEM CSR as a charge point sends it in SignCertificate."""
    attributes = [x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)]
    if extra_cn:
        attributes.append(x509.NameAttribute(x509.NameOID.COMMON_NAME, extra_cn))
    if organization:
        attributes.append(x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, organization))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    csr = builder.sign(key, hash_algorithm or hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def tamper_csr(csr_pem: str) -> str:
    """The CSR with one bit of its signature flipped: it parses, but its signature does not verify."""
    der = x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER)
    der = der[:-1] + bytes([der[-1] ^ 1])
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


def make_ca(common_name: str = "Test Root CA", key_type: str = "ec-p256", days: float = 365):
    """A self-signed CA: (certificate, key)."""
    key = pki.generate_key(key_type)
    cert = pki.issue_certificate(subject=pki.name(common_name), public_key=key.public_key(), issuer_cert=None,
                                 issuer_key=key, days=days, usage="ca")
    return cert, key


def issue(ca_cert, ca_key, common_name: str, *, usage: str = "client", key_type: str = "ec-p256", days: float = 30):
    """A certificate signed by a test CA: (certificate, key)."""
    key = pki.generate_key(key_type)
    cert = pki.issue_certificate(subject=pki.name(common_name), public_key=key.public_key(), issuer_cert=ca_cert,
                                 issuer_key=ca_key, days=days, usage=usage)  # type: ignore[arg-type]
    return cert, key


def issue_server(ca_cert, ca_key, host: str = "localhost", *, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
                 key_type: str = "ec-p256", days: float = 30):
    """A TLS server certificate (CN = ``host``, the whitepaper's FQDN; subjectAltName ``hosts``): (certificate,
    key)."""
    key = pki.generate_key(key_type)
    cert = pki.issue_certificate(subject=pki.name(host), public_key=key.public_key(), issuer_cert=ca_cert,
                                 issuer_key=ca_key, days=days, usage="server", hosts=list(hosts))
    return cert, key


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_pair(folder: Path, stem: str, chain: list[x509.Certificate], key) -> tuple[str, str]:
    """``<stem>.crt.pem`` (the chain) and ``<stem>.key.pem`` in ``folder``: (cert file, key file)."""
    cert_file, key_file = folder / f"{stem}.crt.pem", folder / f"{stem}.key.pem"
    cert_file.write_text(pki.to_pem(chain))
    key_file.write_bytes(key_pem(key))
    return str(cert_file), str(key_file)


def replace_pair(folder: Path, stem: str, ca_cert, ca_key, host: str = "localhost") -> x509.Certificate:
    """A new server certificate and key as ``<stem>.crt.pem`` / ``<stem>.key.pem`` in ``folder``, swapped in the way
    a Kubernetes Secret update does (written aside, renamed into place); the new certificate."""
    cert, key = issue_server(ca_cert, ca_key, host)
    staging = folder / "staging"
    staging.mkdir(exist_ok=True)
    cert_file, key_file = write_pair(staging, stem, [cert], key)
    Path(key_file).replace(folder / f"{stem}.key.pem")
    Path(cert_file).replace(folder / f"{stem}.crt.pem")
    return cert


def client_context(trusted_server_pem: str, chain: list[x509.Certificate] | None = None, key=None) -> ssl.SSLContext:
    """A charge point's TLS client context: trusts server certificates chaining to ``trusted_server_pem`` and, with
    ``chain``/``key``, presents that client certificate (profile 3)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=trusted_server_pem)
    if chain is not None:
        with tempfile.TemporaryDirectory() as folder:
            cert_file, key_file = write_pair(Path(folder), "client", chain, key)
            context.load_cert_chain(cert_file, key_file)
    return context


def pem(cert: x509.Certificate) -> str:
    return pki.to_pem(cert)


def verify_chain(chain_pem: str, trusted_pem: str) -> x509.Certificate:
    """Check a CertificateSigned chain like a charge point: every certificate is signed by the next, and the last
    one is signed by (or is) a trusted root. Returns the leaf; raises ValueError."""
    chain = pki.load_certificates(chain_pem)
    trusted = pki.load_certificates(trusted_pem)
    for child, parent in zip(chain, chain[1:]):
        if not pki.signed_by(child, parent):
            raise ValueError(f"{child.subject.rfc4514_string()} is not signed by the next certificate")
    top = chain[-1]
    if not any(pki.fingerprint(top) == pki.fingerprint(t) or pki.signed_by(top, t) for t in trusted):
        raise ValueError("the chain does not end at a trusted root")
    now = pki.utcnow()
    for cert in chain:
        if not pki.not_before(cert) <= now <= pki.not_after(cert):
            raise ValueError(f"{cert.subject.rfc4514_string()} is not valid now")
    return chain[0]


def verify_firmware(data: bytes, signing_certificate_pem: str, signature_b64: str) -> bool:
    """What a charge point does before installing signed firmware: the signature over the file verifies with
    the signing certificate's key (RSA-SHA256 or ECDSA-SHA256)."""
    cert = pki.load_certificates(signing_certificate_pem)[0]
    return pki.verify_sha256_digest(cert, hashlib.sha256(data).digest(), signature_b64)


def hash_data(cert: x509.Certificate, algorithm: str = "SHA256") -> dict[str, str]:
    """CertificateHashData (snake_case, as the ocpp package's dataclasses take it)."""
    data = pki.hash_data(cert, algorithm)
    return {"hash_algorithm": data.hash_algorithm, "issuer_name_hash": data.issuer_name_hash,
            "issuer_key_hash": data.issuer_key_hash or "", "serial_number": data.serial_number}


@dataclass
class ChargePointIdentity:
    """A charge point's key and, once the CSMS signed it, its certificate chain."""

    charge_point_id: str
    key: Any
    chain_pem: str | None = None
    received: list[str] = field(default_factory=list)

    @classmethod
    def new(cls, charge_point_id: str, key_type: str = "ec-p256") -> "ChargePointIdentity":
        return cls(charge_point_id, make_key(key_type))

    def csr_pem(self, organization: str | None = None) -> str:
        return make_csr(self.key, self.charge_point_id, organization)

    @property
    def certificate(self) -> x509.Certificate:
        assert self.chain_pem, "no certificate yet"
        return pki.load_certificates(self.chain_pem)[0]

    def on_certificate_signed(self, trusted_pem: str) -> Callable[[dict], dict]:
        """A CertificateSigned responder: Accepted when the chain verifies against ``trusted_pem`` and the leaf
        carries this identity's key and id; Rejected otherwise."""
        def respond(request: dict) -> dict:
            chain = request["certificate_chain"]
            self.received.append(chain)
            try:
                leaf = verify_chain(chain, trusted_pem)
            except ValueError:
                return {"status": "Rejected"}
            mine = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
            theirs = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
            if mine != theirs or pki.common_names(leaf.subject) != [self.charge_point_id]:
                return {"status": "Rejected"}
            self.chain_pem = chain
            return {"status": "Accepted"}
        return respond

    def ssl_context(self, trusted_server_pem: str) -> ssl.SSLContext:
        """A TLS client context presenting this identity's certificate (security profile 3) and trusting the
        server certificates chaining to ``trusted_server_pem``."""
        assert self.chain_pem, "no certificate yet"
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=trusted_server_pem)
        with tempfile.TemporaryDirectory() as folder:
            cert_file, key_file = Path(folder) / "cp.crt", Path(folder) / "cp.key"
            cert_file.write_text(self.chain_pem)
            key_file.write_bytes(self.key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
            context.load_cert_chain(cert_file, key_file)
        return context


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
