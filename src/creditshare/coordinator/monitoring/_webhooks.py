"""Webhooks: a bank's endpoint, signed calls (Standard Webhooks), retries with backoff.

Each stored batch of alerts for a bank with a webhook becomes delivery rows (at most
``_PER_CALL`` alerts each) in the same transaction as the alerts, so a delivery is never
lost between storing and sending, and survives a restart. The dispatcher claims a due
row with a conditional UPDATE (a lease), so two replicas never send the same attempt;
a call that fails is tried again after ``initial * 2**(attempts-1)`` seconds (capped),
and is marked failed after ``webhook_max_attempts`` (its alerts stay in GET /v1/alerts).
The receiver deduplicates by ``webhook-id`` (stable across attempts) and event ids.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete, insert, update
from sqlalchemy import select as core_select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from creditshare._canonical import canonical_json, format_time
from creditshare.coordinator.monitoring._destinations import Network, check_destination
from creditshare.coordinator.monitoring._tables import WebhookDeliveryRow, WebhookRow
from creditshare.errors import InvalidInputError, NotFoundError

__all__ = [
    "WebhookDispatcher",
    "WebhookStore",
    "add_deliveries",
    "check_url",
    "hooked_banks",
    "new_secret",
    "prune_deliveries",
    "signature",
]

log = logging.getLogger("creditshare.coordinator")

_PER_CALL = 100
_MAX_URL = 2000
_ROUND = 50
_WEBHOOK: Any = WebhookRow.__table__  # type: ignore[attr-defined]
_DELIVERY: Any = WebhookDeliveryRow.__table__  # type: ignore[attr-defined]
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: ``v1,`` + base64 HMAC-SHA256 over ``id.timestamp.body`` keyed
    with the secret's bytes (the base64 after ``whsec_``)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def check_url(url: str) -> str:
    """An http(s) URL with a host and no credentials in it."""
    if len(url) > _MAX_URL:
        raise InvalidInputError(f"webhook url is over {_MAX_URL} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise InvalidInputError(f"webhook url is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInputError("webhook url must be http:// or https://")
    if not parts.hostname:
        raise InvalidInputError("webhook url names no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInputError("webhook url must not carry credentials (use the signature)")
    if parts.fragment:
        raise InvalidInputError("webhook url must not have a fragment")
    return url


def hooked_banks(conn: Connection, banks: Collection[str]) -> set[str]:
    """Which of ``banks`` have a webhook (in the caller's transaction)."""
    if not banks:
        return set()
    query = core_select(_WEBHOOK.c.bank).where(_WEBHOOK.c.bank.in_(sorted(banks)))
    return {r[0] for r in conn.execute(query)}


def add_deliveries(
    conn: Connection, by_bank: Mapping[str, Sequence[dict[str, Any]]], now: datetime
) -> None:
    """Delivery rows (at most ``_PER_CALL`` alerts each) for banks with a webhook, in
    the caller's transaction."""
    rows = []
    for bank in sorted(by_bank):
        alerts = list(by_bank[bank])
        for start in range(0, len(alerts), _PER_CALL):
            payload = {
                "type": "alerts.batch",
                "timestamp": format_time(now),
                "data": {"alerts": alerts[start : start + _PER_CALL]},
            }
            rows.append(
                {
                    "bank": bank,
                    "webhook_id": f"msg_{uuid.uuid4().hex}",
                    "payload": payload,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "status": PENDING,
                    "last_error": "",
                    "created_at": now,
                }
            )
    if rows:
        conn.execute(insert(_DELIVERY), rows)


def prune_deliveries(conn: Connection, cutoff: datetime) -> int:
    """Delete webhook calls made before ``cutoff`` (in the caller's transaction): each
    carries copies of its alerts, which go at the end of the retention period too;
    how many. (By then every call has long been delivered or failed.)"""
    return int(conn.execute(delete(_DELIVERY).where(_DELIVERY.c.created_at < cutoff)).rowcount)


class WebhookStore:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        allowed: Sequence[Network] = (),
    ) -> None:
        self._engine = engine
        self._clock = clock
        #: Non-global networks webhooks may point into (see ``_destinations``).
        self.allowed = tuple(allowed)

    def put(self, bank: str, url: str) -> tuple[str, str]:
        """Set the bank's webhook (a new secret each time); the url and the secret."""
        check_url(url)
        check_destination(url, self.allowed)
        secret = new_secret()
        with self._engine.begin() as conn:
            conn.execute(delete(_WEBHOOK).where(_WEBHOOK.c.bank == bank))
            conn.execute(
                insert(_WEBHOOK).values(bank=bank, url=url, secret=secret, created_at=self._clock())
            )
        return url, secret

    def get(self, bank: str) -> WebhookRow:
        with Session(self._engine) as session:
            row = session.get(WebhookRow, bank)
        if row is None:
            raise NotFoundError("no webhook is set")
        return row

    def delete(self, bank: str) -> None:
        """Remove the webhook; its calls not yet delivered are marked failed."""
        with self._engine.begin() as conn:
            gone = conn.execute(delete(_WEBHOOK).where(_WEBHOOK.c.bank == bank))
            if gone.rowcount == 0:
                raise NotFoundError("no webhook is set")
            conn.execute(
                update(_DELIVERY)
                .where(_DELIVERY.c.bank == bank, _DELIVERY.c.status == PENDING)
                .values(status=FAILED, last_error="the webhook was removed")
            )

    def deliveries(self, bank: str, limit: int) -> list[WebhookDeliveryRow]:
        with Session(self._engine) as session:
            return list(
                session.exec(
                    select(WebhookDeliveryRow)
                    .where(WebhookDeliveryRow.bank == bank)
                    .order_by(col(WebhookDeliveryRow.id).desc())
                    .limit(limit)
                )
            )

    def claim(self, lease: timedelta) -> list[tuple[WebhookDeliveryRow, WebhookRow]]:
        """Due deliveries, each leased to this process (its next attempt moved past the
        lease, conditionally: a replica that got there first keeps it)."""
        now = self._clock()
        claimed = []
        with Session(self._engine) as session:
            due = list(
                session.exec(
                    select(WebhookDeliveryRow)
                    .where(
                        WebhookDeliveryRow.status == PENDING,
                        col(WebhookDeliveryRow.next_attempt_at) <= now,
                    )
                    .order_by(col(WebhookDeliveryRow.next_attempt_at))
                    .limit(_ROUND)
                )
            )
            hooks = {
                h.bank: h
                for h in session.exec(
                    select(WebhookRow).where(col(WebhookRow.bank).in_({d.bank for d in due}))
                )
            }
        with self._engine.begin() as conn:
            for row in due:
                won = conn.execute(
                    update(_DELIVERY)
                    .where(
                        _DELIVERY.c.id == row.id,
                        _DELIVERY.c.status == PENDING,
                        _DELIVERY.c.next_attempt_at == row.next_attempt_at,
                    )
                    .values(next_attempt_at=now + lease)
                )
                if won.rowcount == 1 and row.bank in hooks:
                    claimed.append((row, hooks[row.bank]))
        return claimed

    def settle(
        self, row_id: int, attempts: int, error: str | None, retry_at: datetime | None
    ) -> None:
        """Record an attempt: delivered (``error`` None), retried at ``retry_at``, or failed."""
        if error is None:
            values: dict[str, Any] = {"status": DELIVERED, "attempts": attempts, "last_error": ""}
        elif retry_at is None:
            values = {"status": FAILED, "attempts": attempts, "last_error": error[:300]}
        else:
            values = {"attempts": attempts, "last_error": error[:300], "next_attempt_at": retry_at}
        with self._engine.begin() as conn:
            conn.execute(update(_DELIVERY).where(_DELIVERY.c.id == row_id).values(**values))


