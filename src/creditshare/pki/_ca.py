"""A chain CA: creating it, loading it back, and the checks every issuing step shares.

Each regional chain has its own CA, so trust follows the chain boundary: a node
of one chain accepts only the coordinator certificates (and participant
credentials) its own chain's operator certified, and a leaked node key of one
chain is useless against another. CA and TLS keys are ECDSA P-256 with SHA-256
signatures, the combination every gRPC TLS stack (BoringSSL included) supports
and the cheapest to handshake with.

The CA carries ``pathLenConstraint=0``: it signs leaves only, never a subordinate
CA, so possession of a node's key can never be turned into a new issuer. The CA
never makes a leaf's key: parties send CSRs (``request`` / ``sign``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from creditshare.errors import ConfigurationError, InvalidInputError
from creditshare.identity import Chain
from creditshare.pki._files import ensure_private_dir, write_atomically
from creditshare.pki._inspect import (
    is_ca,
    load_certificate,
    load_private_key,
    public_key_der,
)

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CLOCK_SKEW",
    "MAX_LEAF_DAYS",
    "ORGANIZATION",
    "TLS_EXTENDED_KEY_USAGE",
    "TLS_ROLES",
    "CaFiles",
    "Role",
    "authority_key_identifier",
    "check_hosts",
    "check_now",
    "check_valid_days",
    "init_ca",
    "load_ca",
    "private_pem",
]

#: File names inside a CA directory; also the name of the CA copy next to a leaf.
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
#: Subject O of every certificate, so a foreign certificate stands out in a listing.
ORGANIZATION = "creditshare"
#: notBefore is set this far before ``now`` so a certificate issued on one machine
#: is already valid on a peer whose clock runs a little behind.
CLOCK_SKEW = timedelta(minutes=5)

#: Roles of TLS certificates (ECDSA P-256): nodes serve, the coordinator dials.
Role = Literal["node", "coordinator"]
TLS_ROLES: tuple[str, ...] = get_args(Role)

_DNS_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"(?:\*\.)?{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_MAX_VALID_DAYS = 36_500
#: Longest a leaf (TLS certificate or credential) may be valid: revocation lists
#: cover what happens before, but a bound keeps a forgotten key from living forever.
MAX_LEAF_DAYS = 825

# Node certificates only ever serve (nodes are gRPC servers). Coordinator
# certificates authenticate the coordinator to nodes, and also carry serverAuth so
# the same identity can later terminate HTTPS without a second issue run.
TLS_EXTENDED_KEY_USAGE: dict[str, list[x509.ObjectIdentifier]] = {
    "node": [ExtendedKeyUsageOID.SERVER_AUTH],
    "coordinator": [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
}


@dataclass(frozen=True, slots=True)
class CaFiles:
    """Where ``init_ca`` put a chain CA."""

    chain: Chain
    directory: Path
    cert: Path
    key: Path


def check_now(now: datetime | None) -> datetime:
    if now is None:
        now = datetime.now(UTC)
    elif not isinstance(now, datetime):
        raise InvalidInputError(f"now must be a datetime, not {type(now).__name__}")
    elif now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInputError("now must be timezone-aware (e.g. datetime.now(UTC))")
    # X.509 times have whole-second precision; truncate so what we return is what we wrote.
    return now.astimezone(UTC).replace(microsecond=0)


def check_valid_days(valid_days: int, maximum: int = _MAX_VALID_DAYS) -> timedelta:
    if (
        not isinstance(valid_days, int)
        or isinstance(valid_days, bool)
        or not 1 <= valid_days <= maximum
    ):
        raise InvalidInputError(
            f"valid_days must be an integer from 1 to {maximum}, got {valid_days!r}"
        )
    return timedelta(days=valid_days)


def _check_chain(chain: str) -> Chain:
    try:
        return Chain(chain)
    except ValueError:
        known = ", ".join(c.value for c in Chain)
        raise InvalidInputError(f"unknown chain {chain!r}; expected one of {known}") from None


def check_hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Turn host strings into SAN entries: IP literals as IPAddress, the rest as DNSName.

    gRPC checks the name the client dialled against these entries, so an address
    written as a DNS name would never match; parsing decides which kind each is.
    """
    if isinstance(hosts, str | bytes) or not isinstance(hosts, Sequence):
        raise InvalidInputError("hosts must be a sequence of host names or IP addresses")
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        entry: x509.GeneralName
        if not isinstance(host, str) or not host:
            raise InvalidInputError(f"host {host!r} must be a non-empty string")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            dns = host.lower()
            if len(dns) > 253 or not _DNS_NAME.fullmatch(dns):
                raise InvalidInputError(
                    f"host {host!r} is neither an IP address nor a valid DNS name"
                ) from None
            key, entry = f"DNS:{dns}", x509.DNSName(dns)
        else:
            key, entry = f"IP:{address}", x509.IPAddress(address)
        if key not in seen:
            seen.add(key)
            names.append(entry)
    if not names:
        raise InvalidInputError(
            "hosts must name at least one host: clients verify the server by these names"
        )
    return names


def init_ca(
    chain: str,
    out_dir: Path,
    *,
    valid_days: int = 3650,
    now: datetime | None = None,
    overwrite: bool = False,
) -> CaFiles:
    """Create the CA of ``chain`` as ``ca.crt`` and ``ca.key`` (0600) in ``out_dir``.

    Refuses to replace an existing CA unless ``overwrite`` is true: a new CA key
    silently invalidates every certificate already issued for the chain.
    ``now`` (timezone-aware) fixes the validity window, for tests and for
    reproducible issue runs.
    """
    chain_id = _check_chain(chain)
    lifetime = check_valid_days(valid_days)
    issued_at = check_now(now)
    out_dir = Path(out_dir)
    cert_path, key_path = out_dir / CA_CERT_FILE, out_dir / CA_KEY_FILE
    if not overwrite:
        existing = [p for p in (cert_path, key_path) if p.exists()]
        if existing:
            raise ConfigurationError(
                f"a CA already exists at {existing[0]}; replacing it invalidates every "
                "certificate it issued (pass overwrite=True to do it anyway)"
            )
    ensure_private_dir(out_dir)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"creditshare {chain_id.value} chain CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(issued_at - CLOCK_SKEW)
        .not_valid_after(issued_at + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    write_atomically(key_path, private_pem(key), private=True)
    write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM), private=False)
    return CaFiles(chain=chain_id, directory=out_dir, cert=cert_path, key=key_path)


def load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE
    certificate = load_certificate(cert_path, "CA certificate")
    _, key = load_private_key(key_path)
    if not is_ca(certificate):
        raise ConfigurationError(f"{cert_path} is not a CA certificate")
    if public_key_der(key) != public_key_der(certificate):
        raise ConfigurationError(f"CA key {key_path} does not match CA certificate {cert_path}")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError(f"CA key {key_path} is not an ECDSA key; create it with init_ca")
    return certificate, key


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def authority_key_identifier(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> x509.AuthorityKeyIdentifier:
    """The AKI a leaf or CRL of this CA carries (from the CA's SKI when it has one)."""
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
