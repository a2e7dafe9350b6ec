"""Revocation: the CA's record of revoked serials, and the signed, dated list it publishes.

Revocation reaches nodes as an X.509 CRL signed by the chain CA: it carries a
CRL number (monotonic, so a node can refuse to roll back to an older list that
a compromised coordinator replays), thisUpdate and nextUpdate (so a node can
refuse to decide with a list older than its configured bound), and the revoked
serials. The CA's state is two small files in its folder: ``revoked.json``
(serial -> date and reason) and ``crl-number`` (the last number published; it
is written before the list, so a crash can skip a number but never reuse one).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from creditshare.errors import ConfigurationError, InvalidInputError
from creditshare.pki._ca import authority_key_identifier, check_now, load_ca
from creditshare.pki._credential import fingerprint, load_one_certificate
from creditshare.pki._files import ensure_private_dir, read_file, write_atomically
from creditshare.pki._sign import issued_path

__all__ = [
    "CRL_NUMBER_FILE",
    "MAX_CRL_BYTES",
    "MAX_CRL_HOURS",
    "REVOCATION_REASONS",
    "REVOKED_FILE",
    "RevocationList",
    "Revoked",
    "issue_revocation_list",
    "revoke",
]

REVOKED_FILE = "revoked.json"
CRL_NUMBER_FILE = "crl-number"
#: A CRL of ten thousand revoked serials is ~400 KiB; a node parses it before it
#: knows whether it is signed, so the size is bounded first.
MAX_CRL_BYTES = 1024 * 1024
#: Longest a list may claim to stay current: a node's own age bound is usually
#: far shorter, but a list valid for months would defeat revocation on nodes that
#: rely on nextUpdate alone.
MAX_CRL_HOURS = 31 * 24
#: Reasons ``revoke`` accepts (RFC 5280 CRLReason, as cryptography's ReasonFlags names them).
REVOCATION_REASONS: tuple[str, ...] = tuple(
    r.name for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl
)


@dataclass(frozen=True, slots=True)
class RevocationList:
    """A chain CA's CRL, parsed; ``issuer_fingerprint`` is "" until its signature is verified."""

    number: int
    this_update: datetime
    next_update: datetime
    revoked_serials: frozenset[int]
    issuer: x509.Name
    issuer_fingerprint: str
    der: bytes

    @classmethod
    def parse(cls, data: bytes) -> RevocationList:
        """A CRL (PEM or DER, at most ``MAX_CRL_BYTES``) with number and both dates."""
        if not isinstance(data, bytes):
            raise InvalidInputError("a revocation list must be bytes (PEM or DER)")
        if len(data) > MAX_CRL_BYTES:
            raise InvalidInputError(
                f"the revocation list is {len(data)} bytes; at most {MAX_CRL_BYTES}"
            )
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                crl = x509.load_pem_x509_crl(data)
            else:
                crl = x509.load_der_x509_crl(data)
            number_ext = crl.extensions.get_extension_for_class(x509.CRLNumber)
            serials = frozenset(entry.serial_number for entry in crl)
        except x509.ExtensionNotFound:
            raise InvalidInputError(
                "the revocation list has no CRL number, so it cannot be ordered"
            ) from None
        except ValueError:
            raise InvalidInputError("not an X.509 revocation list (PEM or DER)") from None
        next_update = crl.next_update_utc
        if next_update is None:
            raise InvalidInputError("the revocation list has no nextUpdate date")
        this_update = crl.last_update_utc
        if next_update <= this_update:
            raise InvalidInputError("the revocation list's nextUpdate is not after its thisUpdate")
        return cls(
            number=number_ext.value.crl_number,
            this_update=this_update,
            next_update=next_update,
            revoked_serials=serials,
            issuer=crl.issuer,
            issuer_fingerprint="",
            der=crl.public_bytes(serialization.Encoding.DER),
        )

    def signed_by(self, ca: x509.Certificate) -> bool:
        """True if ``ca`` issued this list (name and signature)."""
        if ca.subject != self.issuer:
            return False
        crl = x509.load_der_x509_crl(self.der)
        public = ca.public_key()
        try:
            return crl.is_signature_valid(public)  # type: ignore[arg-type]
        except TypeError:  # a key type CRLs cannot be signed with
            return False

    def to_pem(self) -> bytes:
        return x509.load_der_x509_crl(self.der).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class Revoked:
    """One entry of the CA's revocation state."""

    serial: int
    revoked_at: datetime
    reason: str


def _read_state(ca_dir: Path) -> dict[int, Revoked]:
    path = ca_dir / REVOKED_FILE
    if not path.exists():
        return {}
    try:
        raw = json.loads(read_file(path, "revocation state"))
        return {
            int(serial, 16): Revoked(
                int(serial, 16), datetime.fromisoformat(entry["revoked_at"]), entry["reason"]
            )
            for serial, entry in raw.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"revocation state {path} is damaged: {exc}") from None


