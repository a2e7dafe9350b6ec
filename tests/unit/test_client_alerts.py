"""The SDK's monitoring side against a fake coordinator (httpx.MockTransport) that serves
batches sealed with the real HPKE alert key: opening, padding, dedup, restarts, gaps,
paging, the SSE stream, and subscribing."""

from __future__ import annotations

import base64
import itertools
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from creditshare.client import (
    Alert,
    AlertInbox,
    CreditShareClient,
    Gap,
    Identity,
    default_alert_key_path,
    load_alert_key,
    load_or_create_alert_key,
    verify_webhook,
)
from creditshare.client._sse import parse_sse
from creditshare.client._webhooks import sign_webhook
from creditshare.crypto import AlertPrivateKey, SigningKey
from creditshare.errors import AlertBatchError, ClientError, InvalidInputError, ProblemError
from creditshare.monitoring import (
    SIGNAL_RULES,
    AlertBatch,
    AlertEvent,
    Signal,
    batch_info,
    choices_from_json,
    event_id,
)
from creditshare.signed import SignedSubscription, subscription_document

SUB_A, SUB_B = "a1" * 16, "b2" * 16
USCC = {SUB_A: "91310115MA3BJ1XGXC", SUB_B: "91310101MA00000153"}
NODE = "yrd-court"
#: A cycle summary as POST /v1/monitoring/cycles returns it.
CYCLE: dict[str, Any] = {
    "number": 7,
    "ledger_index": 41,
    "started_at": "2026-11-30T12:00:00Z",
    "finished_at": "2026-11-30T12:00:02Z",
    "subscriptions": 2,
    "nodes": [
        {"node": "yrd-court", "batches": 2, "unknown": [], "ended": [], "error": None},
        {"node": "prd-court", "batches": 0, "unknown": [], "ended": [], "error": "unavailable"},
    ],
}


def _event(sub: str, seq: int, snapshot: int, signal: Signal = Signal.COURT_JUDGMENT) -> AlertEvent:
    return AlertEvent(
        id=event_id(NODE, sub, snapshot, signal),
        seq=seq,
        signal=signal,
        severity=SIGNAL_RULES[signal].severity,
        observed_at=date(2026, 11, 30),
        snapshot=snapshot,
        indicator="judgments_band",
        before="none",
        after="1",
    )


@dataclass
class FakeCoordinator:
    """Stores rows like the coordinator's alert table and answers the SDK's requests."""

    key: AlertPrivateKey
    rows: list[dict[str, Any]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    #: Bodies the stream endpoint answers, one per connection (bytes or a byte iterator).
    streams: list[Any] = field(default_factory=list)
    posted: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        sub: str,
        cycle: int,
        events: tuple[AlertEvent, ...] = (),
        *,
        node: str = NODE,
        sealed: bytes | None = None,
    ) -> dict[str, Any]:
        """A stored alert: the node's batch sealed to the bank's key under its info."""
        if sealed is None:
            plain = AlertBatch(sub, node, cycle, events).to_plaintext()
            sealed = self.key.public_key().seal(plain, batch_info(sub, node, cycle))
        row = {
            "cursor": str(len(self.rows) + 1),
            "subscription_id": sub,
            "node": node,
            "chain": "yrd",
            "department": "court",
            "cycle": cycle,
            "stored_at": f"2026-11-30T12:{len(self.rows):02d}:00Z",
            "sealed": base64.b64encode(sealed).decode(),
        }
        self.rows.append(row)
        return row

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/v1/alerts":
            after = int(request.url.params.get("after", "0"))
            limit = int(request.url.params.get("limit", "100"))
            page = [r for r in self.rows if int(r["cursor"]) > after][:limit]
            return httpx.Response(
                200, json={"alerts": page, "next_cursor": page[-1]["cursor"] if page else None}
            )
        if path == "/v1/alerts/stream":
            body = self.streams.pop(0)
            if isinstance(body, int):
                return httpx.Response(
                    body, json={"title": "Not Found", "detail": "cursor 99 does not exist"}
                )
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
        if path.startswith("/v1/subscriptions/"):
            sub = path.rsplit("/", 1)[1]
            return httpx.Response(200, json={"subscription_id": sub, "uscc": USCC[sub]})
        if path == "/v1/subscriptions" and request.method == "POST":
            body = json.loads(request.content)
            self.posted.append(body)
            return httpx.Response(201, json={"subscription_id": body["subscription_id"]})
        if path == "/v1/monitoring/cycles" and request.method == "POST":
            return httpx.Response(200, json=CYCLE)
        return httpx.Response(404, json={"title": "Not Found", "detail": path})

    def client(self, **kwargs: Any) -> CreditShareClient:
        return CreditShareClient(
            "http://coordinator.test",
            api_key="cs_test",
            alert_key=self.key,
            transport=httpx.MockTransport(self.handler),
            **kwargs,
        )

    def alert_requests(self) -> list[dict[str, str]]:
        return [dict(r.url.params) for r in self.requests if r.url.path == "/v1/alerts"]


