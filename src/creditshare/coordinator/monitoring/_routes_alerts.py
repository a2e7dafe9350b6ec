"""Banks read their sealed alerts: pages by cursor, a live stream, webhooks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from creditshare.coordinator._db import Participant
from creditshare.coordinator._deps import ServicesDep, require_roles
from creditshare.coordinator._participants import Role
from creditshare.coordinator.monitoring._schemas import (
    AlertOut,
    AlertPageOut,
    DeliveryOut,
    WebhookIn,
    WebhookOut,
)
from creditshare.errors import CreditShareError

__all__ = ["router"]

router = APIRouter(tags=["alerts"])
Bank = Annotated[Participant, Depends(require_roles(Role.BANK))]
Cursor = Annotated[str | None, Query(max_length=32, description="the last cursor read")]
#: The stream reads the database this often for alerts stored by other replicas.
_POLL_SECONDS = 2.0
_KEEP_ALIVE_SECONDS = 15.0
_STREAM_PAGE = 100


@router.get("/v1/alerts", response_model=AlertPageOut)
async def list_alerts(
    caller: Bank,
    services: ServicesDep,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertPageOut:
    """The bank's sealed batches after ``after``, oldest first (404: a cursor you were
    never given; 410: alerts deleted after the retention period)."""
    alerts, cursor = await asyncio.to_thread(
        services.monitoring.alerts.page, caller.id, after, limit
    )
    return AlertPageOut(alerts=[AlertOut(**a) for a in alerts], next_cursor=cursor)


def _event(alert: dict[str, Any]) -> str:
    data = json.dumps(alert, separators=(",", ":"))
    return f"id: {alert['cursor']}\nevent: alert\ndata: {data}\n\n"


@router.get(
    "/v1/alerts/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_alerts(
    request: Request,
    caller: Bank,
    services: ServicesDep,
    after: Cursor = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """Server-sent events: each alert as ``event: alert`` with ``id:`` its cursor, pushed
    as soon as it is stored; resumes after ``Last-Event-ID`` (or ``after``)."""
    monitoring = services.monitoring
    bank = caller.id
    start = await asyncio.to_thread(monitoring.alerts.start, bank, last_event_id or after)

    async def events() -> AsyncIterator[str]:
        cursor = start
        yield ": stream open\n\n"
        quiet_since = time.monotonic()
        while True:
            try:
                alerts = await asyncio.to_thread(monitoring.alerts.read, bank, cursor, _STREAM_PAGE)
            except CreditShareError:
                return
            for alert in alerts:
                yield _event(alert)
                cursor = int(alert["cursor"])
            if alerts:
                quiet_since = time.monotonic()
                if len(alerts) == _STREAM_PAGE:
                    continue
            elif time.monotonic() - quiet_since >= _KEEP_ALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await monitoring.hub.wait(_POLL_SECONDS)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.put("/v1/webhook", response_model=WebhookOut)
async def set_webhook(body: WebhookIn, caller: Bank, services: ServicesDep) -> WebhookOut:
    """Send this bank's alerts to ``url`` too (signed per Standard Webhooks with the
    secret shown here once; setting it again makes a new secret)."""
    webhooks = services.monitoring.webhooks
    url, secret = await asyncio.to_thread(webhooks.put, caller.id, body.url)
    row = await asyncio.to_thread(webhooks.get, caller.id)
    return WebhookOut(url=url, created_at=row.created_at, secret=secret)


@router.get("/v1/webhook", response_model=WebhookOut)
async def get_webhook(caller: Bank, services: ServicesDep) -> WebhookOut:
    row = await asyncio.to_thread(services.monitoring.webhooks.get, caller.id)
    return WebhookOut(url=row.url, created_at=row.created_at)


@router.delete("/v1/webhook", status_code=204)
async def delete_webhook(caller: Bank, services: ServicesDep) -> Response:
    await asyncio.to_thread(services.monitoring.webhooks.delete, caller.id)
    return Response(status_code=204)


@router.get("/v1/webhook/deliveries", response_model=list[DeliveryOut])
async def list_deliveries(
    caller: Bank,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryOut]:
    """The newest webhook calls first: status, attempts, the last error."""
    rows = await asyncio.to_thread(services.monitoring.webhooks.deliveries, caller.id, limit)
    return [
        DeliveryOut(
            webhook_id=r.webhook_id,
            status=r.status,
            attempts=r.attempts,
            alerts=len(r.payload.get("data", {}).get("alerts", [])),
            next_attempt_at=r.next_attempt_at,
            last_error=r.last_error,
            created_at=r.created_at,
        )
        for r in rows
    ]