class WebhookDispatcher:
    """Sends due deliveries; woken when alerts are stored, else every ``poll`` seconds."""

    def __init__(
        self,
        store: WebhookStore,
        clock: Callable[[], datetime],
        *,
        max_attempts: int,
        initial_backoff: float,
        max_backoff: float,
        timeout: float,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_attempts = max_attempts
        self._initial = initial_backoff
        self._max_backoff = max_backoff
        self._timeout = timeout

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones."""
        return float(min(self._initial * 2 ** (attempts - 1), self._max_backoff))

    async def _send(
        self, client: httpx.AsyncClient, row: WebhookDeliveryRow, hook: WebhookRow
    ) -> None:
        body = canonical_json(row.payload)
        timestamp = int(self._clock().timestamp())
        headers = {
            "content-type": "application/json",
            "webhook-id": row.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(hook.secret, row.webhook_id, timestamp, body),
        }
        error: str | None
        try:
            # Checked again before each call: the host may resolve elsewhere by now.
            await asyncio.to_thread(check_destination, hook.url, self._store.allowed)
            response = await client.post(hook.url, content=body, headers=headers)
            error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        except InvalidInputError as exc:  # the destination is (now) one we do not call
            error = str(exc)[:300]
        attempts = row.attempts + 1
        retry_at = None
        if error is not None and attempts < self._max_attempts:
            retry_at = self._clock() + timedelta(seconds=self.backoff(attempts))
        if error is not None:
            log.info("webhook call %s attempt %d failed: %s", row.webhook_id, attempts, error)
        await asyncio.to_thread(self._store.settle, row.id or 0, attempts, error, retry_at)

    async def round(self) -> int:
        """Send every due delivery once; how many were attempted."""
        lease = timedelta(seconds=self._timeout + 30)
        due = await asyncio.to_thread(self._store.claim, lease)
        if due:
            async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
                await asyncio.gather(*(self._send(client, row, hook) for row, hook in due))
        return len(due)

    async def run(self, wake: Callable[[float], Any], poll: float) -> None:
        """Rounds until cancelled: after each, wait for ``wake`` (alerts stored) or ``poll``."""
        while True:
            try:
                if await self.round():
                    continue
            except Exception:
                log.exception("webhook round failed")
            await wake(poll)
