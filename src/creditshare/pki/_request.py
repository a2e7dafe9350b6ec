"""Key pairs and certificate signing requests, made on the party's own machine.

``request`` is the only place a participant's or a service's private key is
created: the chain CA receives CSRs (public keys plus the names they ask for)
and never holds, makes or ships anyone else's key. The files land in one folder:

- credential roles (bank, bureau, enterprise, ...): ``signing.key`` (Ed25519,
  0600, PKCS#8 PEM, what ``creditshare.crypto.SigningKey.from_pem`` loads) and
  ``signing.csr``;
- role "node": the signing pair above AND a TLS pair (``tls.key``, ECDSA P-256,
  and ``tls.csr`` naming the hosts the coordinator dials);
- role "coordinator": the TLS pair only (it signs nothing a node must believe).

Existing keys are never overwritten: replacing a key that a certificate was
already issued for would silently break the service that uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from creditshare.errors import ConfigurationError, InvalidInputError
from creditshare.pki._ca import ORGANIZATION, check_hosts, private_pem
from creditshare.pki._credential import (
    CREDENTIAL_ROLES,
    check_participant_id,
    check_uscc_for_role,
)
from creditshare.pki._files import ensure_private_dir, write_atomically

__all__ = [
    "DEFAULT_HOSTS",
    "REQUEST_ROLES",
    "SIGNING_CSR_FILE",
    "SIGNING_KEY_FILE",
    "TLS_CSR_FILE",
    "TLS_KEY_FILE",
    "RequestFiles",
    "request",
]

SIGNING_KEY_FILE = "signing.key"
SIGNING_CSR_FILE = "signing.csr"
TLS_KEY_FILE = "tls.key"
TLS_CSR_FILE = "tls.csr"
#: Names a TLS request asks for when none are given: a service on this machine.
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")
#: Every role ``request`` accepts: the credential roles plus the coordinator (TLS only).
REQUEST_ROLES: tuple[str, ...] = (*CREDENTIAL_ROLES, "coordinator")


@dataclass(frozen=True, slots=True)
class RequestFiles:
    """What ``request`` wrote; a pair is None when the role does not have it."""

    directory: Path
    participant_id: str
    role: str
    signing_key: Path | None
    signing_csr: Path | None
    tls_key: Path | None
    tls_csr: Path | None

    @property
    def csrs(self) -> list[Path]:
        """The requests to send to the chain CA."""
        return [p for p in (self.signing_csr, self.tls_csr) if p is not None]


def _subject(participant_id: str, role: str, uscc: str | None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, participant_id),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
    ]
    if uscc is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, uscc))
    return x509.Name(attributes)


def _csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def request(
    out_dir: Path,
    participant_id: str,
    role: str,
    *,
    uscc: str | None = None,
    hosts: Sequence[str] = (),
) -> RequestFiles:
    """Make this party's key pair(s) in ``out_dir`` and the CSR(s) to send to the chain CA.

    ``hosts`` (TLS roles only: node, coordinator) become the CSR's subject
    alternative names; empty means ``DEFAULT_HOSTS``. ``uscc`` is required for an
    enterprise and refused for every other role. Raises ConfigurationError if a
    key file already exists in ``out_dir``, InvalidInputError for a bad field;
    nothing is written in either case.
    """
    participant_id = check_participant_id(participant_id)
    if role not in REQUEST_ROLES:
        raise InvalidInputError(f"role must be one of {', '.join(REQUEST_ROLES)}, got {role!r}")
    uscc = check_uscc_for_role(role, uscc)
    wants_tls = role in ("node", "coordinator")
    wants_signing = role in CREDENTIAL_ROLES
    if isinstance(hosts, str | bytes):
        raise InvalidInputError("hosts must be a sequence of host names or IP addresses")
    if hosts and not wants_tls:
        raise InvalidInputError(
            f"a {role} has no TLS certificate, so no hosts; only node and coordinator do"
        )
    san = check_hosts(list(hosts) or DEFAULT_HOSTS) if wants_tls else []
    out_dir = Path(out_dir)
    targets = [SIGNING_KEY_FILE] * wants_signing + [TLS_KEY_FILE] * wants_tls
    existing = [out_dir / name for name in targets if (out_dir / name).exists()]
    if existing:
        raise ConfigurationError(
            f"{existing[0]} already exists; creditshare never replaces a key "
            "(move it away first if you really mean to make a new one)"
        )
    ensure_private_dir(out_dir)
    subject = _subject(participant_id, role, uscc)

    signing_key = signing_csr = tls_key = tls_csr = None
    if wants_signing:
        key = Ed25519PrivateKey.generate()
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, None)
        signing_key, signing_csr = out_dir / SIGNING_KEY_FILE, out_dir / SIGNING_CSR_FILE
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomically(signing_key, pem, private=True)
        write_atomically(signing_csr, _csr_pem(csr), private=False)
    if wants_tls:
        tls = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(subject)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .sign(tls, hashes.SHA256())
        )
        tls_key, tls_csr = out_dir / TLS_KEY_FILE, out_dir / TLS_CSR_FILE
        write_atomically(tls_key, private_pem(tls), private=True)
        write_atomically(tls_csr, _csr_pem(csr), private=False)
    return RequestFiles(
        directory=out_dir,
        participant_id=participant_id,
        role=role,
        signing_key=signing_key,
        signing_csr=signing_csr,
        tls_key=tls_key,
        tls_csr=tls_csr,
    )
