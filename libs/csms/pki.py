"""X.509 helpers for the services that handle certificates: the security service's CA (charge point
certificates) and the diagnostics service's firmware signing. Thin, pure functions over the
``cryptography`` library, plus loading PEM files and generating development material on disk.

Private keys never leave the process that loads them: nothing here logs or serialises a key except
:func:`write_private_key` (a file readable by its owner only).
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import os
import re
import time
from pathlib import Path
from typing import Literal, NamedTuple, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]
KeyType = Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"]
KEY_TYPES: tuple[str, ...] = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
HashName = Literal["SHA256", "SHA384", "SHA512"]
_HASHES = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}
# a PEM bundle this system reads (certificate files, chains): far above any real chain, bounded all the same
MAX_PEM_FILE_BYTES = 256 * 1024
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# ---- keys ----------------------------------------------------------------------------------------
def generate_key(key_type: str) -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type.startswith("rsa-") and key_type in KEY_TYPES:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise ValueError(f"unknown key type {key_type!r} (one of {', '.join(KEY_TYPES)})")


def signature_hash(key: PrivateKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    """The hash a certificate signed by ``key`` uses: SHA-384 for P-384 keys, SHA-256 otherwise."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def describe_key(key: object) -> str:
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return f"RSA {key.key_size}"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return f"EC {key.curve.name}"
    return type(key).__name__


# ---- reading PEM -----------------------------------------------------------------------------------
def load_certificates(data: bytes | str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order; ValueError when there is none or one does not parse."""
    raw = data.encode() if isinstance(data, str) else data
    blocks = _PEM_CERT.findall(raw)
    if not blocks:
        raise ValueError("no PEM certificate found")
    try:
        return [x509.load_pem_x509_certificate(block) for block in blocks]
    except ValueError as exc:
        raise ValueError(f"a PEM certificate does not parse: {exc}") from None


def load_private_key(data: bytes, password: str | None = None) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password=password.encode() if password else None)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError(f"unsupported private key type {type(key).__name__} (RSA or EC)")
    return key


def read_pem_file(path: str | os.PathLike[str]) -> bytes:
    file = Path(path)
    if file.stat().st_size > MAX_PEM_FILE_BYTES:
        raise ValueError(f"{file} is larger than {MAX_PEM_FILE_BYTES} bytes")
    return file.read_bytes()


def to_pem(certificates: x509.Certificate | list[x509.Certificate]) -> str:
    certs = certificates if isinstance(certificates, list) else [certificates]
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


# ---- facts about a certificate -------------------------------------------------------------------
def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def serial_hex(serial: int) -> str:
    """A serial number as OCPP's CertificateHashData carries it: hex, no prefix, no leading zeros (lowercase)."""
    return format(serial, "x")


def not_after(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_after_utc


def not_before(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_before_utc


def common_names(name: x509.Name) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def organizations(name: x509.Name) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    return signed_by(cert, cert)


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key made ``cert``'s signature (and the names chain)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _public_key_bits(key: object) -> bytes:
    """The subjectPublicKey BIT STRING's contents (what OCSP's issuerKeyHash hashes)."""
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)  # type: ignore[attr-defined]


class HashData(NamedTuple):
    """OCPP CertificateHashData (hex, lowercase). ``issuer_key_hash`` is None when the issuer's key is not
    known (a certificate that is not self-signed, given without its issuer)."""

    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str | None
    serial_number: str


def hash_data(cert: x509.Certificate, algorithm: str = "SHA256",
              issuer: x509.Certificate | None = None) -> HashData:
    """The certificate's CertificateHashData: the hash of its issuer's DER name, of its issuer's public key
    (the certificate itself when self-signed, else ``issuer``) and its serial number."""
    digest = _HASHES[algorithm]
    name_hash = digest(cert.issuer.public_bytes()).hexdigest()
    if issuer is None and is_self_signed(cert):
        issuer = cert
    key_hash = digest(_public_key_bits(issuer.public_key())).hexdigest() if issuer is not None else None
    return HashData(algorithm, name_hash, key_hash, serial_hex(cert.serial_number))


def normal_serial(serial: str) -> str:
    return serial.strip().lower().removeprefix("0x").lstrip("0") or "0"


# ---- issuing ---------------------------------------------------------------------------------------
Usage = Literal["ca", "client", "code_signing", "server"]


def issue_certificate(*, subject: x509.Name, public_key: object, issuer_cert: x509.Certificate | None,
                      issuer_key: PrivateKey, days: float, usage: Usage,
                      now: dt.datetime | None = None, hosts: list[str] | None = None) -> x509.Certificate:
    """Sign a certificate. ``issuer_cert`` None: self-signed (a root). Validity starts 5 minutes before
    ``now`` (clock skew) and never ends after the issuer's. ``hosts``: DNS names and IP addresses of a server
    certificate (subjectAltName; TLS clients check the host name there)."""
    now = now or utcnow()
    start = now - dt.timedelta(minutes=5)
    end = now + dt.timedelta(days=days)
    if issuer_cert is not None:
        end = min(end, issuer_cert.not_valid_after_utc)
    issuer_name = issuer_cert.subject if issuer_cert is not None else subject
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(public_key).serial_number(x509.random_serial_number())  # type: ignore[arg-type]
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))  # type: ignore[arg-type]
    authority_key = issuer_cert.public_key() if issuer_cert is not None else issuer_key.public_key()
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key), critical=False)  # type: ignore[arg-type]
    rsa_key = isinstance(public_key, rsa.RSAPublicKey)
    if usage == "ca":
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=usage == "code_signing",
            key_encipherment=rsa_key and usage in ("client", "server"), data_encipherment=False,
            key_agreement=not rsa_key and usage in ("client", "server"), key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        purpose = {"client": ExtendedKeyUsageOID.CLIENT_AUTH, "server": ExtendedKeyUsageOID.SERVER_AUTH}.get(
            usage, ExtendedKeyUsageOID.CODE_SIGNING)
        builder = builder.add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False)
    return builder.sign(issuer_key, signature_hash(issuer_key))


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