@pytest.fixture
def coordinator() -> FakeCoordinator:
    return FakeCoordinator(AlertPrivateKey.generate())


# ----------------------------------------------------------------------- opening


def test_alerts_are_opened_padding_dropped_and_described(coordinator: FakeCoordinator) -> None:
    first, second = _event(SUB_A, 1, 5), _event(SUB_A, 2, 5, Signal.DISHONEST_DEBTOR)
    coordinator.add(SUB_A, 1)  # nothing happened: padding only
    coordinator.add(SUB_B, 1)
    coordinator.add(SUB_A, 2, (first, second))
    coordinator.add(SUB_B, 2)
    with coordinator.client() as client:
        alerts = list(client.alerts())
    assert [a.id for a in alerts] == [first.id, second.id]
    a = alerts[0]
    assert (a.subscription_id, a.uscc, a.node, a.chain, a.department) == (
        SUB_A,
        USCC[SUB_A],
        NODE,
        "yrd",
        "court",
    )
    assert (a.cycle, a.cursor, a.seq, a.signal, a.severity.value) == (
        2,
        "3",
        1,
        Signal.COURT_JUDGMENT,
        "high",
    )
    assert (a.indicator, a.before, a.after, a.observed_at) == (
        "judgments_band",
        "none",
        "1",
        date(2026, 11, 30),
    )
    assert a.to_json()["type"] == "court_judgment"
    assert alerts[1].signal is Signal.DISHONEST_DEBTOR
    # The enterprise is looked up once per subscription, and only for real events.
    lookups = [r.url.path for r in coordinator.requests if "/subscriptions/" in r.url.path]
    assert lookups == [f"/v1/subscriptions/{SUB_A}"]


def test_paging_follows_next_cursor_and_dedups_resends_across_pages(
    coordinator: FakeCoordinator,
) -> None:
    one, two, three = _event(SUB_A, 1, 5), _event(SUB_A, 2, 6), _event(SUB_A, 3, 7)
    coordinator.add(SUB_A, 1, (one,))
    coordinator.add(SUB_B, 1)
    coordinator.add(SUB_A, 2, (one, two))  # the node sent `one` again (ack lost)
    coordinator.add(SUB_A, 3, (two, three))
    coordinator.add(SUB_B, 3)
    with coordinator.client() as client:
        got = [a.id for a in client.alerts(page_size=2)]
    assert got == [one.id, two.id, three.id]
    assert coordinator.alert_requests() == [
        {"limit": "2"},
        {"limit": "2", "after": "2"},
        {"limit": "2", "after": "4"},
        {"limit": "2", "after": "5"},
    ]


def test_after_starts_past_a_cursor(coordinator: FakeCoordinator) -> None:
    one, two = _event(SUB_A, 1, 5), _event(SUB_A, 2, 6)
    coordinator.add(SUB_A, 1, (one,))
    coordinator.add(SUB_A, 2, (two,))
    with coordinator.client() as client:
        assert [a.id for a in client.alerts(after="1")] == [two.id]


