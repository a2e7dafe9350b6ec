"""A bureau's signature over the points it sent a node in one PSI run.

Why: the bureau's blinded ids reach a node in chunks through the coordinator, and only
the first chunk carries the job's ledger receipt. Without a signature over the whole
run, a compromised relay could add chunks of ``H(x)`` for ids of its choosing (or swap
them for the bureau's) and read the node's membership of them off the node's pages.
With its last chunk the bureau signs this statement; the node rebuilds it from what it
received (its own running hash, its own id, the domain and count it saw) and pages out
nothing of its own until the signature verifies under the bureau's certified key.

Nothing of the statement travels but the signature: the node builds the document
itself, so a relay has no field to change, and any difference (an extra, missing or
altered point, another job, node or domain) is a signature that does not verify.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

from creditshare.errors import InvalidInputError
from creditshare.signed._statements import _ID, _REQUEST_ID, _SHA256, _fields, _Signed, _text

__all__ = ["SignedPsiTranscript", "psi_transcript_document"]

#: The most points a run may carry (``federated.MAX_PSI_ITEMS``; signed/ does not import
#: federated, so the bound is repeated and checked equal by a test).
_MAX_POINTS = 50_000_000


def psi_transcript_document(
    *,
    job_id: str,
    requester: str,
    node: str,
    domain: bytes,
    points: int,
    transcript_sha256: bytes,
) -> dict[str, Any]:
    """The document a bureau signs with its last chunk to ``node``: every point it sent
    in the run, as ``points`` (how many) and ``transcript_sha256`` (the running hash of
    ``federated.PsiTranscript``), for this job and PSI ``domain``."""
    return SignedPsiTranscript.checked(
        {
            "v": SignedPsiTranscript.VERSION,
            "type": "psi_transcript",
            "job_id": job_id,
            "requester": requester,
            "node": node,
            "domain_sha256": hashlib.sha256(domain).hexdigest(),
            "points": points,
            "transcript_sha256": transcript_sha256.hex(),
        }
    )


@dataclass(frozen=True, slots=True)
class SignedPsiTranscript(_Signed):
    """The bureau's signed statement of the points it sent one node in one PSI run."""

    DOMAIN: ClassVar[bytes] = b"creditshare/signed-psi-transcript/v1\n"
    NAME: ClassVar[str] = "PSI transcript"
    VERSION: ClassVar[int] = 1
    _FIELDS: ClassVar[set[str]] = {
        "v",
        "type",
        "job_id",
        "requester",
        "node",
        "domain_sha256",
        "points",
        "transcript_sha256",
    }

    @classmethod
    def checked(cls, body: Any) -> dict[str, Any]:
        doc = _fields(body, cls._FIELDS, "psi_transcript", cls.VERSION)
        _text(doc, "job_id", _REQUEST_ID, "32 lowercase hex digits")
        _text(doc, "requester", _ID, "a participant id")
        _text(doc, "node", _ID, "a node id")
        _text(doc, "domain_sha256", _SHA256, "64 lowercase hex digits (SHA-256)")
        _text(doc, "transcript_sha256", _SHA256, "64 lowercase hex digits (SHA-256)")
        points = doc.get("points")
        if type(points) is not int or not 0 <= points <= _MAX_POINTS:
            raise InvalidInputError(
                f"signed request field 'points' must be an integer from 0 to {_MAX_POINTS}"
            )
        return doc
