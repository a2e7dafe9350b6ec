"""Risk events, raised inside the snapshot import that reveals them.

Only the latest snapshot's replaced values are kept (``previous_record``), so a change
must be seen when it is imported: the next import overwrites what it replaced, and a
later cycle could not tell two imports' changes apart. Detection therefore runs in the
snapshot's own transaction (``RecordStore.apply_snapshot(on_snapshot=...)``): the events
land with the snapshot or not at all, each numbered in its subscription's sequence.

The cost on a node nobody watches is one query over an empty table. Otherwise one join
finds the watched enterprises this snapshot added, changed or removed, with their values
before and after, and each chosen signal's rule compares them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.engine import Connection

from creditshare.departments import Department, FieldValue, SignalSpec
from creditshare.monitoring import Rule, Signal, event_id
from creditshare.node._records import PREVIOUS, RECORDS
from creditshare.node.monitoring._tables import ALERT_EVENTS, WATCHED, utc

__all__ = ["Change", "detect_events", "raised"]

log = logging.getLogger("creditshare.node")


@dataclass(frozen=True, slots=True)
class Change:
    """One watched enterprise's values before and after a snapshot (None: absent)."""

    before: Mapping[str, FieldValue] | None
    after: Mapping[str, FieldValue] | None


def _number(record: Mapping[str, FieldValue] | None, column: str) -> float | None:
    if record is None:
        return None
    value = record.get(column)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None  # stored under another schema: no comparison, no event
    return float(value)


def raised(
    spec: SignalSpec, threshold: int | None, change: Change, levels: tuple[str, ...] = ()
) -> bool:
    """Whether ``change`` raises ``spec``'s signal at ``threshold`` (its rule's meaning:
    ``monitoring.Rule``); ``levels`` are the column's, best to worst (downgrades)."""
    column = spec.column
    if spec.rule is Rule.INCREASE:
        after = _number(change.after, column)
        if after is None:
            return False
        before = 0.0 if change.before is None else _number(change.before, column)
        return before is not None and after - before >= (threshold or 1)
    if spec.rule is Rule.BECOMES_TRUE:
        after = _number(change.after, column)
        before = 0.0 if change.before is None else _number(change.before, column)
        return after == 1 and before != 1
    if spec.rule is Rule.DOWNGRADE:
        if change.before is None or change.after is None:
            return False
        old, new = change.before.get(column), change.after.get(column)
        if old not in levels or new not in levels:
            return False
        return levels.index(str(new)) - levels.index(str(old)) >= (threshold or 1)
    # Rule.DROP_PERCENT
    after = _number(change.after, column)
    before = _number(change.before, column)
    if after is None or before is None or before <= 0:
        return False
    return (before - after) * 100 >= (threshold or 1) * before


def _label(department: Department, indicator: str, record: Mapping[str, FieldValue] | None) -> str:
    """The band label ``record`` falls in for ``indicator`` ("" when absent or unreadable)."""
    if record is None:
        return ""
    spec = next(i for i in department.indicators if i.name == indicator)
    try:
        index = int(spec.derive(record))
        return spec.bands[index] if 0 <= index < len(spec.bands) else ""
    except (KeyError, TypeError, ValueError, IndexError, ArithmeticError):
        return ""


def _covers(indicators: Any, name: str) -> bool:
    return isinstance(indicators, list) and ("*" in indicators or name in indicators)


def detect_events(
    conn: Connection, department: Department, snapshot: int, imported_at: datetime
) -> int:
    """Queue the events snapshot ``snapshot`` raises for active watched subscriptions;
    how many. Runs inside the snapshot's transaction (see the module docstring)."""
    if not department.signals:
        return 0
    previous = PREVIOUS.alias("p")
    current = RECORDS.alias("r")
    rows = conn.execute(
        select(
            WATCHED.c.subscription_id,
            WATCHED.c.node_id,
            WATCHED.c.signals,
            WATCHED.c.indicators,
            WATCHED.c.next_seq,
            previous.c.data.label("before"),
            previous.c.removed,
            current.c.data.label("after"),
            current.c.batch_id,
        )
        .select_from(
            WATCHED.outerjoin(
                previous,
                and_(previous.c.uscc == WATCHED.c.uscc, previous.c.replaced_by == snapshot),
            ).outerjoin(current, current.c.uscc == WATCHED.c.uscc)
        )
        .where(
            WATCHED.c.ended_reason.is_(None),
            WATCHED.c.consent_valid_until > utc(imported_at),
            or_(previous.c.uscc.is_not(None), current.c.batch_id == snapshot),
        )
    ).all()
    if not rows:
        return 0
    specs = {s.signal: s for s in department.signals}
    fields = {f.name: f for f in department.fields}
    events: list[dict[str, Any]] = []
    seqs: list[dict[str, Any]] = []
    for row in rows:
        before = dict(row.before) if row.before is not None else None
        after = dict(row.after) if row.after is not None and not row.removed else None
        change = Change(before, after)
        seq = int(row.next_seq)
        for choice in row.signals:
            try:
                spec = specs.get(Signal(choice["type"]))
            except (KeyError, TypeError, ValueError):
                continue
            if spec is None:
                continue
            levels = fields[spec.column].levels
            if not raised(spec, choice.get("threshold"), change, levels):
                continue
            shown = bool(spec.indicator) and _covers(row.indicators, spec.indicator)
            events.append(
                {
                    "id": event_id(row.node_id, row.subscription_id, snapshot, spec.signal),
                    "subscription_id": row.subscription_id,
                    "seq": seq,
                    "signal": spec.signal.value,
                    "severity": spec.severity.value,
                    "observed_at": imported_at.date(),
                    "snapshot": snapshot,
                    "indicator": spec.indicator if shown else "",
                    "before": _label(department, spec.indicator, before) if shown else "",
                    "after": _label(department, spec.indicator, after) if shown else "",
                    "sent_cycle": None,
                }
            )
            seq += 1
        if seq != row.next_seq:
            seqs.append({"key": row.subscription_id, "seq": seq})
    if events:
        conn.execute(insert(ALERT_EVENTS), events)
        conn.execute(
            update(WATCHED)
            .where(WATCHED.c.subscription_id == bindparam("key"))
            .values(next_seq=bindparam("seq")),
            seqs,
        )
        log.info("snapshot %d raised %d monitoring event(s)", snapshot, len(events))
    return len(events)