def test_an_inbox_file_resumes_after_a_restart_without_repeats(
    coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    path = tmp_path / "inbox.json"
    one, two, three = _event(SUB_A, 1, 5), _event(SUB_A, 2, 6), _event(SUB_A, 3, 7)
    coordinator.add(SUB_A, 1, (one, two))
    coordinator.add(SUB_B, 1)
    with coordinator.client() as client:
        assert [a.id for a in client.alerts(inbox=AlertInbox(path))] == [one.id, two.id]
    saved = json.loads(path.read_text())
    assert saved["cursor"] == "2" and set(saved["seen"]) == {one.id, two.id}
    # Next cycle: `two` again (its acknowledgement was lost) and a new one.
    coordinator.add(SUB_A, 2, (two, three))
    coordinator.requests.clear()
    with coordinator.client() as client:  # a new process
        assert [a.id for a in client.alerts(inbox=AlertInbox(path))] == [three.id]
    assert coordinator.alert_requests()[0]["after"] == "2"
    with coordinator.client() as client:
        assert list(client.alerts(inbox=AlertInbox(path))) == []


def test_an_event_counts_as_handled_when_the_next_is_asked_for_or_accepted(
    coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    """At least once: an event the caller stopped on without accepting comes again."""
    path = tmp_path / "inbox.json"
    one, two, three = _event(SUB_A, 1, 5), _event(SUB_A, 2, 6), _event(SUB_A, 3, 7)
    coordinator.add(SUB_A, 1, (one, two))
    coordinator.add(SUB_A, 2, (three,))
    with coordinator.client() as client:
        alerts = client.alerts(inbox=AlertInbox(path))
        assert next(alerts).id == one.id
        assert next(alerts).id == two.id  # `one` handled
        alerts.close()  # stopped (or crashed) while handling `two`
    with coordinator.client() as client:
        inbox = AlertInbox(path)
        alerts = client.alerts(inbox=inbox)
        got = next(alerts)
        assert got.id == two.id  # again: it was never confirmed
        assert next(alerts).id == three.id
        assert inbox.accept(got) is False  # already handled
        inbox.accept(_alert_like(three))
        alerts.close()
    with coordinator.client() as client:
        assert list(client.alerts(inbox=AlertInbox(path))) == []


def _alert_like(event: AlertEvent) -> Alert:
    """The alert the iterator gave for ``event`` (the inbox uses its id, subscription,
    node and seq)."""
    return Alert(
        id=event.id,
        seq=event.seq,
        signal=event.signal,
        severity=event.severity,
        observed_at=event.observed_at,
        snapshot=event.snapshot,
        indicator="",
        before="",
        after="",
        subscription_id=SUB_A,
        uscc=USCC[SUB_A],
        node=NODE,
        chain="yrd",
        department="court",
        cycle=2,
        cursor="2",
        stored_at="",
    )


def test_a_batch_that_does_not_open_is_an_error_naming_its_cursor_never_skipped(
    coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    path = tmp_path / "inbox.json"
    good = _event(SUB_A, 1, 5)
    coordinator.add(SUB_A, 1, (good,))
    other_key = AlertPrivateKey.generate().public_key()
    plain = AlertBatch(SUB_A, NODE, 2, (_event(SUB_A, 2, 6),)).to_plaintext()
    coordinator.add(SUB_A, 2, sealed=other_key.seal(plain, batch_info(SUB_A, NODE, 2)))
    coordinator.add(SUB_A, 3, (_event(SUB_A, 3, 7),))
    with coordinator.client() as client:
        got = []
        with pytest.raises(AlertBatchError, match=r"alert at cursor 2: .* does not open") as info:
            for alert in client.alerts(inbox=AlertInbox(path)):
                got.append(alert.id)
    assert info.value.cursor == "2"
    assert got == [good.id]
    # The inbox stays before the bad row: reading again stops there again.
    assert json.loads(path.read_text())["cursor"] == "1"
    with coordinator.client() as client, pytest.raises(AlertBatchError, match="cursor 2"):
        list(client.alerts(inbox=AlertInbox(path)))


@pytest.mark.parametrize(
    ("listed", "inside", "named"),
    [
        ((SUB_A, NODE, 4), (SUB_B, NODE, 4), f"says it is subscription {SUB_B}"),
        ((SUB_A, NODE, 4), (SUB_A, "prd-court", 4), "node prd-court"),
        ((SUB_A, NODE, 4), (SUB_A, NODE, 3), "cycle 3"),
    ],
)
def test_a_batch_naming_another_subscription_node_or_cycle_is_an_error(
    coordinator: FakeCoordinator,
    listed: tuple[str, str, int],
    inside: tuple[str, str, int],
    named: str,
) -> None:
    """Sealed under the listed info (so it opens) but built for another: refused."""
    plain = AlertBatch(*inside, ()).to_plaintext()
    sealed = coordinator.key.public_key().seal(plain, batch_info(*listed))
    coordinator.add(listed[0], listed[2], node=listed[1], sealed=sealed)
    with coordinator.client() as client, pytest.raises(AlertBatchError, match=named):
        list(client.alerts())


def test_a_batch_moved_to_another_row_does_not_open(coordinator: FakeCoordinator) -> None:
    row = coordinator.add(SUB_A, 1, (_event(SUB_A, 1, 5),))
    moved = coordinator.add(SUB_A, 2)
    moved["sealed"] = row["sealed"]  # a relay replays cycle 1's batch as cycle 2's
    with coordinator.client() as client, pytest.raises(AlertBatchError, match="cursor 2"):
        list(client.alerts())


def test_gaps_in_a_subscriptions_seq_are_reported_and_filled_late(
    coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    path = tmp_path / "inbox.json"
    coordinator.add(SUB_A, 1, (_event(SUB_A, 1, 5), _event(SUB_A, 3, 7)))
    coordinator.add(SUB_A, 2, (_event(SUB_A, 6, 10),))
    coordinator.add(SUB_A, 2, (_event(SUB_A, 1, 20),), node="prd-court")
    inbox = AlertInbox(path)
    with coordinator.client() as client:
        assert len(list(client.alerts(inbox=inbox))) == 4
    assert inbox.gaps == (Gap(SUB_A, NODE, 2, 2), Gap(SUB_A, NODE, 4, 5))
    assert str(inbox.gaps[1]) == f"subscription {SUB_A} on {NODE}: events 4..5 missing"
    assert AlertInbox(path).gaps == inbox.gaps  # kept in the file
    coordinator.add(SUB_A, 3, (_event(SUB_A, 4, 8),))
    inbox = AlertInbox(path)
    with coordinator.client() as client:
        assert [a.seq for a in client.alerts(inbox=inbox)] == [4]
    assert inbox.gaps == (Gap(SUB_A, NODE, 2, 2), Gap(SUB_A, NODE, 5, 5))


def test_reading_from_a_cursor_counts_seqs_from_the_first_event_seen(
    coordinator: FakeCoordinator,
) -> None:
    """Events before ``after`` were read elsewhere: not a gap. From the start they are."""
    coordinator.add(SUB_A, 1, (_event(SUB_A, 1, 5),))
    coordinator.add(SUB_A, 2, (_event(SUB_A, 2, 6), _event(SUB_A, 4, 8)))
    inbox = AlertInbox()
    with coordinator.client() as client:
        assert [a.seq for a in client.alerts(after="1", inbox=inbox)] == [2, 4]
    assert inbox.gaps == (Gap(SUB_A, NODE, 3, 3),)
    coordinator.rows.pop(0)  # pruned: the first batch the bank ever sees holds seq 2
    inbox = AlertInbox()
    with coordinator.client() as client:
        assert [a.seq for a in client.alerts(inbox=inbox)] == [2, 4]
    assert inbox.gaps == (Gap(SUB_A, NODE, 1, 1), Gap(SUB_A, NODE, 3, 3))


def test_a_malformed_inbox_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "inbox.json"
    path.write_text("{}")
    with pytest.raises(ClientError, match="is not an alert inbox file"):
        AlertInbox(path)


def test_alerts_without_an_alert_key_fail_before_any_request() -> None:
    calls: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    with (
        CreditShareClient("http://c.test", transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(ClientError, match="no alert key"),
    ):
        client.alerts()
    assert calls == []


def test_a_verified_webhook_calls_alerts_open_once_however_often_delivered(
    coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    one, two = _event(SUB_A, 1, 5), _event(SUB_A, 2, 6)
    rows = [coordinator.add(SUB_A, 1, (one,)), coordinator.add(SUB_B, 1)]
    later = [coordinator.add(SUB_A, 2, (one, two))]
    secret = "whsec_" + base64.b64encode(bytes(32)).decode()
    inbox = AlertInbox(tmp_path / "webhook-inbox.json")

    def deliver(alerts: list[dict[str, Any]]) -> list[str]:
        body = json.dumps({"type": "alerts.batch", "data": {"alerts": alerts}}).encode()
        stamp = int(time.time())
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign_webhook(secret, "msg_1", stamp, body),
        }
        payload = verify_webhook(secret, headers, body)
        with coordinator.client() as client:
            return [a.id for a in client.open_alerts(payload["data"]["alerts"], inbox)]

    assert deliver(later) == [one.id, two.id]  # the later call came first
    assert deliver(rows) == []  # retried or late: nothing new
    assert deliver(later) == []
    assert inbox.cursor is None and inbox.gaps == ()
    forged = dict(rows[0], subscription_id=SUB_B)
    with pytest.raises(AlertBatchError, match="cursor 1"):
        deliver([forged])


# ----------------------------------------------------------------------- live stream


def _sse(*rows: dict[str, Any], retry: int | None = 10, extra: str = "") -> bytes:
    parts = [f"retry: {retry}\n\n" if retry is not None else "", ": keep-alive\n\n", extra]
    for row in rows:
        parts.append(f"id: {row['cursor']}\nevent: alert\ndata: {json.dumps(row)}\n\n")
    return "".join(parts).encode()


def test_follow_reads_the_stream_and_resumes_with_last_event_id(
    coordinator: FakeCoordinator,
) -> None:
    events = [_event(SUB_A, i, 4 + i) for i in (1, 2, 3)]
    rows = [coordinator.add(SUB_A, i, (e,)) for i, e in enumerate(events, start=1)]
    coordinator.streams = [
        _sse(rows[0], extra="event: ping\ndata: {}\n\n"),
        _sse(rows[0], rows[1]),  # the server repeated one: deduplicated
        _sse(rows[2]),
    ]
    with coordinator.client() as client:
        got = list(itertools.islice(client.alerts(after="0", follow=True), 3))
    assert [a.id for a in got] == [e.id for e in events]
    streams = [r for r in coordinator.requests if r.url.path == "/v1/alerts/stream"]
    assert [dict(r.url.params) for r in streams] == [{"after": "0"}, {}, {}]
    assert [r.headers.get("last-event-id") for r in streams] == [None, "1", "2"]
    assert all(r.headers["accept"] == "text/event-stream" for r in streams)


class _Dropping(httpx.SyncByteStream):
    """A stream whose connection drops after the first chunk."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        raise httpx.ReadError("connection reset by peer")


def test_a_dropped_stream_reconnects_after_the_last_alert_taken(
    coordinator: FakeCoordinator,
) -> None:
    one, two = _event(SUB_A, 1, 5), _event(SUB_A, 2, 6)
    rows = [coordinator.add(SUB_A, 1, (one,)), coordinator.add(SUB_A, 2, (two,))]
    # The second event is cut off mid-way by the drop: it must come again.
    cut = _sse(rows[0]) + b'id: 2\nevent: alert\ndata: {"cursor"'
    coordinator.streams = [_Dropping(cut), _sse(rows[1])]
    with coordinator.client() as client:
        got = list(itertools.islice(client.alerts(follow=True), 2))
    assert [a.id for a in got] == [one.id, two.id]
    streams = [r for r in coordinator.requests if r.url.path == "/v1/alerts/stream"]
    assert [r.headers.get("last-event-id") for r in streams] == [None, "1"]


def test_a_refused_stream_raises_instead_of_reconnecting(coordinator: FakeCoordinator) -> None:
    coordinator.streams = [404]
    with coordinator.client() as client, pytest.raises(ProblemError, match="cursor 99"):
        next(client.alerts(after="99", follow=True))


def test_sse_parsing_follows_the_standard() -> None:
    lines = [
        ": comment",
        "retry: 250",
        "id: 7",
        "event: alert",
        "data: line one",
        "data:line two",
        "",
        "data: no id of its own",
        "",
        "event: alert",
        "",  # no data: not dispatched
        "id: 9",
        "data: cut off",  # no blank line: dropped
    ]
    events = list(parse_sse(lines))
    assert [(e.event, e.data, e.id, e.retry) for e in events] == [
        ("alert", "line one\nline two", "7", 250),
        ("message", "no id of its own", "7", None),
    ]


# ----------------------------------------------------------------------- subscribing


def test_subscribe_signs_a_subscription_a_node_can_verify(coordinator: FakeCoordinator) -> None:
    bank = SigningKey.generate()
    identity = Identity("demo-bank", bank, (b"unused",))
    with coordinator.client(identity=identity) as client:
        client.subscribe(
            USCC[SUB_A], "cd" * 16, {"tax_arrears": None, "court_judgment": 2}, ["yrd", "bth"]
        )
        client.subscribe(USCC[SUB_B], "ef" * 16, ["dishonest_debtor"])
    first, second = coordinator.posted
    assert first["signals"] == [
        {"type": "court_judgment", "threshold": 2},
        {"type": "tax_arrears", "threshold": 1},
    ]
    assert first["chains"] == ["bth", "yrd"] and "chains" not in second
    assert first["alert_key"] == coordinator.key.public_key().to_text()
    # What the coordinator (and each node) rebuilds from the body verifies.
    for body in (first, second):
        document = subscription_document(
            subscription_id=body["subscription_id"],
            requester="demo-bank",
            uscc=body["uscc"],
            consent_id=body["consent_id"],
            chains=body.get("chains", []),
            signals=choices_from_json(body["signals"]),
            alert_key=coordinator.key.public_key(),
            time=datetime.fromisoformat(body["requested_at"]),
        )
        signed = SignedSubscription.from_json(
            {"document": document, "signature": body["signature"]}
        )
        signed.verify(bank.verify_key)
    assert first["subscription_id"] != second["subscription_id"]


@pytest.mark.parametrize(
    ("signals", "message"),
    [
        (["court_judgement"], "unknown signal type 'court_judgement'"),
        ({"headcount_drop": 0}, "threshold 0 is outside 1..100"),
        ([], "at least one signal"),
        ("court_judgment", "not a string"),
    ],
)
def test_bad_signals_fail_before_a_request(
    coordinator: FakeCoordinator, signals: Any, message: str
) -> None:
    identity = Identity("demo-bank", SigningKey.generate(), (b"unused",))
    with (
        coordinator.client(identity=identity) as client,
        pytest.raises(InvalidInputError, match=message),
    ):
        client.subscribe(USCC[SUB_A], "cd" * 16, signals)
    assert coordinator.requests == []


# ----------------------------------------------------------------------- key store


def test_the_alert_key_is_made_once_beside_the_paillier_key_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDITSHARE_ALERT_KEY_FILE", raising=False)
    key_file = tmp_path / "keys" / "paillier-key.json"
    path = default_alert_key_path(key_file)
    assert path.parent == key_file.parent
    key = load_or_create_alert_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_alert_key(path).public_key() == key.public_key()
    assert load_alert_key(path).to_bytes() == key.to_bytes()
    monkeypatch.setenv("CREDITSHARE_ALERT_KEY_FILE", str(tmp_path / "elsewhere"))
    assert default_alert_key_path(key_file) == tmp_path / "elsewhere"
    bad = tmp_path / "bad"
    bad.write_text("header\nnot-a-key\n")
    with pytest.raises(ClientError, match="is not an alert key file"):
        load_alert_key(bad)
