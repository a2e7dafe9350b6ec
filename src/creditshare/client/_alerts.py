"""Opening the alerts a coordinator stores for a bank: decrypt, drop padding, deduplicate.

The coordinator keeps one sealed batch per subscription, node and cycle, of one fixed
size whether or not anything happened; only the bank's alert key opens it, and only
under the subscription, node and cycle it is listed with (HPKE ``info``). A batch that
does not open, or opens and names another subscription, node or cycle, is an error
naming its cursor: skipping it could lose an event, and it means the relay moved or
altered something.

Delivery is at least once: a node sends an event again until the coordinator stored
its answer, so the same event id can appear in several batches. ``AlertInbox``
remembers the ids it handed out and the cursor it reached (in a JSON file, replaced
atomically), so a restarted client resumes where it stopped without repeats, and it
watches each subscription's per-node ``seq`` so an event that never arrived shows up
as a gap instead of going unnoticed.

Rows of kind "score" (score_change) carry no sealed batch but the enterprise's score in
that cycle, encrypted under the bank's Paillier key (``_scores``): the inbox keeps each
subscription's last score, and a move of at least the subscription's threshold is an
alert like any event (id from the subscription and cycle, so deduplicated the same way).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from creditshare.client._scores import SCORE_INDICATOR, score_points
from creditshare.crypto import AlertPrivateKey, PrivateKey, SealedOpenError
from creditshare.errors import AlertBatchError, ClientError, InvalidInputError
from creditshare.monitoring import (
    SIGNAL_RULES,
    AlertBatch,
    AlertEvent,
    Severity,
    Signal,
    batch_info,
    event_id,
)

__all__ = ["Alert", "AlertInbox", "Gap", "StoredAlert", "open_alert", "read_alerts"]

#: Event ids an inbox remembers (oldest forgotten first): resends come within a few
#: cycles of the first send, far inside this window.
MAX_SEEN = 100_000


def _integer(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} is not an integer")
    return value


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """One row of ``GET /v1/alerts``: a sealed batch and where it says it came from, or
    (``kind`` "score") a subscription's encrypted score in one cycle."""

    cursor: str
    subscription_id: str
    node: str
    chain: str
    department: str
    cycle: int
    stored_at: str
    sealed: bytes
    kind: str = "batch"
    #: Score rows: the Paillier ciphertext (base64), its fixed-point scale, the model,
    #: its published score scale and the subscription's threshold in points.
    encrypted_score: str | None = None
    scale: int | None = None
    model_id: str = ""
    score_scale: dict[str, Any] | None = None
    threshold: int | None = None

    @classmethod
    def from_json(cls, doc: Any) -> StoredAlert:
        cursor = str(doc.get("cursor")) if isinstance(doc, dict) else "?"
        try:
            if not isinstance(doc, dict):
                raise TypeError("not a JSON object")
            cycle = _integer(doc, "cycle")
            kind = doc.get("kind", "batch")
            if kind == "score":
                score_scale = doc.get("score_scale")
                if not isinstance(score_scale, dict) or not isinstance(
                    doc.get("encrypted_score"), str
                ):
                    raise TypeError("a score row needs encrypted_score and score_scale")
                return cls(
                    cursor=str(doc["cursor"]),
                    subscription_id=str(doc["subscription_id"]),
                    node="",
                    chain="",
                    department="",
                    cycle=cycle,
                    stored_at=str(doc.get("stored_at", "")),
                    sealed=b"",
                    kind="score",
                    encrypted_score=str(doc["encrypted_score"]),
                    scale=_integer(doc, "scale"),
                    model_id=str(doc.get("model_id", "")),
                    score_scale=score_scale,
                    threshold=_integer(doc, "threshold"),
                )
            if kind != "batch":
                raise TypeError(f"unknown kind {str(kind)[:20]!r}")
            return cls(
                cursor=str(doc["cursor"]),
                subscription_id=str(doc["subscription_id"]),
                node=str(doc["node"]),
                chain=str(doc.get("chain", "")),
                department=str(doc.get("department", "")),
                cycle=cycle,
                stored_at=str(doc.get("stored_at", "")),
                sealed=base64.b64decode(str(doc["sealed"]), validate=True),
            )
        except (KeyError, TypeError, binascii.Error) as exc:
            raise AlertBatchError(
                cursor, f"the coordinator sent a malformed alert: {exc}"
            ) from None