def _write_state(ca_dir: Path, state: dict[int, Revoked]) -> None:
    doc = {
        f"{r.serial:x}": {"revoked_at": r.revoked_at.isoformat(), "reason": r.reason}
        for r in sorted(state.values(), key=lambda r: r.serial)
    }
    data = (json.dumps(doc, indent=2) + "\n").encode()
    write_atomically(ca_dir / REVOKED_FILE, data, private=False)


def revoke(
    ca_dir: Path,
    *,
    serial: int | None = None,
    cert: Path | None = None,
    reason: str = "unspecified",
    now: datetime | None = None,
) -> Revoked:
    """Record that the certificate ``serial`` (or the one in ``cert``) is revoked.

    The serial must be one this CA issued (``issued/``), so a typo cannot pass for
    a revocation. Revoking twice keeps the first entry. Takes effect on nodes
    with the next ``issue_revocation_list``.
    """
    if (serial is None) == (cert is None):
        raise InvalidInputError("name the certificate to revoke by serial or by file, not both")
    if reason not in REVOCATION_REASONS:
        raise InvalidInputError(
            f"reason must be one of {', '.join(REVOCATION_REASONS)}, got {reason!r}"
        )
    at = check_now(now)
    ca_dir = Path(ca_dir)
    ca_cert, _ = load_ca(ca_dir)
    if cert is not None:
        certificate = load_one_certificate(read_file(Path(cert), "certificate"), str(cert))
        if certificate.issuer != ca_cert.subject:
            raise InvalidInputError(f"{cert} was not issued by the CA in {ca_dir}")
        try:
            certificate.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise InvalidInputError(f"{cert} was not issued by the CA in {ca_dir}") from exc
        serial = certificate.serial_number
    assert serial is not None
    if isinstance(serial, bool) or not isinstance(serial, int) or serial <= 0:
        raise InvalidInputError(f"serial must be a positive integer, got {serial!r}")
    if not issued_path(ca_dir, serial).exists():
        raise InvalidInputError(f"the CA in {ca_dir} never issued serial {serial:x}")
    state = _read_state(ca_dir)
    if serial in state:
        return state[serial]
    state[serial] = Revoked(serial, at, reason)
    _write_state(ca_dir, state)
    return state[serial]


def _next_number(ca_dir: Path) -> int:
    path = ca_dir / CRL_NUMBER_FILE
    if not path.exists():
        return 1
    text = read_file(path, "CRL number").decode("ascii", "replace").strip()
    if not text.isdigit():
        raise ConfigurationError(f"CRL number file {path} is damaged: {text[:40]!r}")
    return int(text) + 1


def issue_revocation_list(
    ca_dir: Path,
    out: Path,
    *,
    valid_hours: int = 24,
    now: datetime | None = None,
) -> RevocationList:
    """Sign the CA's current revocation list, numbered one above the last, into ``out``.

    thisUpdate is ``now``, nextUpdate ``now + valid_hours``. Publish a new one
    before nodes find the last one too old (their bound, or nextUpdate).
    """
    if (
        isinstance(valid_hours, bool)
        or not isinstance(valid_hours, int)
        or not 1 <= valid_hours <= MAX_CRL_HOURS
    ):
        raise InvalidInputError(
            f"valid_hours must be an integer from 1 to {MAX_CRL_HOURS}, got {valid_hours!r}"
        )
    at = check_now(now)
    ca_dir, out = Path(ca_dir), Path(out)
    ca_cert, ca_key = load_ca(ca_dir)
    number = _next_number(ca_dir)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(at)
        .next_update(at + timedelta(hours=valid_hours))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(authority_key_identifier(ca_cert, ca_key), critical=False)
    )
    for entry in sorted(_read_state(ca_dir).values(), key=lambda r: r.serial):
        revoked = x509.RevokedCertificateBuilder().serial_number(entry.serial)
        revoked = revoked.revocation_date(entry.revoked_at)
        if entry.reason != x509.ReasonFlags.unspecified.name:
            revoked = revoked.add_extension(
                x509.CRLReason(x509.ReasonFlags[entry.reason]), critical=False
            )
        builder = builder.add_revoked_certificate(revoked.build())
    crl = builder.sign(ca_key, hashes.SHA256())
    write_atomically(ca_dir / CRL_NUMBER_FILE, f"{number}\n".encode(), private=False)
    pem = crl.public_bytes(serialization.Encoding.PEM)
    ensure_private_dir(out.parent)
    write_atomically(out, pem, private=False)
    return dataclasses.replace(RevocationList.parse(pem), issuer_fingerprint=fingerprint(ca_cert))
