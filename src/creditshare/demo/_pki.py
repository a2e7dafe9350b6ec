"""The demo federation's PKI, made the way operators make it: keys where they are used.

Each node and the coordinator run ``request`` in their own folder (the private
keys never leave it), the chain operator runs ``sign`` at the chain CA's folder
on the CSRs it receives, and publishes a revocation list per chain. On loopback
all of this happens in one process, but along the same paths and files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from creditshare.identity import Chain
from creditshare.pki import init_ca, issue_revocation_list, request, sign

__all__ = [
    "CRL_VALID_HOURS",
    "NodeIdentity",
    "chain_ca",
    "node_identity",
    "participant_identity",
    "tls_identity",
]

#: The demo's lists stay current for a week, so a demo folder can be reused for days.
CRL_VALID_HOURS = 7 * 24


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A node's TLS settings block, its signing key and its credential (role "node")."""

    tls: dict[str, str]
    signing_key: Path
    credential: Path


def chain_ca(work_dir: Path, chain: Chain) -> tuple[Path, Path]:
    """Create ``chain``'s CA and publish its first (empty) revocation list: (CA dir, CRL)."""
    ca_dir = work_dir / "pki" / chain.value / "ca"
    init_ca(chain.value, ca_dir)
    crl = work_dir / "pki" / chain.value / "revocations.crl"
    issue_revocation_list(ca_dir, crl, valid_hours=CRL_VALID_HOURS)
    return ca_dir, crl


def tls_identity(ca_dir: Path, folder: Path, name: str, role: str) -> dict[str, str]:
    """``request`` a TLS key in ``folder``, ``sign`` it at ``ca_dir``: a ``[tls]`` block."""
    files = request(folder, name, role)
    assert files.tls_csr is not None and files.tls_key is not None
    signed = sign(ca_dir, files.tls_csr.read_bytes(), folder / "tls.crt")
    return {"ca": str(signed.ca), "cert": str(signed.cert), "key": str(files.tls_key)}


def node_identity(
    ca_dir: Path, folder: Path, node_id: str, hosts: Sequence[str] = ()
) -> NodeIdentity:
    """A node's TLS identity and its credential, both from one ``request`` in ``folder``;
    its certificate names ``hosts`` (default: loopback)."""
    files = request(folder, node_id, "node", hosts=hosts)
    assert files.tls_csr is not None and files.tls_key is not None
    assert files.signing_csr is not None and files.signing_key is not None
    tls = sign(ca_dir, files.tls_csr.read_bytes(), folder / "tls.crt")
    credential = sign(ca_dir, files.signing_csr.read_bytes(), folder / "credential.crt")
    return NodeIdentity(
        tls={"ca": str(tls.ca), "cert": str(tls.cert), "key": str(files.tls_key)},
        signing_key=files.signing_key,
        credential=credential.cert,
    )


def participant_identity(
    work_dir: Path,
    chains: tuple[Chain, ...],
    participant_id: str,
    role: str,
    uscc: str | None = None,
    generation: int = 0,
) -> Path:
    """A bank's, bureau's or enterprise's identity folder: its own signing key (made there
    by ``request``) and one credential per chain CA (``<chain>.crt``) for that key.

    Made once; a second call returns the same folder, so a participant keeps its key. A
    later ``generation`` is a rotated key, with its own folder and credentials.
    """
    name = participant_id if generation == 0 else f"{participant_id}.{generation}"
    folder = work_dir / "participants" / name
    if (folder / "signing.key").exists():
        return folder
    files = request(folder, participant_id, role, uscc=uscc)
    assert files.signing_csr is not None
    csr = files.signing_csr.read_bytes()
    for chain in chains:
        sign(work_dir / "pki" / chain.value / "ca", csr, folder / f"{chain.value}.crt")
    return folder
