"""Creating a chain CA and issuing node and coordinator certificates from it.

Each regional chain has its own CA, so trust follows the chain boundary: a node
of one chain accepts only the coordinator certificates its own chain's operator
issued, and a leaked node key of one chain is useless against another. Keys are
ECDSA P-256 with SHA-256 signatures, the combination every gRPC TLS stack
(BoringSSL included) supports and the cheapest to handshake with.

The CA carries ``pathLenConstraint=0``: it signs leaves only, never a subordinate
CA, so possession of a node's key can never be turned into a new issuer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, cast, get_args

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
    "ORGANIZATION",
    "CaFiles",
    "IssuedFiles",
    "Role",
    "init_ca",
    "issue",
]

#: File names inside a CA directory; also the name of the CA copy next to a leaf.
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
#: Subject O of every certificate, so a foreign certificate stands out in a listing.
ORGANIZATION = "creditshare"
#: notBefore is set this far before ``now`` so a certificate issued on one machine
#: is already valid on a peer whose clock runs a little behind.
CLOCK_SKEW = timedelta(minutes=5)

Role = Literal["node", "coordinator"]
_ROLES: tuple[str, ...] = get_args(Role)

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_DNS_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"(?:\*\.)?{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_MAX_VALID_DAYS = 36_500

# Node certificates only ever serve (nodes are gRPC servers). Coordinator
# certificates authenticate the coordinator to nodes, and also carry serverAuth so
# the same identity can later terminate HTTPS without a second issue run.
_EXTENDED_KEY_USAGE: dict[str, list[x509.ObjectIdentifier]] = {
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


@dataclass(frozen=True, slots=True)
class IssuedFiles:
    """Where ``issue`` put a leaf identity and the CA certificate that verifies it.

    ``ca`` is a copy of the issuing CA's certificate, so the output directory is
    everything a service needs (its identity plus the root it trusts) and can be
    shipped as one unit without the CA's private key.
    """

    name: str
    role: Role
    cert: Path
    key: Path
    ca: Path


def _check_now(now: datetime | None) -> datetime:
    if now is None:
        now = datetime.now(UTC)
    elif not isinstance(now, datetime):
        raise InvalidInputError(f"now must be a datetime, not {type(now).__name__}")
    elif now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInputError("now must be timezone-aware (e.g. datetime.now(UTC))")
    # X.509 times have whole-second precision; truncate so what we return is what we wrote.
    return now.astimezone(UTC).replace(microsecond=0)


def _check_valid_days(valid_days: int) -> timedelta:
    if (
        not isinstance(valid_days, int)
        or isinstance(valid_days, bool)
        or not 1 <= valid_days <= _MAX_VALID_DAYS
    ):
        raise InvalidInputError(
            f"valid_days must be an integer from 1 to {_MAX_VALID_DAYS}, got {valid_days!r}"
        )
    return timedelta(days=valid_days)


def _check_chain(chain: str) -> Chain:
    try:
        return Chain(chain)
    except ValueError:
        known = ", ".join(c.value for c in Chain)
        raise InvalidInputError(f"unknown chain {chain!r}; expected one of {known}") from None


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"certificate name {name!r} must match [a-z0-9][a-z0-9._-]{{0,63}}; "
            "it becomes the CN and the file names"
        )
    if name == Path(CA_CERT_FILE).stem:
        raise InvalidInputError(
            f"certificate name {name!r} is reserved: {name}.crt is the CA certificate's file"
        )
    return name


def _check_role(role: object) -> Role:
    if role not in _ROLES:
        raise InvalidInputError(f"role must be one of {', '.join(_ROLES)}, got {role!r}")
    return cast(Role, role)


def _check_hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
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
    lifetime = _check_valid_days(valid_days)
    issued_at = _check_now(now)
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
    write_atomically(key_path, _private_pem(key), private=True)
    write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM), private=False)
    return CaFiles(chain=chain_id, directory=out_dir, cert=cert_path, key=key_path)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
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


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue(
    ca_dir: Path,
    name: str,
    role: Role,
    out_dir: Path,
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    valid_days: int = 825,
    now: datetime | None = None,
) -> IssuedFiles:
    """Issue a ``role`` certificate called ``name`` from the CA in ``ca_dir``.

    Writes ``<name>.crt``, ``<name>.key`` (0600) and a copy of ``ca.crt`` into
    ``out_dir``. ``hosts`` become the SubjectAlternativeName: a client must dial
    the server by one of them (gRPC checks the target against the SANs). An
    existing ``<name>`` identity is replaced, which is how certificates rotate.

    The validity window is ``now - CLOCK_SKEW`` to ``now + valid_days``, cut
    back to the CA's own window: a leaf cannot be trusted for longer than its
    issuer anyway, and a visible date beats a silent surprise.
    """
    name = _check_name(name)
    role = _check_role(role)
    san = _check_hosts(hosts)
    lifetime = _check_valid_days(valid_days)
    issued_at = _check_now(now)
    ca_dir, out_dir = Path(ca_dir), Path(out_dir)

    ca_cert, ca_key = _load_ca(ca_dir)
    ca_start, ca_end = ca_cert.not_valid_before_utc, ca_cert.not_valid_after_utc
    if not ca_start <= issued_at < ca_end:
        raise ConfigurationError(
            f"CA {ca_dir / CA_CERT_FILE} is not valid at {issued_at.isoformat()} "
            f"(valid {ca_start.isoformat()} to {ca_end.isoformat()})"
        )
    ca_copy = out_dir / CA_CERT_FILE
    same_dir = out_dir.exists() and out_dir.resolve() == ca_dir.resolve()
    if not same_dir and (out_dir / CA_KEY_FILE).exists():
        raise ConfigurationError(
            f"{out_dir} holds another CA's key; issuing there would overwrite its {CA_CERT_FILE}"
        )
    ensure_private_dir(out_dir)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
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
        .add_extension(x509.ExtendedKeyUsage(_EXTENDED_KEY_USAGE[role]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    write_atomically(key_path, _private_pem(key), private=True)
    write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM), private=False)
    if not same_dir:
        write_atomically(ca_copy, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    return IssuedFiles(name=name, role=role, cert=cert_path, key=key_path, ca=ca_copy)
