"""Alerts pushed live (server-sent events over real HTTP) and by webhook (signed per
Standard Webhooks, retried with backoff, to a real local HTTP endpoint).

The data nodes here are FAKE monitoring nodes (tests/integration/_monitoring.py): these
tests are about delivery from the coordinator; real nodes are in the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._db import make_engine
from creditshare.coordinator.monitoring._nodes import SEALED_BYTES
from creditshare.coordinator.monitoring._webhooks import (
    WebhookDispatcher,
    WebhookStore,
    add_deliveries,
)

from ._monitoring import FakeNode, Harness, harness, serving


def _until(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- server-sent events ----------------------------------------------------------------


@dataclass
class _Stream:
    events: list[dict[str, str]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    opened: threading.Event = field(default_factory=threading.Event)


def _read(url: str, headers: dict[str, str], want: int, into: _Stream) -> None:
    """Read events from the stream until ``want`` arrived, then hang up."""
    with (
        httpx.Client(timeout=httpx.Timeout(60, read=60)) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        into.opened.set()
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                into.comments.append(line)
            elif line:
                name, _, value = line.partition(":")
                event[name] = value.removeprefix(" ")
            elif event:
                into.events.append(event)
                event = {}
                if len(into.events) >= want:
                    return


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path, real_http=True) as running:
        yield running


def test_the_stream_sends_stored_alerts_then_new_ones_as_they_are_stored(
    served: Harness,
) -> None:
    h = served
    h.subscribe(h.consent())
    h.cycle()
    stream = _Stream()
    url = f"{h.url}/v1/alerts/stream"
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(_read, url, h.headers(), 2, stream)
        _until(lambda: len(stream.events) == 1 or reading.done(), "the stored alert")
        h.cycle()  # pushed as soon as it is stored
        reading.result(timeout=60)
    assert [(e["id"], e["event"]) for e in stream.events] == [("1", "alert"), ("2", "alert")]
    page = h.client.get("/v1/alerts", headers=h.headers()).json()["alerts"]
    assert [json.loads(e["data"]) for e in stream.events] == page
    # Resuming after the last event seen: only newer ones.
    h.cycle()
    resumed = _Stream()
    _read(url, h.headers() | {"Last-Event-ID": "2"}, 1, resumed)
    assert [e["id"] for e in resumed.events] == ["3"]
    by_query = _Stream()
    _read(f"{url}?after=1", h.headers(), 2, by_query)
    assert [e["id"] for e in by_query.events] == ["2", "3"]


def test_the_stream_finds_alerts_another_replica_stored(served: Harness) -> None:
    """Stored without this process hearing of it (as by a replica's cycle): the stream's
    periodic read of the database still delivers it."""
    h = served
    sid = h.subscribe(h.consent()).json()["subscription_id"]
    node = h.services.registry.nodes[0]
    stream = _Stream()
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(_read, f"{h.url}/v1/alerts/stream", h.headers(), 1, stream)
        assert stream.opened.wait(60)
        sealed = bytes(SEALED_BYTES)  # the coordinator never opens what it stores
        h.services.monitoring.alerts.store_answer(
            node,
            7,
            [(sid, sealed)],
            {sid: h.services.monitoring.subscriptions.store.get(sid).bank},
            h.clock(),
        )
        reading.result(timeout=60)
    (event,) = stream.events
    assert json.loads(event["data"])["cycle"] == 7


def test_the_stream_refuses_cursors_it_never_gave(served: Harness) -> None:
    h = served
    h.subscribe(h.consent())
    h.cycle()
    url = f"{h.url}/v1/alerts/stream"
    with httpx.Client(timeout=30) as client:
        for headers in (
            h.headers() | {"Last-Event-ID": "77"},
            h.headers() | {"Last-Event-ID": "x"},
            h.headers(h.other_bank_key) | {"Last-Event-ID": "1"},
        ):
            response = client.get(url, headers=headers)
            assert response.status_code == 404, response.text
            assert "does not exist" in response.json()["detail"]
        assert client.get(url).status_code == 401
        assert client.get(url, headers=h.headers(h.operator_key)).status_code == 403


# -- webhooks --------------------------------------------------------------------------


@dataclass
class _Receiver:
    """A real HTTP endpoint that fails its first ``failures`` calls, then accepts."""

    failures: int
    calls: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def _receiving(receiver: _Receiver) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with receiver.lock:
                status = 500 if len(receiver.calls) < receiver.failures else 204
                receiver.calls.append(
                    ({k.lower(): v for k, v in self.headers.items()}, body, status)
                )
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/alerts?bank=1"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _verified(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(headers["webhook-signature"], f"v1,{expected}")


FAST_RETRIES: dict[str, Any] = {
    "webhook_initial_backoff_seconds": 0.05,
    "webhook_max_backoff_seconds": 0.2,
}


def test_a_failing_endpoint_is_retried_until_the_alerts_arrive(tmp_path: Path) -> None:
    receiver = _Receiver(failures=3)
    with _receiving(receiver) as url, harness(tmp_path, **FAST_RETRIES) as h:
        response = h.client.put("/v1/webhook", json={"url": url}, headers=h.headers())
        assert response.status_code == 200, response.text
        secret = response.json()["secret"]
        assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
        shown = h.client.get("/v1/webhook", headers=h.headers()).json()
        assert shown["url"] == url and shown["secret"] is None  # shown once only
        h.subscribe(h.consent())
        h.subscribe(h.consent())
        h.cycle()
        _until(lambda: any(status == 204 for _, _, status in receiver.calls), "a delivery")
        calls = receiver.calls
        assert [status for _, _, status in calls] == [500, 500, 500, 204]
        # One delivery: the same id on every attempt, each attempt signed.
        assert len({headers["webhook-id"] for headers, _, _ in calls}) == 1
        assert all(_verified(secret, headers, body) for headers, body, _ in calls)
        payload = json.loads(calls[-1][1])
        assert payload["type"] == "alerts.batch" and "timestamp" in payload
        alerts = h.client.get("/v1/alerts", headers=h.headers()).json()["alerts"]
        assert payload["data"]["alerts"] == alerts and len(alerts) == 2
        _until(
            lambda: (
                h.client.get("/v1/webhook/deliveries", headers=h.headers()).json()[0]["status"]
                == "delivered"
            ),
            "the delivery to be recorded",
        )
        (delivery,) = h.client.get("/v1/webhook/deliveries", headers=h.headers()).json()
        assert delivery["attempts"] == 4 and delivery["alerts"] == 2
        assert delivery["webhook_id"] == calls[0][0]["webhook-id"]


def test_after_the_last_attempt_a_delivery_fails_and_the_alerts_stay_readable(
    tmp_path: Path,
) -> None:
    receiver = _Receiver(failures=1000)
    with (
        _receiving(receiver) as url,
        harness(tmp_path, webhook_max_attempts=3, **FAST_RETRIES) as h,
    ):
        h.client.put("/v1/webhook", json={"url": url}, headers=h.headers())
        h.subscribe(h.consent())
        h.cycle()

        def failed() -> bool:
            rows = h.client.get("/v1/webhook/deliveries", headers=h.headers()).json()
            return bool(rows) and rows[0]["status"] == "failed"

        _until(failed, "the delivery to fail")
        (delivery,) = h.client.get("/v1/webhook/deliveries", headers=h.headers()).json()
        assert delivery["attempts"] == 3 and delivery["last_error"] == "HTTP 500"
        assert len(receiver.calls) == 3
        assert len(h.client.get("/v1/alerts", headers=h.headers()).json()["alerts"]) == 1


def test_deliveries_survive_a_coordinator_restart(tmp_path: Path) -> None:
    receiver = _Receiver(failures=1)
    node = FakeNode()
    database = f"sqlite:///{tmp_path / 'c.db'}"
    # First run: the endpoint fails once, and the next attempt is an hour away.
    slow: dict[str, Any] = {"webhook_initial_backoff_seconds": 3600}
    with _receiving(receiver) as url:
        with harness(tmp_path, [node], database, **slow) as h:
            h.client.put("/v1/webhook", json={"url": url}, headers=h.headers())
            h.subscribe(h.consent())
            h.cycle()
            _until(lambda: len(receiver.calls) == 1, "the first attempt")
            bank_key = h.bank_key
            settings = h.services.settings
        # Restarted two hours later (same database): the delivery is due, and sent.

        def later() -> datetime:
            return datetime.now(UTC) + timedelta(hours=2)

        with serving(node) as address:
            restarted = settings.model_copy(
                update={"nodes": [settings.nodes[0].model_copy(update={"address": address})]}
            )
            app = create_app(CoordinatorSettings(**restarted.model_dump()), clock=later)
            auth = {"Authorization": f"Bearer {bank_key}"}
            with TestClient(app) as client:
                _until(lambda: len(receiver.calls) == 2, "the delivery after the restart")
                _until(
                    lambda: (
                        client.get("/v1/webhook/deliveries", headers=auth).json()[0]["status"]
                        == "delivered"
                    ),
                    "the delivery to be recorded",
                )
                (row,) = client.get("/v1/webhook/deliveries", headers=auth).json()
                assert row["webhook_id"] == receiver.calls[0][0]["webhook-id"]
                assert row["attempts"] == 2
    assert receiver.calls[0][0]["webhook-id"] == receiver.calls[1][0]["webhook-id"]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.org/hook", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("https://user:pw@example.org/hook", "credentials"),
        ("https:///nohost", "no host"),
        ("http://example.org:99999/", "malformed"),
        ("not a url", "http:// or https://"),
    ],
)
def test_a_webhook_url_that_is_not_plain_http_is_refused(
    tmp_path: Path, url: str, words: str
) -> None:
    with harness(tmp_path) as h:
        response = h.client.put("/v1/webhook", json={"url": url}, headers=h.headers())
        assert response.status_code == 422, response.text
        assert words in response.json()["detail"]
        assert h.client.get("/v1/webhook", headers=h.headers()).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",  # the coordinator's own host
        "http://169.254.169.254/latest/meta-data/",  # a cloud metadata endpoint
        "http://10.0.0.7/admin",  # the private network it sits in
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # loopback spelled as IPv6
        "http://localhost/hook",  # a name resolving to loopback
    ],
)
def test_a_webhook_into_a_network_the_operator_did_not_allow_is_refused(
    tmp_path: Path, url: str
) -> None:
    """Server-side request forgery: a bank cannot make the coordinator call inward."""
    with harness(tmp_path, webhook_allowed_networks=[]) as h:
        response = h.client.put("/v1/webhook", json={"url": url}, headers=h.headers())
        assert response.status_code == 422, response.text
        assert "webhook_allowed_networks" in response.json()["detail"]
        assert h.client.get("/v1/webhook", headers=h.headers()).status_code == 404
    with harness(tmp_path / "allowed", webhook_allowed_networks=["127.0.0.0/8"]) as h:
        response = h.client.put(
            "/v1/webhook", json={"url": "http://127.0.0.1:8080/hook"}, headers=h.headers()
        )
        assert response.status_code == 200, response.text


def test_a_destination_no_longer_allowed_is_not_called(tmp_path: Path) -> None:
    """Checked again before each call (a name may resolve elsewhere by now, or the
    operator narrowed the allowed networks): the attempt fails, the endpoint sees nothing."""
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    now = datetime.now(UTC)
    receiver = _Receiver(failures=0)
    with _receiving(receiver) as url:
        WebhookStore(engine, lambda: now, [ip_network("127.0.0.0/8")]).put("bank-1", url)
        with engine.begin() as conn:
            add_deliveries(conn, {"bank-1": [{"cursor": "1"}]}, now - timedelta(seconds=1))
        narrowed = WebhookStore(engine, lambda: now, [])
        dispatcher = WebhookDispatcher(
            narrowed,
            lambda: now,
            max_attempts=3,
            initial_backoff=60,
            max_backoff=60,
            timeout=5,
        )
        assert asyncio.run(dispatcher.round()) == 1
    assert receiver.calls == []
    (delivery,) = narrowed.deliveries("bank-1", 10)
    assert delivery.status == "pending" and delivery.attempts == 1
    assert "webhook_allowed_networks" in delivery.last_error


def test_removing_the_webhook(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        assert h.client.delete("/v1/webhook", headers=h.headers()).status_code == 404
        h.client.put("/v1/webhook", json={"url": "https://127.0.0.1:9/hook"}, headers=h.headers())
        assert h.client.delete("/v1/webhook", headers=h.headers()).status_code == 204
        assert h.client.get("/v1/webhook", headers=h.headers()).status_code == 404
        assert (
            h.client.put(
                "/v1/webhook",
                json={"url": "https://127.0.0.1:9/hook"},
                headers=h.headers(h.operator_key),
            ).status_code
            == 403
        )


def test_two_replicas_never_send_the_same_attempt(database_url: str) -> None:
    """A due delivery is leased by one claim: concurrent claims (as from replicas on one
    database) share the due deliveries out, none twice."""
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    store = WebhookStore(engine, lambda: now, [ip_network("10.0.0.0/8")])
    store.put("bank-1", "https://10.1.2.3/hook")
    with engine.begin() as conn:
        alerts = [{"cursor": str(k)} for k in range(1, 1001)]
        add_deliveries(conn, {"bank-1": alerts}, now - timedelta(seconds=1))
    claimed: list[list[int]] = []
    barrier = threading.Barrier(4)

    def one() -> None:
        barrier.wait()
        claimed.append([row.id or 0 for row, _ in store.claim(timedelta(minutes=1))])

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for ids in claimed for i in ids]
    assert len(everything) == len(set(everything)) == 10  # 1000 alerts, 100 per call
    assert store.claim(timedelta(minutes=1)) == []  # all leased
    engine.dispose()
