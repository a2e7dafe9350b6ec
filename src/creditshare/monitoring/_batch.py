"""Alert events and the fixed-size batches nodes seal to a bank each cycle.

Every cycle, every node emits exactly one sealed batch per subscription it serves,
whether or not anything happened: the batch's plaintext is padded to ``BATCH_BYTES``
and holds at most ``BATCH_EVENTS`` events, so the relay and the ledger see the same
sizes and counts either way; only the bank, opening the batch, tells real events from
padding. Events beyond ``BATCH_EVENTS`` wait for the next cycle (``more`` says so).

An event's id is stable (a hash of node, subscription, snapshot and signal), so a
batch sent again after a lost acknowledgement repeats ids the bank already holds; its
``seq`` numbers a subscription's events on one node 1, 2, 3..., so a bank notices one
that never arrived.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from creditshare._canonical import canonical_json, parse_canonical
from creditshare.errors import InvalidInputError
from creditshare.monitoring._signals import Severity, Signal

__all__ = [
    "BATCH_BYTES",
    "BATCH_EVENTS",
    "AlertBatch",
    "AlertEvent",
    "batch_info",
    "cycle_digest",
    "event_id",
    "node_digest",
]

#: Events one sealed batch holds at most.
BATCH_EVENTS = 4
#: Every batch's plaintext is exactly this long (a 4-byte length, JSON, zero padding).
BATCH_BYTES = 4096
_LABEL = 64
_ID = re.compile(r"[0-9a-f]{32}")
_NODE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def event_id(node_id: str, subscription_id: str, snapshot: int, signal: Signal) -> str:
    """Stable across resends: the same change on the same node for the same subscription."""
    material = f"creditshare/alert-event/v1\n{node_id}\n{subscription_id}\n{snapshot}\n{signal}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def batch_info(subscription_id: str, node_id: str, cycle: int) -> bytes:
    """HPKE ``info``: a sealed batch opens only as this subscription's, node's and cycle's."""
    return f"creditshare/alert-batch/v1\n{subscription_id}\n{node_id}\n{cycle}".encode()


def node_digest(subscriptions: Mapping[str, str]) -> str:
    """SHA-256 (hex) over one node's (subscription id, subscription digest) pairs."""
    pairs = sorted([sid, digest] for sid, digest in subscriptions.items())
    return hashlib.sha256(b"creditshare/cycle-node/v1\n" + canonical_json(pairs)).hexdigest()


def cycle_digest(nodes: Mapping[str, str]) -> str:
    """SHA-256 (hex) over every node's digest: the one value a cycle's ledger entry holds."""
    pairs = sorted([node, digest] for node, digest in nodes.items())
    return hashlib.sha256(b"creditshare/cycle/v1\n" + canonical_json(pairs)).hexdigest()


def _label(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > _LABEL:
        raise InvalidInputError(f"alert event {what} must be text of at most {_LABEL} characters")
    return value


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One risk event: what happened, how bad, when the department saw it, before/after.

    ``before``/``after`` are band labels of ``indicator`` (as the consent's indicators
    are banded), empty when the consent does not cover that indicator: an event never
    carries a raw value.
    """

    id: str
    seq: int
    signal: Signal
    severity: Severity
    observed_at: date
    snapshot: int
    indicator: str = ""
    before: str = ""
    after: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "type": self.signal.value,
            "severity": self.severity.value,
            "observed_at": self.observed_at.isoformat(),
            "snapshot": self.snapshot,
            "indicator": self.indicator,
            "before": self.before,
            "after": self.after,
        }

    @classmethod
    def from_json(cls, doc: Any) -> AlertEvent:
        if not isinstance(doc, dict):
            raise InvalidInputError("an alert event is a JSON object")
        try:
            if not isinstance(doc["id"], str) or not _ID.fullmatch(doc["id"]):
                raise InvalidInputError("alert event id must be 32 hex digits")
            seq, snapshot = doc["seq"], doc["snapshot"]
            if not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (seq, snapshot)
            ):
                raise InvalidInputError("alert event seq and snapshot must be positive integers")
            return cls(
                id=doc["id"],
                seq=seq,
                signal=Signal(doc["type"]),
                severity=Severity(doc["severity"]),
                observed_at=date.fromisoformat(doc["observed_at"]),
                snapshot=snapshot,
                indicator=_label(doc["indicator"], "indicator"),
                before=_label(doc["before"], "before"),
                after=_label(doc["after"], "after"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(f"alert event is malformed: {exc}") from None


@dataclass(frozen=True, slots=True)
class AlertBatch:
    """What one node says about one subscription in one cycle (opened by the bank)."""

    subscription_id: str
    node_id: str
    cycle: int
    events: tuple[AlertEvent, ...]
    #: More events are waiting on the node for the next cycle(s).
    more: bool = False

    def to_plaintext(self) -> bytes:
        """Exactly ``BATCH_BYTES``: big-endian length, canonical JSON, zeros."""
        if len(self.events) > BATCH_EVENTS:
            raise InvalidInputError(f"a batch holds at most {BATCH_EVENTS} events")
        body = canonical_json(
            {
                "v": 1,
                "subscription": self.subscription_id,
                "node": self.node_id,
                "cycle": self.cycle,
                "events": [e.to_json() for e in self.events],
                "more": self.more,
            }
        )
        if len(body) + 4 > BATCH_BYTES:  # unreachable while labels stay bounded
            raise InvalidInputError(f"batch is over {BATCH_BYTES} bytes")
        return struct.pack(">I", len(body)) + body + bytes(BATCH_BYTES - 4 - len(body))

    @classmethod
    def from_plaintext(cls, data: bytes) -> AlertBatch:
        if len(data) != BATCH_BYTES:
            raise InvalidInputError(f"a batch's plaintext is {BATCH_BYTES} bytes")
        (length,) = struct.unpack(">I", data[:4])
        if length > BATCH_BYTES - 4 or any(data[4 + length :]):
            raise InvalidInputError("batch padding is malformed")
        try:
            doc = parse_canonical(data[4 : 4 + length])
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"batch is not canonical JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise InvalidInputError("batch is not a version 1 batch")
        events = doc.get("events")
        if not isinstance(events, list) or len(events) > BATCH_EVENTS:
            raise InvalidInputError(f"batch events must be a list of at most {BATCH_EVENTS}")
        sid, node, cycle = doc.get("subscription"), doc.get("node"), doc.get("cycle")
        if not (isinstance(sid, str) and _ID.fullmatch(sid)):
            raise InvalidInputError("batch subscription id is malformed")
        if not (isinstance(node, str) and _NODE.fullmatch(node)):
            raise InvalidInputError("batch node id is malformed")
        if not isinstance(cycle, int) or isinstance(cycle, bool) or cycle <= 0:
            raise InvalidInputError("batch cycle must be a positive integer")
        return cls(
            sid,
            node,
            cycle,
            tuple(AlertEvent.from_json(e) for e in events),
            doc.get("more") is True,
        )
