"""Stored sealed batches ("alerts"): a node's answer stored with its acknowledgement,
read back by banks in cursor order, pruned after ``alert_retention_days``.

A cursor is the alert's integer id. Cycles store their answers one node at a time (the
DB guard lets one cycle run at once, and ``store_answer`` is called in turn), so ids are
committed in increasing order and a reader paging by cursor never skips a row that
commits later with a smaller id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, update
from sqlalchemy import select as core_select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from creditshare._canonical import format_time
from creditshare.coordinator._settings import NodeEntry
from creditshare.coordinator.monitoring._tables import AlertPruneRow, AlertRow, NodeAckRow
from creditshare.coordinator.monitoring._webhooks import (
    add_deliveries,
    hooked_banks,
    prune_deliveries,
)
from creditshare.errors import GoneError, NotFoundError

__all__ = ["SCORE_KIND", "AlertHub", "AlertStore", "alert_json"]

#: An alert row holding a subscription's encrypted score rather than a sealed batch.
SCORE_KIND = "score"

_CURSOR = re.compile(r"[1-9][0-9]{0,17}")
_ALERT: Any = AlertRow.__table__  # type: ignore[attr-defined]
_ACK: Any = NodeAckRow.__table__  # type: ignore[attr-defined]
_PRUNED: Any = AlertPruneRow.__table__  # type: ignore[attr-defined]


def alert_json(row: AlertRow) -> dict[str, Any]:
    """An alert as GET /v1/alerts, the stream and webhooks show it."""
    base: dict[str, Any] = {
        "cursor": str(row.cursor),
        "kind": row.kind,
        "subscription_id": row.subscription_id,
        "node": row.node,
        "chain": row.chain,
        "department": row.department,
        "cycle": row.cycle,
        "stored_at": format_time(row.stored_at),
    }
    if row.kind == SCORE_KIND:
        detail = row.detail or {}
        return base | {
            "sealed": "",
            "encrypted_score": base64.b64encode(row.sealed).decode("ascii"),
            "scale": detail.get("scale"),
            "model_id": detail.get("model_id"),
            "score_scale": detail.get("score_scale"),
            "threshold": detail.get("threshold"),
        }
    return base | {
        "sealed": base64.b64encode(row.sealed).decode("ascii"),
        "encrypted_score": None,
        "scale": None,
        "model_id": None,
        "score_scale": None,
        "threshold": None,
    }


class AlertHub:
    """Wakes this process's streams (and the webhook dispatcher) when alerts are stored;
    other replicas' alerts are found by their periodic poll."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, seconds: float) -> None:
        """Until the next ``notify`` or ``seconds``, whichever comes first."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()


class AlertStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def acknowledged(self) -> dict[str, int]:
        """Per node, the newest cycle whose answer is stored."""
        with Session(self._engine) as session:
            return {r.node_id: r.acknowledged_cycle for r in session.exec(select(NodeAckRow))}

    def store_answer(
        self,
        node: NodeEntry,
        cycle: int,
        batches: Sequence[tuple[str, bytes]],
        banks: Mapping[str, str],
        now: datetime,
    ) -> int:
        """One node's batches as alerts, its acknowledged cycle, and the webhook calls
        of their banks, in ONE transaction (an acknowledged batch is a stored one);
        how many were stored."""
        rows: list[dict[str, Any]] = [
            {
                "bank": banks[subscription_id],
                "subscription_id": subscription_id,
                "node": node.id,
                "chain": node.chain,
                "department": node.department,
                "cycle": cycle,
                "sealed": sealed,
                "stored_at": now,
                "kind": "batch",
                "detail": None,
            }
            for subscription_id, sealed in batches
        ]
        with self._engine.begin() as conn:
            self._insert(conn, rows, now)
            self._acknowledge(conn, node.id, cycle)
        return len(rows)

    def store_scores(
        self, cycle: int, scores: Sequence[tuple[str, str, bytes, dict[str, Any]]], now: datetime
    ) -> int:
        """Each (bank, subscription, Enc(score), detail) as a score alert, one transaction."""
        rows: list[dict[str, Any]] = [
            {
                "bank": bank,
                "subscription_id": subscription_id,
                "node": "",
                "chain": "",
                "department": "",
                "cycle": cycle,
                "sealed": ciphertext,
                "stored_at": now,
                "kind": SCORE_KIND,
                "detail": detail,
            }
            for bank, subscription_id, ciphertext, detail in scores
        ]
        with self._engine.begin() as conn:
            self._insert(conn, rows, now)
        return len(rows)

    @staticmethod
    def _insert(conn: Connection, rows: list[dict[str, Any]], now: datetime) -> None:
        """Insert alert ``rows`` and the webhook calls of their banks."""
        cursors: list[int] = []
        if rows:
            # One multi-row INSERT ... RETURNING, cursors in the order of the rows.
            cursors = list(
                conn.execute(
                    insert(_ALERT).returning(_ALERT.c.cursor, sort_by_parameter_order=True),
                    rows,
                ).scalars()
            )
        hooked = hooked_banks(conn, {r["bank"] for r in rows})
        by_bank: dict[str, list[dict[str, Any]]] = {}
        for cursor, row in zip(cursors, rows, strict=True):
            if row["bank"] in hooked:
                alert = alert_json(AlertRow(cursor=cursor, **row))
                by_bank.setdefault(row["bank"], []).append(alert)
        add_deliveries(conn, by_bank, now)

    @staticmethod
    def _acknowledge(conn: Connection, node_id: str, cycle: int) -> None:
        done = conn.execute(
            update(_ACK).where(_ACK.c.node_id == node_id).values(acknowledged_cycle=cycle)
        )
        if done.rowcount == 0:
            conn.execute(insert(_ACK).values(node_id=node_id, acknowledged_cycle=cycle))

    def _start(self, conn: Connection, bank: str, after: str | None) -> int:
        """The cursor to read after: 404 for one this bank was never given, 410 if pruned."""
        if after is None or after == "0":
            return 0
        unknown = NotFoundError(f"cursor {after[:24]!r} does not exist")
        if not _CURSOR.fullmatch(after):
            raise unknown
        cursor = int(after)
        owner = conn.execute(core_select(_ALERT.c.bank).where(_ALERT.c.cursor == cursor)).first()
        if owner is not None:
            if owner[0] != bank:
                raise unknown
            return cursor
        pruned = conn.execute(
            core_select(_PRUNED.c.pruned_through).where(_PRUNED.c.bank == bank)
        ).first()
        if pruned is not None and cursor <= pruned[0]:
            raise GoneError(
                f"cursor {after} points at alerts deleted after the retention period; "
                "start again without a cursor"
            )
        raise unknown

    def start(self, bank: str, after: str | None) -> int:
        """``after`` checked: 404 for a cursor this bank was never given, 410 if pruned."""
        with self._engine.connect() as conn:
            return self._start(conn, bank, after)

    def read(self, bank: str, start: int, limit: int) -> list[dict[str, Any]]:
        """The bank's alerts after cursor ``start``, oldest first."""
        with Session(self._engine) as session:
            rows = session.exec(
                select(AlertRow)
                .where(AlertRow.bank == bank, col(AlertRow.cursor) > start)
                .order_by(col(AlertRow.cursor))
                .limit(limit)
            )
            return [alert_json(r) for r in rows]

    def page(self, bank: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str]:
        """The bank's alerts after ``after`` (oldest first), and the cursor to go on from."""
        start = self.start(bank, after)
        alerts = self.read(bank, start, limit)
        return alerts, alerts[-1]["cursor"] if alerts else str(start)

    def prune(self, now: datetime, days: int) -> int:
        """Delete alerts older than ``days``, and the webhook calls that carried copies of
        them; remember how far each bank's were deleted."""
        cutoff = now - timedelta(days=days)
        with self._engine.begin() as conn:
            rows = conn.execute(
                core_select(_ALERT.c.bank, func.max(_ALERT.c.cursor))
                .where(_ALERT.c.stored_at < cutoff)
                .group_by(_ALERT.c.bank)
            ).all()
            for bank, through in rows:
                done = conn.execute(
                    update(_PRUNED)
                    .where(_PRUNED.c.bank == bank, _PRUNED.c.pruned_through < through)
                    .values(pruned_through=through)
                )
                known = conn.execute(
                    core_select(_PRUNED.c.bank).where(_PRUNED.c.bank == bank)
                ).first()
                if done.rowcount == 0 and known is None:
                    conn.execute(insert(_PRUNED).values(bank=bank, pruned_through=through))
            deleted = conn.execute(delete(_ALERT).where(_ALERT.c.stored_at < cutoff))
            prune_deliveries(conn, cutoff)
        return int(deleted.rowcount)
