"""Reading certificates and keys back, and checking that they belong together.

Services call these at start-up, so a wrong path, a key from another issue run
or a file that is not PEM at all stops the service with a ConfigurationError
that names the file, instead of surfacing later as an opaque TLS handshake
failure on the first query.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from creditshare.errors import ConfigurationError
from creditshare.pki._files import read_file

__all__ = [
    "CertificateInfo",
    "certificate_info",
    "is_ca",
    "load_certificate",
    "load_certificate_bundle",
    "load_identity",
    "load_private_key",
    "public_key_der",
]


class CertificateInfo(TypedDict):
    """What an operator wants to see about a certificate, as printable strings.

    ``role`` is ``"ca"`` for a CA certificate, otherwise the subject's OU
    (``"node"`` or ``"coordinator"`` for certificates issued here), or ``None``.
    ``sans`` uses OpenSSL's notation (``DNS:localhost``, ``IP:127.0.0.1``) so a
    name and an address that look alike cannot be confused.
    """

    subject: str
    issuer: str
    serial: str
    not_before: str
    not_after: str
    sans: list[str]
    role: str | None
    sha256: str


def load_certificate(path: Path, what: str = "certificate") -> x509.Certificate:
    """Parse the first PEM certificate in ``path``."""
    return load_certificate_bundle(path, what)[0]


def load_certificate_bundle(path: Path, what: str = "certificate") -> list[x509.Certificate]:
    """Parse every PEM certificate in ``path``; a trust file may hold several CAs."""
    data = read_file(path, what)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigurationError(f"{what} {path} is not a PEM certificate: {exc}") from exc
    if not certificates:  # pragma: no cover - cryptography raises instead
        raise ConfigurationError(f"{what} {path} holds no certificate")
    return certificates


def load_private_key(path: Path) -> tuple[bytes, PrivateKeyTypes]:
    """Read an unencrypted PEM private key; return the file's bytes and the parsed key.

    Encrypted keys are refused: a service starting unattended has nobody to type
    a passphrase, and the file's 0600 mode is what protects it.
    """
    data = read_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise ConfigurationError(
            f"private key {path} is encrypted; creditshare expects an unencrypted "
            "PKCS#8 key protected by file permissions"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(f"private key {path} is not a PEM private key: {exc}") from exc
    return data, key


def public_key_der(key: PrivateKeyTypes | x509.Certificate) -> bytes:
    """The SubjectPublicKeyInfo of a key or certificate, for comparing the two."""
    public = key.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def is_ca(certificate: x509.Certificate) -> bool:
    """True when the certificate's BasicConstraints say it may sign certificates."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def load_identity(cert: Path, key: Path) -> tuple[bytes, bytes]:
    """Read a certificate and its private key as PEM bytes: ``(cert_pem, key_pem)``.

    The order follows the arguments, not gRPC's ``(key, cert)`` pairs; the
    credential helpers in this package do that swap. Raises ConfigurationError
    when either file is missing or unparsable, or when the key is not the one the
    certificate was issued for (the usual slip after re-issuing only one file).
    """
    certificate = load_certificate(cert)
    key_pem, private_key = load_private_key(key)
    if public_key_der(private_key) != public_key_der(certificate):
        raise ConfigurationError(
            f"private key {key} does not match certificate {cert}; "
            "re-issue both files together or point at the right pair"
        )
    return read_file(cert, "certificate"), key_pem


def _general_names(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names = [f"DNS:{name}" for name in san.value.get_values_for_type(x509.DNSName)]
    names += [f"IP:{address}" for address in san.value.get_values_for_type(x509.IPAddress)]
    return names


def certificate_info(path: Path) -> CertificateInfo:
    """Summarise the (first) certificate in ``path`` for a CLI or a log line."""
    certificate = load_certificate(path)
    if is_ca(certificate):
        role: str | None = "ca"
    else:
        units = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        role = str(units[0].value) if units else None
    return CertificateInfo(
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        serial=f"{certificate.serial_number:x}",
        not_before=certificate.not_valid_before_utc.isoformat(),
        not_after=certificate.not_valid_after_utc.isoformat(),
        sans=_general_names(certificate),
        role=role,
        sha256=certificate.fingerprint(hashes.SHA256()).hex(),
    )