@dataclass(frozen=True, slots=True)
class Alert:
    """One risk event, opened: what happened to which enterprise, and where it came from."""

    id: str
    seq: int
    signal: Signal
    severity: Severity
    observed_at: date
    snapshot: int
    indicator: str
    before: str
    after: str
    subscription_id: str
    uscc: str
    node: str
    chain: str
    department: str
    cycle: int
    cursor: str
    #: When the coordinator stored the batch (ISO 8601, as it sent it).
    stored_at: str

    @classmethod
    def of(cls, event: AlertEvent, stored: StoredAlert, uscc: str) -> Alert:
        return cls(
            id=event.id,
            seq=event.seq,
            signal=event.signal,
            severity=event.severity,
            observed_at=event.observed_at,
            snapshot=event.snapshot,
            indicator=event.indicator,
            before=event.before,
            after=event.after,
            subscription_id=stored.subscription_id,
            uscc=uscc,
            node=stored.node,
            chain=stored.chain,
            department=stored.department,
            cycle=stored.cycle,
            cursor=stored.cursor,
            stored_at=stored.stored_at,
        )

    @classmethod
    def of_score(cls, stored: StoredAlert, uscc: str, before: int, after: int) -> Alert:
        """The score_change alert for a score that moved from ``before`` to ``after``."""
        signal = Signal.SCORE_CHANGE
        try:
            observed = datetime.fromisoformat(stored.stored_at).date()
        except ValueError:
            raise AlertBatchError(
                stored.cursor, f"stored_at {stored.stored_at[:40]!r} is not an ISO time"
            ) from None
        # A score row names no node (the score is every node's share): stored.node is "".
        event = AlertEvent(
            id=event_id("coordinator", stored.subscription_id, stored.cycle, signal),
            seq=stored.cycle,
            signal=signal,
            severity=SIGNAL_RULES[signal].severity,
            observed_at=observed,
            snapshot=stored.cycle,
            indicator=SCORE_INDICATOR,
            before=str(before),
            after=str(after),
        )
        return cls.of(event, stored, uscc)

    def event(self) -> AlertEvent:
        """What the node (or, for a score, the bank) raised, without where it came from."""
        return AlertEvent(
            id=self.id,
            seq=self.seq,
            signal=self.signal,
            severity=self.severity,
            observed_at=self.observed_at,
            snapshot=self.snapshot,
            indicator=self.indicator,
            before=self.before,
            after=self.after,
        )

    def to_json(self) -> dict[str, Any]:
        return self.event().to_json() | {
            "subscription_id": self.subscription_id,
            "uscc": self.uscc,
            "node": self.node,
            "chain": self.chain,
            "department": self.department,
            "cycle": self.cycle,
            "cursor": self.cursor,
            "stored_at": self.stored_at,
        }


def open_alert(stored: StoredAlert, key: AlertPrivateKey) -> AlertBatch:
    """The batch inside ``stored``, which must open under the subscription, node and cycle
    it is listed with and name exactly those; AlertBatchError (naming the cursor) if not."""
    info = batch_info(stored.subscription_id, stored.node, stored.cycle)
    try:
        batch = AlertBatch.from_plaintext(key.open(stored.sealed, info))
    except SealedOpenError:
        raise AlertBatchError(
            stored.cursor,
            f"the batch of subscription {stored.subscription_id}, node {stored.node}, cycle "
            f"{stored.cycle} does not open with this alert key (altered, moved from another "
            "subscription, node or cycle, or sealed to another key)",
        ) from None
    except InvalidInputError as exc:
        raise AlertBatchError(stored.cursor, f"the batch opened but is malformed: {exc}") from None
    claimed = (stored.subscription_id, stored.node, stored.cycle)
    inside = (batch.subscription_id, batch.node_id, batch.cycle)
    if inside != claimed:
        raise AlertBatchError(
            stored.cursor,
            f"the batch listed as subscription {claimed[0]}, node {claimed[1]}, cycle "
            f"{claimed[2]} says it is subscription {inside[0]}, node {inside[1]}, cycle "
            f"{inside[2]}",
        )
    return batch


