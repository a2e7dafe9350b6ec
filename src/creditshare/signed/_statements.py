"""Signed query and training-job requests: canonical documents, Ed25519 signatures.

Each statement type has its own domain prefix, so a signature over a query can never be
replayed as a training job (or as a consent, or a tree head). The documents hold only
bounded, validated fields; ``from_json`` refuses anything else before a signature is
even checked, because nodes parse these from ledger leaves the coordinator wrote.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from creditshare._canonical import canonical_json, format_time, parse_time
from creditshare.crypto import SigningKey, VerifyKey, decode_signature
from creditshare.errors import InvalidInputError
from creditshare.identity import Chain

__all__ = [
    "MAX_NODES",
    "SignedQuery",
    "SignedTrainingJob",
    "query_document",
    "training_document",
]

#: Nodes one training job may name (the coordinator's own bound is lower).
MAX_NODES = 64
_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
_CONSENT_ID = re.compile(r"[0-9a-f]{32}")
_FINGERPRINT = re.compile(r"[0-9a-f]{16,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_USCC = re.compile(r"[0-9A-Z]{18}")
_PURPOSE = re.compile(r"[a-z_]{1,32}")
_CHAIN = re.compile("|".join(c.value for c in Chain))


def _text(doc: dict[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidInputError(f"signed request field {key!r} must be {what}")
    return value


def _list(doc: dict[str, Any], key: str, pattern: re.Pattern[str], limit: int) -> list[str]:
    value = doc.get(key)
    if (
        not isinstance(value, list)
        or len(value) > limit
        or not all(isinstance(v, str) and pattern.fullmatch(v) for v in value)
        or value != sorted(set(value))
    ):
        raise InvalidInputError(
            f"signed request field {key!r} must be a sorted list of at most {limit} distinct ids"
        )
    return value


def _fields(doc: Any, expected: set[str], kind: str, version: int = 1) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise InvalidInputError("a signed request document must be a JSON object")
    if doc.get("type") == kind and doc.get("v") != version:
        raise InvalidInputError(
            f"signed {kind} request version {repr(doc.get('v'))[:16]} is not supported (this is "
            f"version {version}): re-sign it with a current creditshare SDK"
        )
    if set(doc) != expected:
        missing, extra = sorted(expected - set(doc)), sorted(set(doc) - expected)
        raise InvalidInputError(
            f"signed request fields: missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    if doc.get("type") != kind:
        raise InvalidInputError(f"signed request is not a version {version} {kind} request")
    return doc


@dataclass(frozen=True, slots=True)
class _Signed:
    document: dict[str, Any]
    signature: bytes

    DOMAIN: ClassVar[bytes] = b""
    #: What the statement is called in error messages.
    NAME: ClassVar[str] = ""

    @classmethod
    def message(cls, document: dict[str, Any]) -> bytes:
        return cls.DOMAIN + canonical_json(document)

    @classmethod
    def checked(cls, body: Any) -> dict[str, Any]:
        """``body`` as a document of this type, every field validated (or InvalidInputError)."""
        raise NotImplementedError

    @classmethod
    def sign(cls, document: dict[str, Any], key: SigningKey) -> Self:
        document = cls.checked(document)
        return cls(document, key.sign(cls.message(document)))

    @classmethod
    def from_json(cls, body: Any) -> Self:
        if not isinstance(body, dict) or set(body) != {"document", "signature"}:
            raise InvalidInputError(f"a signed {cls.NAME} is {{document, signature}}")
        return cls(cls.checked(body["document"]), decode_signature(body["signature"], "request"))

    def verify(self, key: VerifyKey) -> None:
        """InvalidSignatureError unless ``key`` signed exactly this document."""
        key.verify(self.signature, self.message(self.document))

    @property
    def requester(self) -> str:
        return str(self.document["requester"])

    @property
    def time(self) -> datetime:
        return parse_time(self.document["time"], "time")

    def to_json(self) -> dict[str, Any]:
        return {
            "document": self.document,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }


def query_document(
    *,
    query_id: str,
    requester: str,
    uscc: str,
    purpose: str,
    consent_id: str,
    chains: list[str] | tuple[str, ...],
    model_id: str,
    key_fingerprint: str,
    time: datetime,
) -> dict[str, Any]:
    """The document a requester signs for one query (``chains`` empty: the consent's)."""
    return SignedQuery.checked(
        {
            "v": 1,
            "type": "query",
            "query_id": query_id,
            "requester": requester,
            "uscc": uscc,
            "purpose": purpose,
            "consent_id": consent_id,
            "chains": sorted(set(chains)),
            "model_id": model_id,
            "key_fingerprint": key_fingerprint,
            "time": format_time(time),
        }
    )


@dataclass(frozen=True, slots=True)
class SignedQuery(_Signed):
    """A bank's (or bureau's) signed request for one enterprise's credit profile."""

    DOMAIN: ClassVar[bytes] = b"creditshare/signed-query/v1\n"
    NAME: ClassVar[str] = "query"
    _FIELDS: ClassVar[set[str]] = {
        "v",
        "type",
        "query_id",
        "requester",
        "uscc",
        "purpose",
        "consent_id",
        "chains",
        "model_id",
        "key_fingerprint",
        "time",
    }

    @classmethod
    def checked(cls, body: Any) -> dict[str, Any]:
        doc = _fields(body, cls._FIELDS, "query")
        _text(doc, "query_id", _REQUEST_ID, "32 lowercase hex digits")
        _text(doc, "requester", _ID, "a participant id")
        _text(doc, "uscc", _USCC, "an 18-character USCC")
        _text(doc, "purpose", _PURPOSE, "a purpose")
        _text(doc, "consent_id", _CONSENT_ID, "a consent id")
        _list(doc, "chains", _CHAIN, len(Chain))
        _text(doc, "model_id", _ID, "a model id")
        _text(doc, "key_fingerprint", _FINGERPRINT, "a Paillier key fingerprint")
        parse_time(doc.get("time"), "time")
        return doc


def training_document(
    *,
    job_id: str,
    requester: str,
    key_fingerprint: str,
    nodes: list[str] | tuple[str, ...],
    config_sha256: str,
    time: datetime,
    purpose: str = "model_training",
) -> dict[str, Any]:
    """The document a bureau signs for one training job: its key, the nodes it uses and
    its training settings (``config_sha256``: ``TrainingConfig.digest()``)."""
    return SignedTrainingJob.checked(
        {
            "v": SignedTrainingJob.VERSION,
            "type": "training",
            "job_id": job_id,
            "requester": requester,
            "key_fingerprint": key_fingerprint,
            "nodes": sorted(set(nodes)),
            "config_sha256": config_sha256,
            "purpose": purpose,
            "time": format_time(time),
        }
    )


@dataclass(frozen=True, slots=True)
class SignedTrainingJob(_Signed):
    """A bureau's signed training job: nodes encrypt only under the key it names, and
    train only with the settings it names (by their hash).

    Version 2 added ``config_sha256``; a version 1 document (it left the settings
    unsigned) is refused with an error that says to re-sign with a current SDK.
    """

    DOMAIN: ClassVar[bytes] = b"creditshare/signed-training-job/v1\n"
    NAME: ClassVar[str] = "training job"
    VERSION: ClassVar[int] = 2
    _FIELDS: ClassVar[set[str]] = {
        "v",
        "type",
        "job_id",
        "requester",
        "key_fingerprint",
        "nodes",
        "config_sha256",
        "purpose",
        "time",
    }

    @classmethod
    def checked(cls, body: Any) -> dict[str, Any]:
        doc = _fields(body, cls._FIELDS, "training", cls.VERSION)
        _text(doc, "job_id", _REQUEST_ID, "32 lowercase hex digits")
        _text(doc, "requester", _ID, "a participant id")
        _text(doc, "key_fingerprint", _FINGERPRINT, "a Paillier key fingerprint")
        _text(doc, "config_sha256", _SHA256, "64 lowercase hex digits (SHA-256)")
        if not _list(doc, "nodes", _ID, MAX_NODES):
            raise InvalidInputError("signed request field 'nodes' must name at least one node")
        if doc.get("purpose") != "model_training":
            raise InvalidInputError("a training job's purpose must be model_training")
        parse_time(doc.get("time"), "time")
        return doc

    @property
    def job_id(self) -> str:
        return str(self.document["job_id"])

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self.document["nodes"])

    @property
    def config_sha256(self) -> str:
        return str(self.document["config_sha256"])
