"""The records the query ledger holds, and how a data node reads them back.

A leaf is the canonical JSON of one record. The coordinator writes it before any
node is asked; the node parses the very bytes whose inclusion it verified and
answers only a query that matches them (enterprise, model, key, chain, query id,
indicators in the consent's scope).

A ``statistics`` record is a regulator's cohort query: requester and requester_role
``regulator``, purpose ``statistics``, no enterprise, consent or model, and ``request``
the signed ``CohortQuery`` (its ε is there for anyone auditing the ledger to add up).

Queries, training jobs and cohort queries also carry what their requester signed (``request``) and,
for queries, the enterprise's signed consent (``consent``), verbatim: the node checks
those signatures against the signers' certified keys, so the record's other fields
are believed only where the signed statements say the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from creditshare._canonical import canonical_json, format_time, parse_canonical, parse_time
from creditshare.errors import InvalidInputError

__all__ = ["MAX_REASON", "MAX_RECORD_BYTES", "RECORD_KINDS", "QueryRecord", "parse_record"]

RecordKind = Literal[
    "query",
    "refusal",
    "training",
    "subscription",
    "subscription_end",
    "monitoring_cycle",
    "statistics",
]
#: Every kind a leaf may have (a node refuses a leaf of another kind).
RECORD_KINDS: tuple[str, ...] = (
    "query",
    "refusal",
    "training",
    "subscription",
    "subscription_end",
    "monitoring_cycle",
    "statistics",
)
#: Kinds whose record says why (``reason``).
_REASONED = ("refusal", "subscription_end")

#: No leaf is larger than this, whatever a request held: every field below is bounded,
#: and the bounds add up to well under it. Nodes refuse a leaf that is larger.
MAX_RECORD_BYTES = 8192
#: Characters of a refusal's reason kept in the record.
MAX_REASON = 300

#: Longest text per field (and most items per list field) a record may hold.
_TEXT_LIMITS = {
    "query_id": 64,
    "uscc": 64,
    "requester": 64,
    "requester_role": 16,
    "purpose": 32,
    "consent_id": 64,
    "model_id": 64,
    "key_fingerprint": 64,
    "reason": MAX_REASON,
}
_LIST_LIMITS = {"chains": (8, 8), "indicators": (33, 48)}  # (items, characters each)


@dataclass(frozen=True, slots=True)
class QueryRecord:
    kind: RecordKind
    query_id: str
    time: datetime
    uscc: str
    requester: str
    requester_role: str
    purpose: str
    consent_id: str
    model_id: str
    key_fingerprint: str
    chains: tuple[str, ...]
    indicators: tuple[str, ...]
    reason: str = ""
    #: The requester's signed request, ``{document, signature}`` (queries, training).
    request: dict[str, Any] | None = None
    #: The enterprise's signed consent, ``{document, signature}`` (queries, subscriptions).
    consent: dict[str, Any] | None = None
    #: A monitoring cycle's commitment: ``{number, digest, nodes}`` (see
    #: ``monitoring.cycle_digest``); the node asked checks its own part against it.
    cycle: dict[str, Any] | None = None

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": 1,
            "kind": self.kind,
            "query_id": self.query_id,
            "time": format_time(self.time),
            "uscc": self.uscc,
            "requester": self.requester,
            "requester_role": self.requester_role,
            "purpose": self.purpose,
            "consent_id": self.consent_id,
            "model_id": self.model_id,
            "key_fingerprint": self.key_fingerprint,
            "chains": list(self.chains),
            "indicators": list(self.indicators),
        }
        if self.kind in _REASONED:
            doc["reason"] = self.reason
        if self.request is not None:
            doc["request"] = self.request
        if self.consent is not None:
            doc["consent"] = self.consent
        if self.cycle is not None:
            doc["cycle"] = self.cycle
        return doc

    def to_bytes(self) -> bytes:
        """The leaf: canonical JSON, every field within its bound (else InvalidInputError)."""
        for name, limit in _TEXT_LIMITS.items():
            if len(getattr(self, name)) > limit:
                raise InvalidInputError(f"ledger record field {name!r} is over {limit} characters")
        for name, (items, each) in _LIST_LIMITS.items():
            values = getattr(self, name)
            if len(values) > items or any(len(v) > each for v in values):
                raise InvalidInputError(
                    f"ledger record field {name!r} holds more than {items} items of at most "
                    f"{each} characters"
                )
        data = canonical_json(self.to_document())
        if len(data) > MAX_RECORD_BYTES:  # unreachable while the bounds above hold
            raise InvalidInputError(f"ledger record is over {MAX_RECORD_BYTES} bytes")
        return data

    def covers_indicator(self, name: str) -> bool:
        return "*" in self.indicators or name in self.indicators


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise InvalidInputError(f"ledger record field {key!r} must be a string")
    return value


def _strings(doc: dict[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"ledger record field {key!r} must be a list of strings")
    return tuple(value)


def parse_record(data: bytes) -> QueryRecord:
    if len(data) > MAX_RECORD_BYTES:
        raise InvalidInputError(f"ledger record is over {MAX_RECORD_BYTES} bytes")
    try:
        doc = parse_canonical(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"ledger record is not canonical JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise InvalidInputError("ledger record is not a version 1 record")
    kind = doc.get("kind")
    if kind not in RECORD_KINDS:
        raise InvalidInputError(f"ledger record kind must be one of {', '.join(RECORD_KINDS)}")
    return QueryRecord(
        kind=kind,
        query_id=_str(doc, "query_id"),
        time=parse_time(doc.get("time"), "time"),
        uscc=_str(doc, "uscc"),
        requester=_str(doc, "requester"),
        requester_role=_str(doc, "requester_role"),
        purpose=_str(doc, "purpose"),
        consent_id=_str(doc, "consent_id"),
        model_id=_str(doc, "model_id"),
        key_fingerprint=_str(doc, "key_fingerprint"),
        chains=_strings(doc, "chains"),
        indicators=_strings(doc, "indicators"),
        reason=_str(doc, "reason") if kind in _REASONED else "",
        request=_object(doc, "request"),
        consent=_object(doc, "consent"),
        cycle=_object(doc, "cycle"),
    )


def _object(doc: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, dict):
        raise InvalidInputError(f"ledger record field {key!r} must be an object")
    return value
