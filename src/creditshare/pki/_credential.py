"""Participant credentials: what a chain CA certifies about a party's Ed25519 signing key.

A credential is an ordinary X.509 v3 certificate so that standard tools can read
it, but its profile is narrow on purpose and checked field by field, here, in
one place that both the CA (``sign``) and the nodes (``CredentialVerifier``) use:

- the key is Ed25519 (TLS certificates are ECDSA P-256, so a key type alone
  already tells the two apart);
- Subject: CN = participant id, O = "creditshare", OU = role and, for an
  enterprise only, serialNumber = its USCC; nothing else;
- BasicConstraints CA=false and KeyUsage digitalSignature only, both critical;
- ExtendedKeyUsage = ``CREDENTIAL_EKU`` exactly, a private OID meaning
  "creditshare request signing", so a TLS certificate can never pass as a
  credential (and a credential never authenticates a TLS peer).

Messages name the fault and the participant but never quote key bytes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtensionOID, NameOID, ObjectIdentifier

from creditshare.crypto import VerifyKey
from creditshare.errors import InvalidInputError
from creditshare.identity import InvalidUsccError, Uscc
from creditshare.pki._ca import ORGANIZATION

__all__ = [
    "CREDENTIAL_EKU",
    "CREDENTIAL_ROLES",
    "MAX_CERTIFICATE_BYTES",
    "PARTICIPANT_ID",
    "Credential",
    "check_credential_role",
    "check_participant_id",
    "check_uscc_for_role",
    "credential_from_certificate",
    "fingerprint",
    "load_one_certificate",
    "parse_credential",
    "subject_fields",
]

#: Roles a credential may name. "node" is a data node's own signing identity
#: (its TLS certificate is a separate, ECDSA one); the coordinator has no credential:
#: nothing it says needs to be believed by a node on its own word.
CREDENTIAL_ROLES: tuple[str, ...] = (
    "bank",
    "bureau",
    "enterprise",
    "operator",
    "regulator",
    "department",
    "node",
)

#: ExtendedKeyUsage of every credential: "creditshare request signing". Under the
#: 2.25 arc (an OID made of a UUID, ITU-T X.667), so no registration is needed and it
#: can collide with nothing; defined once here, never spelled elsewhere.
CREDENTIAL_EKU = ObjectIdentifier("2.25.108471514879679696801355317848725767534")

#: Bound on one certificate's encoding: a credential is well under 1 KiB, and a
#: node parses what a caller sends before it knows who signed it.
MAX_CERTIFICATE_BYTES = 8 * 1024

#: The participant id pattern (CN); also the coordinator's participant ids.
PARTICIPANT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

_ALLOWED_SUBJECT = {
    NameOID.COMMON_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.ORGANIZATIONAL_UNIT_NAME,
    NameOID.SERIAL_NUMBER,
}
_KNOWN_CRITICAL = {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE}


@dataclass(frozen=True, slots=True)
class Credential:
    """A parsed participant credential.

    ``issuer_fingerprint`` is the SHA-256 (hex) of the issuing CA certificate's DER
    once a ``CredentialVerifier`` has checked the signature, and "" when the
    credential was only parsed (``parse_credential``): an unverified credential
    says nothing about who vouched for it.
    """

    participant_id: str
    role: str
    uscc: str | None
    verify_key: VerifyKey
    serial: int
    not_before: datetime
    not_after: datetime
    issuer_fingerprint: str
    der: bytes


def _key_kind(public: object) -> str:
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"ECDSA {public.curve.name}"
    if isinstance(public, rsa.RSAPublicKey):
        return "RSA"
    return "of another type"


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 hex of a certificate's DER: how a CA is named in credentials and lists."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def check_participant_id(participant_id: object) -> str:
    if not isinstance(participant_id, str) or not PARTICIPANT_ID.fullmatch(participant_id):
        raise InvalidInputError(
            f"participant id {participant_id!r} must match [a-z0-9][a-z0-9._-]{{0,63}}"
        )
    return participant_id


def check_credential_role(role: object) -> str:
    if role not in CREDENTIAL_ROLES:
        raise InvalidInputError(
            f"credential role must be one of {', '.join(CREDENTIAL_ROLES)}, got {role!r}"
        )
    assert isinstance(role, str)
    return role


def check_uscc_for_role(role: str, uscc: object) -> str | None:
    """The canonical USCC for an enterprise; None for every other role (which may not have one)."""
    if role != "enterprise":
        if uscc is not None:
            raise InvalidInputError(
                f"a {role} credential carries no USCC; only enterprises have one"
            )
        return None
    if not isinstance(uscc, str) or not uscc:
        raise InvalidInputError("an enterprise credential needs the enterprise's USCC")
    try:
        return Uscc.parse(uscc).code
    except InvalidUsccError as exc:
        raise InvalidInputError(f"the enterprise's USCC is invalid: {exc}") from None


def load_one_certificate(data: bytes, what: str = "certificate") -> x509.Certificate:
    """Exactly one certificate, PEM or DER, at most ``MAX_CERTIFICATE_BYTES``."""
    if not isinstance(data, bytes):
        raise InvalidInputError(f"{what} must be bytes (PEM or DER)")
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise InvalidInputError(
            f"{what} is {len(data)} bytes; at most {MAX_CERTIFICATE_BYTES} are accepted"
        )
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            found = x509.load_pem_x509_certificates(data)
            if len(found) != 1:
                raise InvalidInputError(f"{what} must hold one certificate, not {len(found)}")
            return found[0]
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"{what} is not an X.509 certificate (PEM or DER)") from None


def _single(name: x509.Name, oid: ObjectIdentifier, label: str, who: str) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if len(values) > 1:
        raise InvalidInputError(f"{who}: subject has {len(values)} {label} attributes, not one")
    if not values:
        return None
    value = values[0].value
    if not isinstance(value, str):  # pragma: no cover - these OIDs are strings by ASN.1
        raise InvalidInputError(f"{who}: subject {label} is not text")
    return value


def subject_fields(name: x509.Name, who: str) -> tuple[str, str, str | None]:
    """(CN, OU, serialNumber) of a creditshare subject, refusing anything unexpected.

    Shared by the CA's CSR check and the credential check, so what ``sign`` lets
    through is exactly what a node accepts.
    """
    for rdn in name.rdns:
        if len(rdn) != 1:
            raise InvalidInputError(f"{who}: multi-valued subject attributes are not accepted")
    for attribute in name:
        if attribute.oid not in _ALLOWED_SUBJECT:
            raise InvalidInputError(
                f"{who}: subject attribute {attribute.oid.dotted_string} is not accepted "
                "(only CN, O, OU and, for enterprises, serialNumber)"
            )
    cn = _single(name, NameOID.COMMON_NAME, "CN", who)
    org = _single(name, NameOID.ORGANIZATION_NAME, "O", who)
    ou = _single(name, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU", who)
    serial = _single(name, NameOID.SERIAL_NUMBER, "serialNumber", who)
    if cn is None or not PARTICIPANT_ID.fullmatch(cn):
        raise InvalidInputError(
            f"{who}: subject CN {cn!r} is not a participant id ([a-z0-9][a-z0-9._-]{{0,63}})"
        )
    if org != ORGANIZATION:
        raise InvalidInputError(f"{who}: subject O is {org!r}, not {ORGANIZATION!r}")
    if ou is None:
        raise InvalidInputError(f"{who}: subject has no OU (the role)")
    return cn, ou, serial


def _check_profile(certificate: x509.Certificate, who: str) -> None:
    """The extensions of a credential: CA=false, digitalSignature only, our EKU only."""
    extensions = certificate.extensions
    for extension in extensions:
        if extension.critical and extension.oid not in _KNOWN_CRITICAL:
            raise InvalidInputError(
                f"{who}: unexpected critical extension {extension.oid.dotted_string}"
            )
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        raise InvalidInputError(f"{who}: no BasicConstraints extension") from None
    if constraints.value.ca:
        raise InvalidInputError(f"{who}: is a CA certificate (BasicConstraints CA=true)")
    if not constraints.critical:
        raise InvalidInputError(f"{who}: BasicConstraints must be critical")
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        raise InvalidInputError(f"{who}: no KeyUsage extension") from None
    value = usage.value
    others = (
        value.content_commitment,
        value.key_encipherment,
        value.data_encipherment,
        value.key_agreement,
        value.key_cert_sign,
        value.crl_sign,
    )
    if not usage.critical or not value.digital_signature or any(others):
        raise InvalidInputError(f"{who}: KeyUsage must be digitalSignature only, and critical")
    try:
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise InvalidInputError(
            f"{who}: no ExtendedKeyUsage; a credential names creditshare request signing"
        ) from None
    if list(eku) != [CREDENTIAL_EKU]:
        raise InvalidInputError(
            f"{who}: ExtendedKeyUsage is not creditshare request signing "
            "(a TLS certificate is not a credential)"
        )
    try:
        extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        raise InvalidInputError(f"{who}: a credential names no hosts (it has a SAN)")


def credential_from_certificate(
    certificate: x509.Certificate, *, issuer_fingerprint: str = ""
) -> Credential:
    """Check a certificate's credential shape and read it; InvalidInputError otherwise."""
    who = "credential"
    try:
        cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(cn) == 1 and isinstance(cn[0].value, str) and PARTICIPANT_ID.fullmatch(cn[0].value):
            who = f"credential of {cn[0].value!r}"
        if certificate.version is not x509.Version.v3:
            raise InvalidInputError(f"{who}: not an X.509 v3 certificate")
        public = certificate.public_key()
        if not isinstance(public, Ed25519PublicKey):
            raise InvalidInputError(
                f"{who}: the key is {_key_kind(public)}, not Ed25519 "
                "(a TLS certificate is not a credential)"
            )
        participant_id, role, serial_attr = subject_fields(certificate.subject, who)
        if role not in CREDENTIAL_ROLES:
            raise InvalidInputError(f"{who}: OU {role!r} is not a credential role")
        if role == "enterprise":
            if serial_attr is None:
                raise InvalidInputError(f"{who}: an enterprise credential must name its USCC")
            try:
                uscc: str | None = Uscc(serial_attr).code
            except InvalidUsccError:
                raise InvalidInputError(
                    f"{who}: subject serialNumber is not a valid USCC"
                ) from None
        elif serial_attr is not None:
            raise InvalidInputError(f"{who}: a {role} credential carries no serialNumber/USCC")
        else:
            uscc = None
        _check_profile(certificate, who)
    except ValueError as exc:  # cryptography's lazy parsing of a malformed extension
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"{who}: malformed certificate ({exc})") from None
    return Credential(
        participant_id=participant_id,
        role=role,
        uscc=uscc,
        verify_key=VerifyKey.from_cryptography(public),
        serial=certificate.serial_number,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        issuer_fingerprint=issuer_fingerprint,
        der=certificate.public_bytes(serialization.Encoding.DER),
    )


def parse_credential(data: bytes) -> Credential:
    """Parse a credential (PEM or DER, at most 8 KiB) and check its shape, not its issuer.

    For storing what a participant uploads: whether a trusted CA signed it is the
    node's question (``CredentialVerifier.verify``), so ``issuer_fingerprint`` is "".
    """
    return credential_from_certificate(load_one_certificate(data, "credential"))
