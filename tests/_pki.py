"""Certificates for tests, made the way parties make them: the key where it is used.

Every helper runs ``request`` in the party's own folder and ``sign`` at the CA
folder, in-process, so tests exercise the same code path as
``creditshare pki request`` / ``pki sign`` and no private key is ever made by
the CA. ``make_crl`` revokes the given serials and publishes a list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from creditshare.crypto import SigningKey
from creditshare.pki import issue_revocation_list, request, revoke, sign

__all__ = ["TlsFiles", "make_credential", "make_crl", "make_tls"]


@dataclass(frozen=True)
class TlsFiles:
    """A TLS identity as a service configures it: its certificate, its key, its CA."""

    name: str
    role: str
    cert: Path
    key: Path
    ca: Path
    serial: int


def _fresh(folder: Path) -> Path:
    """``folder``, or ``folder-2``, ... if that is taken (``request`` never overwrites)."""
    candidate, n = folder, 1
    while candidate.exists():
        n += 1
        candidate = folder.with_name(f"{folder.name}-{n}")
    return candidate


def make_tls(
    ca_dir: Path,
    out_dir: Path,
    name: str,
    role: str,
    *,
    hosts: Sequence[str] = (),
    valid_days: int = 365,
    now: datetime | None = None,
) -> TlsFiles:
    """A node or coordinator TLS identity in ``out_dir``: tls.key, tls.crt and ca.crt."""
    files = request(_fresh(out_dir), name, role, hosts=hosts)
    assert files.tls_csr is not None and files.tls_key is not None
    cert = files.directory / "tls.crt"
    signed = sign(ca_dir, files.tls_csr.read_bytes(), cert, valid_days=valid_days, now=now)
    return TlsFiles(name, role, cert, files.tls_key, signed.ca, signed.serial)


def make_credential(
    ca_dir: Path,
    tmp: Path,
    participant_id: str,
    role: str,
    uscc: str | None = None,
    *,
    valid_days: int = 365,
    now: datetime | None = None,
) -> tuple[SigningKey, bytes]:
    """The party's signing key and its credential (PEM), certified by the CA in ``ca_dir``.

    The key is made in a folder of ``tmp`` named after the participant (as the
    party would on its own machine); the credential's serial is in the PEM.
    """
    files = request(_fresh(Path(tmp) / f"party-{participant_id}"), participant_id, role, uscc=uscc)
    assert files.signing_csr is not None and files.signing_key is not None
    cert = files.directory / "credential.crt"
    sign(ca_dir, files.signing_csr.read_bytes(), cert, valid_days=valid_days, now=now)
    return SigningKey.from_pem(files.signing_key.read_bytes()), cert.read_bytes()


def make_crl(
    ca_dir: Path,
    tmp: Path,
    *,
    revoked: Iterable[int] = (),
    valid_hours: int = 24,
    now: datetime | None = None,
) -> bytes:
    """Revoke ``revoked`` serials at the CA, then publish its next revocation list (PEM)."""
    for serial in revoked:
        revoke(ca_dir, serial=serial, now=now)
    out = _fresh(Path(tmp) / "revocations.crl")
    issue_revocation_list(ca_dir, out, valid_hours=valid_hours, now=now)
    return out.read_bytes()
