"""The chain CA's side of a CSR: check every field, then certify, record and hand back.

The CA decides what a certificate is by the key in the request, never by a
flag the requester sets: an Ed25519 key becomes a participant credential, an
ECDSA P-256 key a TLS certificate for a node or the coordinator. Everything a
CSR asks for is checked against that profile, and anything else (an unknown
role, a CA extension, a USCC on a bank, an Ed25519 key asking to be the
coordinator, a SAN on a credential) is refused with the reason; the CA never
copies an extension from a request it did not expect.

Every certificate issued is kept in ``<ca_dir>/issued/<serial hex>.pem`` so that
``revoke`` can find it by serial and refuse serials this CA never issued.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtensionOID

from creditshare.errors import ConfigurationError, InvalidInputError
from creditshare.pki._ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CLOCK_SKEW,
    MAX_LEAF_DAYS,
    TLS_EXTENDED_KEY_USAGE,
    TLS_ROLES,
    authority_key_identifier,
    check_hosts,
    check_now,
    check_valid_days,
    load_ca,
)
from creditshare.pki._credential import (
    CREDENTIAL_EKU,
    CREDENTIAL_ROLES,
    check_uscc_for_role,
    credential_from_certificate,
    fingerprint,
    subject_fields,
)
from creditshare.pki._files import ensure_private_dir, write_atomically

__all__ = ["ISSUED_DIR", "MAX_CSR_BYTES", "SignedFiles", "issued_path", "sign"]

#: Folder of the CA directory holding a copy of every certificate issued.
ISSUED_DIR = "issued"
#: A CSR is a few hundred bytes; more is not a request from ``pki request``.
MAX_CSR_BYTES = 8 * 1024


@dataclass(frozen=True, slots=True)
class SignedFiles:
    """What ``sign`` wrote: the certificate, the CA copy next to it, and what it says."""

    cert: Path
    ca: Path
    kind: Literal["credential", "tls"]
    participant_id: str
    role: str
    uscc: str | None
    serial: int
    not_before: datetime
    not_after: datetime
    hosts: tuple[str, ...]


def issued_path(ca_dir: Path, serial: int) -> Path:
    return Path(ca_dir) / ISSUED_DIR / f"{serial:x}.pem"


def _load_csr(csr: bytes) -> x509.CertificateSigningRequest:
    if not isinstance(csr, bytes):
        raise InvalidInputError("the CSR must be bytes (PEM or DER)")
    if len(csr) > MAX_CSR_BYTES:
        raise InvalidInputError(f"the CSR is {len(csr)} bytes; at most {MAX_CSR_BYTES}")
    try:
        if csr.lstrip().startswith(b"-----BEGIN"):
            parsed = x509.load_pem_x509_csr(csr)
        else:
            parsed = x509.load_der_x509_csr(csr)
    except ValueError:
        raise InvalidInputError("not a certificate signing request (PEM or DER)") from None
    if not parsed.is_signature_valid:
        raise InvalidInputError(
            "the CSR's self-signature does not verify: it was altered or not made with its key"
        )
    return parsed


def _requested_hosts(csr: x509.CertificateSigningRequest, kind: str) -> list[x509.GeneralName]:
    """The SAN a TLS request asks for, re-checked; refuse any other requested extension."""
    hosts: list[str] = []
    try:
        extensions = list(csr.extensions)
    except ValueError:
        raise InvalidInputError("the CSR carries a malformed extension") from None
    for extension in extensions:
        if extension.oid == ExtensionOID.BASIC_CONSTRAINTS:
            assert isinstance(extension.value, x509.BasicConstraints)
            if extension.value.ca:
                raise InvalidInputError(
                    "the CSR asks for a CA certificate; the CA issues leaves only"
                )
        if extension.oid != ExtensionOID.SUBJECT_ALTERNATIVE_NAME or kind != "tls":
            raise InvalidInputError(
                f"the CSR asks for extension {extension.oid.dotted_string}, "
                f"which a {kind} request may not carry"
            )
        san = extension.value
        assert isinstance(san, x509.SubjectAlternativeName)
        for name in san:
            if isinstance(name, x509.DNSName):
                hosts.append(name.value)
            elif isinstance(name, x509.IPAddress):
                hosts.append(str(name.value))
            else:
                raise InvalidInputError(
                    f"the CSR names a host of type {type(name).__name__}; "
                    "only DNS names and IP addresses"
                )
    if kind == "tls" and not hosts:
        raise InvalidInputError("a TLS request must name its hosts (subject alternative names)")
    return check_hosts(hosts) if hosts else []


def _classify(
    csr: x509.CertificateSigningRequest,
) -> tuple[Literal["credential", "tls"], str, str, str | None]:
    """(kind, participant id, role, uscc) of a request, or InvalidInputError saying why not."""
    public = csr.public_key()
    kind: Literal["credential", "tls"]
    if isinstance(public, Ed25519PublicKey):
        kind = "credential"
    elif isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        kind = "tls"
    else:
        raise InvalidInputError(
            "the CSR's key is neither Ed25519 (a credential) nor ECDSA P-256 (TLS); "
            "make it with `creditshare pki request`"
        )
    participant_id, role, uscc = subject_fields(csr.subject, "CSR")
    if kind == "credential" and role not in CREDENTIAL_ROLES:
        raise InvalidInputError(
            f"CSR: an Ed25519 key is certified as a credential, and {role!r} is not a "
            f"credential role ({', '.join(CREDENTIAL_ROLES)})"
        )
    if kind == "tls":
        if role not in TLS_ROLES:
            raise InvalidInputError(
                f"CSR: an ECDSA key is certified for TLS, and {role!r} is not a TLS role "
                f"({', '.join(TLS_ROLES)})"
            )
        if uscc is not None:
            raise InvalidInputError("CSR: a TLS request carries no serialNumber/USCC")
    else:
        uscc = check_uscc_for_role(role, uscc)
    return kind, participant_id, role, uscc


def _serial(ca_dir: Path) -> int:
    """A random 128-bit serial this CA has not used (RFC 5280: positive, at most 20 octets)."""
    while True:
        serial = secrets.randbits(128)
        if serial and not issued_path(ca_dir, serial).exists():
            return serial


def sign(
    ca_dir: Path,
    csr: bytes,
    out: Path,
    *,
    valid_days: int = 365,
    now: datetime | None = None,
) -> SignedFiles:
    """Certify the key in ``csr`` with the CA in ``ca_dir``; write the certificate to ``out``.

    Also writes a copy of the CA certificate as ``ca.crt`` next to ``out`` (unless
    ``out`` is in the CA folder), so the folder sent back is all a service needs.
    Validity: ``now - CLOCK_SKEW`` to ``now + valid_days`` (at most
    ``MAX_LEAF_DAYS``), cut back to the CA's own window. InvalidInputError for a
    request the CA refuses, ConfigurationError for a CA folder that cannot work.
    """
    parsed = _load_csr(csr)
    kind, participant_id, role, uscc = _classify(parsed)
    san = _requested_hosts(parsed, kind)
    lifetime = check_valid_days(valid_days, MAX_LEAF_DAYS)
    issued_at = check_now(now)
    ca_dir, out = Path(ca_dir), Path(out)

    ca_cert, ca_key = load_ca(ca_dir)
    ca_start, ca_end = ca_cert.not_valid_before_utc, ca_cert.not_valid_after_utc
    if not ca_start <= issued_at < ca_end:
        raise ConfigurationError(
            f"CA {ca_dir / CA_CERT_FILE} is not valid at {issued_at.isoformat()} "
            f"(valid {ca_start.isoformat()} to {ca_end.isoformat()})"
        )
    out_dir = out.parent
    same_dir = out_dir.exists() and out_dir.resolve() == ca_dir.resolve()
    if not same_dir and (out_dir / CA_KEY_FILE).exists():
        raise ConfigurationError(
            f"{out_dir} holds another CA's key; writing there would overwrite its {CA_CERT_FILE}"
        )
    if out.name == CA_CERT_FILE:
        raise ConfigurationError(f"{out} is where the CA certificate copy goes; pick another name")

    public = parsed.public_key()
    assert isinstance(public, Ed25519PublicKey | ec.EllipticCurvePublicKey)
    serial = _serial(ca_dir)
    builder = (
        x509.CertificateBuilder()
        .subject_name(parsed.subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(max(issued_at - CLOCK_SKEW, ca_start))
        .not_valid_after(min(issued_at + lifetime, ca_end))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if kind == "credential":
        builder = builder.add_extension(x509.ExtendedKeyUsage([CREDENTIAL_EKU]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(TLS_EXTENDED_KEY_USAGE[role]), critical=False
        ).add_extension(x509.SubjectAlternativeName(san), critical=False)
    certificate = (
        builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(authority_key_identifier(ca_cert, ca_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    if kind == "credential":  # what we certified is exactly what a node will accept
        credential_from_certificate(certificate, issuer_fingerprint=fingerprint(ca_cert))
    pem = certificate.public_bytes(serialization.Encoding.PEM)

    record = issued_path(ca_dir, serial)
    ensure_private_dir(record.parent)
    write_atomically(record, pem, private=False)
    ensure_private_dir(out_dir)
    write_atomically(out, pem, private=False)
    ca_copy = out_dir / CA_CERT_FILE
    if not same_dir:
        write_atomically(ca_copy, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    hosts = tuple([str(n.value) for n in san if isinstance(n, x509.DNSName | x509.IPAddress)])
    return SignedFiles(
        cert=out,
        ca=ca_copy,
        kind=kind,
        participant_id=participant_id,
        role=role,
        uscc=uscc,
        serial=serial,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        hosts=hosts,
    )