@dataclass(frozen=True, slots=True)
class Gap:
    """Events ``first``..``last`` (by seq) of a subscription on one node never arrived."""

    subscription_id: str
    node: str
    first: int
    last: int

    def __str__(self) -> str:
        seqs = str(self.first) if self.first == self.last else f"{self.first}..{self.last}"
        return f"subscription {self.subscription_id} on {self.node}: events {seqs} missing"


class AlertInbox:
    """What a bank has read: the cursor reached, the event ids handed out, and each
    subscription's highest seq per node (with the seqs skipped on the way: ``gaps``).

    With a ``path`` it is kept in that JSON file (written to a temp file and renamed
    over it, so a crash leaves the old or the new state, never half of one); without
    one, in memory only (dedup within one run).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.cursor: str | None = None
        #: Reading began at the very first alert: a subscription's first event seen
        #: should then be seq 1. Otherwise the first one seen is where counting starts.
        self.from_start = False
        self._seen: OrderedDict[str, None] = OrderedDict()
        #: (subscription, node) -> highest seq seen.
        self._high: dict[tuple[str, str], int] = {}
        #: (subscription, node) -> missing seq ranges [first, last].
        self._missing: dict[tuple[str, str], list[list[int]]] = {}
        #: subscription -> (cycle, score points) of its last score read (score_change).
        self._scores: dict[str, tuple[int, int]] = {}
        #: Changed since the last save.
        self.dirty = False
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            cursor = doc["cursor"]
            self.cursor = None if cursor is None else str(cursor)
            self.from_start = doc.get("from_start") is True
            self._seen = OrderedDict((str(i), None) for i in doc["seen"])
            for item in doc["subscriptions"]:
                key = (str(item["subscription_id"]), str(item["node"]))
                self._high[key] = int(item["high"])
                missing = [[int(a), int(b)] for a, b in item["missing"]]
                if missing:
                    self._missing[key] = missing
            for item in doc.get("scores", []):
                self._scores[str(item["subscription_id"])] = (
                    int(item["cycle"]),
                    int(item["score"]),
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ClientError(f"{path} is not an alert inbox file: {exc}") from None

    def seen(self, event_id: str) -> bool:
        return event_id in self._seen

    @property
    def gaps(self) -> tuple[Gap, ...]:
        """Seqs skipped: events a node numbered but this client never received."""
        return tuple(
            Gap(sub, node, first, last)
            for (sub, node), ranges in sorted(self._missing.items())
            for first, last in ranges
        )

    def last_score(self, subscription_id: str) -> tuple[int, int] | None:
        """(cycle, points) of the subscription's last score read; None before the first."""
        return self._scores.get(subscription_id)

    def keep_score(self, subscription_id: str, cycle: int, points: int) -> None:
        """The score read for ``cycle``: the next cycle's is compared with it."""
        self._scores[subscription_id] = (cycle, points)
        self.dirty = True

    def advance(self, cursor: str) -> None:
        """Every alert up to ``cursor`` is handled: a restart resumes after it."""
        self.cursor = cursor
        self.dirty = True

    def accept(self, alert: Alert) -> bool:
        """Record ``alert`` as handled; False if its event id was handled before."""
        if alert.id in self._seen:
            return False
        self.dirty = True
        self._seen[alert.id] = None
        while len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)
        if alert.signal is Signal.SCORE_CHANGE:
            return True  # numbered by cycle, not by a node's seq: no gaps to track
        key = (alert.subscription_id, alert.node)
        known = self._high.get(key)
        high = known if known is not None else 0 if self.from_start else alert.seq - 1
        if alert.seq > high + 1:
            self._missing.setdefault(key, []).append([high + 1, alert.seq - 1])
        elif alert.seq <= high:
            self._fill(key, alert.seq)
        self._high[key] = max(high, alert.seq)
        return True

    def _fill(self, key: tuple[str, str], seq: int) -> None:
        """A late event fills (part of) a gap."""
        ranges = []
        for first, last in self._missing.get(key, []):
            if first <= seq <= last:
                ranges += [r for r in ([first, seq - 1], [seq + 1, last]) if r[0] <= r[1]]
            else:
                ranges.append([first, last])
        if ranges:
            self._missing[key] = ranges
        else:
            self._missing.pop(key, None)

    def to_json(self) -> dict[str, Any]:
        keys = sorted(set(self._high) | set(self._missing))
        return {
            "v": 1,
            "cursor": self.cursor,
            "from_start": self.from_start,
            "seen": list(self._seen),
            "subscriptions": [
                {
                    "subscription_id": sub,
                    "node": node,
                    "high": self._high.get((sub, node), 0),
                    "missing": self._missing.get((sub, node), []),
                }
                for sub, node in keys
            ],
            "scores": [
                {"subscription_id": sub, "cycle": cycle, "score": points}
                for sub, (cycle, points) in sorted(self._scores.items())
            ],
        }

    def save(self) -> None:
        if self.path is None:
            self.dirty = False
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.to_json(), handle)
            os.replace(tmp, self.path)
            self.dirty = False
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def read_alerts(
    rows: Iterable[StoredAlert],
    key: AlertPrivateKey,
    inbox: AlertInbox,
    uscc_of: Callable[[str], str],
    advance: bool = True,
    paillier_key: Callable[[], PrivateKey | None] = lambda: None,
) -> Generator[Alert, None, None]:
    """Open each stored alert in order and yield the events ``inbox`` has not seen.

    An event counts as handled when the caller asks for the next one, or calls
    ``inbox.accept(alert)`` itself (before it stops early): one it was still handling
    when it failed is handed out again after a restart (at least once). The cursor moves
    past a row once all its events were handled; the inbox is saved after each row that
    held new events and when reading stops, however it stops. ``advance=False`` leaves
    the cursor alone (rows that came another way than in cursor order: webhook calls).
    Score rows are decrypted with ``paillier_key()`` (AlertBatchError naming the cursor
    when there is none).
    """
    try:
        for stored in rows:
            if stored.kind == "score":
                alert = _score_change(stored, paillier_key(), inbox, uscc_of)
                if alert is not None:
                    yield alert
                    inbox.accept(alert)
                    inbox.keep_score(stored.subscription_id, stored.cycle, int(alert.after))
                if advance:
                    inbox.advance(stored.cursor)
                if alert is not None:
                    inbox.save()
                continue
            batch = open_alert(stored, key)
            fresh = [e for e in batch.events if not inbox.seen(e.id)]
            if fresh:
                uscc = uscc_of(stored.subscription_id)
            for event in fresh:
                alert = Alert.of(event, stored, uscc)
                yield alert
                inbox.accept(alert)
            if advance:
                inbox.advance(stored.cursor)
            if fresh:
                inbox.save()
    finally:
        if inbox.dirty:
            inbox.save()


def _score_change(
    stored: StoredAlert,
    key: PrivateKey | None,
    inbox: AlertInbox,
    uscc_of: Callable[[str], str],
) -> Alert | None:
    """The alert a score row raises, if any (the caller keeps its score once handled).

    The first score of a subscription is its baseline; a score of a cycle no later than
    the last one read is a resend, or came late (webhook calls may come out of order), and
    raises nothing; otherwise it is compared with the last one read.
    """
    points = score_points(stored, key)
    last = inbox.last_score(stored.subscription_id)
    if last is not None and stored.cycle <= last[0]:
        return None
    threshold = stored.threshold
    bounds = SIGNAL_RULES[Signal.SCORE_CHANGE].threshold
    if threshold is None or bounds is None or not bounds[0] <= threshold <= bounds[1]:
        raise AlertBatchError(stored.cursor, f"threshold {threshold} is out of range")
    if last is not None and abs(points - last[1]) >= threshold:
        alert = Alert.of_score(stored, uscc_of(stored.subscription_id), last[1], points)
        if not inbox.seen(alert.id):
            return alert
    inbox.keep_score(stored.subscription_id, stored.cycle, points)
    return None