# ---- signatures over data (firmware) ---------------------------------------------------------------
def sign_sha256_digest(key: PrivateKey, digest: bytes) -> str:
    """RSA-SHA256 (PKCS#1 v1.5) or ECDSA-SHA256 signature over data whose SHA-256 is ``digest``; base64."""
    prehashed = utils.Prehashed(hashes.SHA256())
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(digest, padding.PKCS1v15(), prehashed)
    else:
        signature = key.sign(digest, ec.ECDSA(prehashed))
    return base64.b64encode(signature).decode()


def verify_sha256_digest(cert: x509.Certificate, digest: bytes, signature_b64: str) -> bool:
    """Whether ``signature_b64`` is the certificate key's RSA-SHA256/ECDSA-SHA256 signature over the data
    whose SHA-256 is ``digest``."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    key = cert.public_key()
    prehashed = utils.Prehashed(hashes.SHA256())
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, padding.PKCS1v15(), prehashed)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(prehashed))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(text)


# ---- files -------------------------------------------------------------------------------------------
def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write a key readable by its owner only; FileExistsError if ``path`` exists (never overwritten)."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_public(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


class Material(NamedTuple):
    """A certificate chain (the key's certificate first) and its private key."""

    chain: list[x509.Certificate]
    key: PrivateKey
    created: bool = False  # generated now (development material)

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]


def load_material(cert_file: str, key_file: str, password: str | None = None) -> Material:
    """Certificate chain and key from PEM files; ValueError (one line) when they are unusable."""
    try:
        chain = load_certificates(read_pem_file(cert_file))
        key = load_private_key(read_pem_file(key_file), password or None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot load {cert_file} / {key_file}: {exc}") from None
    if _public_key_bits(chain[0].public_key()) != _public_key_bits(key.public_key()):
        raise ValueError(f"the key in {key_file} does not belong to the first certificate of {cert_file}")
    return Material(chain, key)


def load_or_create(directory: str | os.PathLike[str], stem: str, create) -> Material:
    """``<dir>/<stem>.crt.pem`` and ``<stem>.key.pem``, created by ``create() -> (chain, key)`` when missing.
    Safe when several processes start at once: the first to link its key wins, the others load it."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = folder / f"{stem}.crt.pem", folder / f"{stem}.key.pem"
    if not key_path.exists():
        chain, key = create()
        suffix = f".{os.getpid()}.{time.monotonic_ns()}.tmp"
        tmp_cert, tmp_key = cert_path.with_name(cert_path.name + suffix), key_path.with_name(key_path.name + suffix)
        write_public(tmp_cert, to_pem(chain))
        write_private_key(tmp_key, key)
        try:
            os.link(tmp_key, key_path)  # the key decides who created the material
            os.link(tmp_cert, cert_path)
            created = True
        except FileExistsError:
            created = False
        finally:
            tmp_cert.unlink(missing_ok=True)
            tmp_key.unlink(missing_ok=True)
        if created:
            return Material(chain, key, created=True)
    deadline = time.monotonic() + 5
    while not cert_path.exists() and time.monotonic() < deadline:  # another process is writing it
        time.sleep(0.05)
    return load_material(str(cert_path), str(key_path))
