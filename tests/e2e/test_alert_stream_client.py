"""The SDK's live alert stream and a webhook receiver over real HTTP (uvicorn on loopback).

The coordinator side here is a stand-in serving the alert routes exactly as the contract
lays them out (rows sealed with the real HPKE alert key); what is under test is the
client: that it reads a real chunked SSE response as it arrives, resumes with
``Last-Event-ID`` after the server closes the stream, gets a batch pushed while it waits,
and that a receiver built on ``verify_webhook`` accepts a signed call and refuses a
tampered one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from creditshare.client import AlertInbox, CreditShareClient, verify_webhook
from creditshare.client._webhooks import sign_webhook
from creditshare.crypto import AlertPrivateKey
from creditshare.errors import WebhookSignatureError
from creditshare.monitoring import (
    SIGNAL_RULES,
    AlertBatch,
    AlertEvent,
    Signal,
    batch_info,
    event_id,
)
from tests.e2e.conftest import ServeApp

SUB = "c3" * 16
USCC = "91310115MA3BJ1XGXC"
NODE = "yrd-court"


class AlertStore:
    """The rows a coordinator would hold for one bank (thread-safe appends)."""

    def __init__(self, key: AlertPrivateKey) -> None:
        self.key = key
        self.rows: list[dict[str, Any]] = []
        self.stream_requests: list[dict[str, str | None]] = []
        self._lock = threading.Lock()

    def add(self, cycle: int, seqs: tuple[int, ...] = ()) -> None:
        events = tuple(
            AlertEvent(
                id=event_id(NODE, SUB, 100 + seq, Signal.COURT_JUDGMENT),
                seq=seq,
                signal=Signal.COURT_JUDGMENT,
                severity=SIGNAL_RULES[Signal.COURT_JUDGMENT].severity,
                observed_at=date(2026, 11, 30),
                snapshot=100 + seq,
            )
            for seq in seqs
        )
        plain = AlertBatch(SUB, NODE, cycle, events).to_plaintext()
        sealed = self.key.public_key().seal(plain, batch_info(SUB, NODE, cycle))
        with self._lock:
            self.rows.append(
                {
                    "cursor": str(len(self.rows) + 1),
                    "subscription_id": SUB,
                    "node": NODE,
                    "chain": "yrd",
                    "department": "court",
                    "cycle": cycle,
                    "stored_at": "2026-11-30T12:00:00Z",
                    "sealed": base64.b64encode(sealed).decode(),
                }
            )

    def after(self, cursor: int) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.rows if int(r["cursor"]) > cursor]


def _app(store: AlertStore) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/subscriptions/{sid}")
    def subscription(sid: str) -> dict[str, str]:
        return {"subscription_id": sid, "uscc": USCC}

    @app.get("/v1/alerts/stream")
    async def stream(request: Request, after: str | None = None) -> StreamingResponse:
        last = request.headers.get("last-event-id")
        store.stream_requests.append({"after": after, "last-event-id": last})
        start = int(last or after or 0)
        first_connection = len(store.stream_requests) == 1

        async def events() -> AsyncIterator[bytes]:
            sent = start
            yield b"retry: 50\n\n"
            while not await request.is_disconnected():
                for row in store.after(sent):
                    data = json.dumps(row)
                    yield f"id: {row['cursor']}\nevent: alert\ndata: {data}\n\n".encode()
                    sent = int(row["cursor"])
                if first_connection:
                    return  # the first connection ends (a replica restarting, say)
                yield b": keep-alive\n\n"
                await asyncio.sleep(0.05)

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def test_the_live_stream_resumes_and_gets_pushed_batches(serve_app: ServeApp) -> None:
    key = AlertPrivateKey.generate()
    store = AlertStore(key)
    store.add(1, (1,))
    store.add(1)  # padding only
    store.add(2, (2,))
    with serve_app(_app(store)) as url, CreditShareClient(url, alert_key=key) as client:
        inbox = AlertInbox()
        alerts = client.alerts(follow=True, inbox=inbox)
        assert [next(alerts).seq, next(alerts).seq] == [1, 2]
        store.add(3, (2, 3))  # a resend of 2 and a new one, stored while the client waits
        got = next(alerts)
        alerts.close()
    assert (got.seq, got.uscc, got.cursor) == (3, USCC, "4")
    assert inbox.gaps == ()
    assert store.stream_requests[0] == {"after": None, "last-event-id": None}
    # The first connection ended after cursor 3: the client came back from there.
    assert store.stream_requests[1] == {"after": None, "last-event-id": "3"}


def test_a_webhook_receiver_accepts_a_signed_call_and_refuses_a_tampered_one(
    serve_app: ServeApp,
) -> None:
    """A bank's receiver (FastAPI here) checks each call with verify_webhook, then opens
    the alerts with its key; what it accepted is what the coordinator sent."""
    key = AlertPrivateKey.generate()
    store = AlertStore(key)
    store.add(1, (1,))
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    received: list[dict[str, Any]] = []
    receiver = FastAPI()

    @receiver.post("/hook")
    async def hook(request: Request) -> Response:
        try:
            payload = verify_webhook(secret, dict(request.headers), await request.body())
        except WebhookSignatureError as exc:
            return Response(str(exc), status_code=400)
        received.append(payload)
        return Response(status_code=204)

    body = json.dumps(
        {
            "type": "alerts.batch",
            "timestamp": "2026-11-30T12:00:00Z",
            "data": {"alerts": store.rows},
        }
    ).encode()
    stamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": "msg_2kq",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_webhook(secret, "msg_2kq", stamp, body),
    }
    with serve_app(receiver) as url:
        assert httpx.post(f"{url}/hook", content=body, headers=headers).status_code == 204
        tampered = body.replace(b'"cycle": 1', b'"cycle": 2')
        refused = httpx.post(f"{url}/hook", content=tampered, headers=headers)
        assert refused.status_code == 400
        assert "none of the 1 signature(s)" in refused.text
    assert len(received) == 1
    with serve_app(_app(store)) as url, CreditShareClient(url, alert_key=key) as client:
        (alert,) = client.open_alerts(received[0]["data"]["alerts"])
    assert (alert.seq, alert.uscc, alert.signal) == (1, USCC, Signal.COURT_JUDGMENT)
