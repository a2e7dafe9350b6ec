"""A coordinator in-process over FAKE monitoring nodes, for the coordinator's own checks.

The fake node (a real grpc server: DataNode.Describe with signals, and the Monitoring
service) is a stand-in for tests of the coordinator's side only: routing by signals,
what it records and stores, cursors, streams and webhooks. Real nodes (their checks of
receipts, signatures and consents, their event detection) are tested with the node's
own tests and the end-to-end tests.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from creditshare._canonical import format_time, parse_canonical
from creditshare.consent import ConsentGrant, Purpose
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import init_log_key
from creditshare.coordinator._services import Services
from creditshare.coordinator.monitoring._tables import RegistrationRow, SubscriptionRow
from creditshare.crypto import AlertPrivateKey, AlertPublicKey
from creditshare.errors import CreditShareError
from creditshare.identity import Chain
from creditshare.monitoring import (
    SIGNAL_RULES,
    AlertBatch,
    AlertEvent,
    Signal,
    SignalChoice,
    batch_info,
    event_id,
)
from creditshare.proto import monitoring_pb2, monitoring_pb2_grpc, node_pb2, node_pb2_grpc
from creditshare.signed import SignedSubscription, subscription_document

from .._authority import authority
from .._fake_nodes import NoTreeModels
from .._serving import serve_in_thread

__all__ = [
    "ENTERPRISE",
    "USCC",
    "Clock",
    "FakeNode",
    "Harness",
    "harness",
    "serving",
]

USCC = "91350100M000100Y43"
ENTERPRISE = f"ent-{USCC.lower()}"


class Clock:
    """The coordinator's clock, moved on by tests (consent expiry, alert retention)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class _Watched:
    alert_key: AlertPublicKey
    digest: str
    events: list[tuple[AlertEvent, int | None]] = field(default_factory=list)


class FakeNode(
    NoTreeModels, node_pb2_grpc.DataNodeServicer, monitoring_pb2_grpc.MonitoringServicer
):
    """Describes itself with ``signals``; Watch keeps the subscription; Monitor answers
    one sealed batch per registered subscription (events added by ``raise_event``),
    resending those not yet acknowledged, as the contract says a node does."""

    def __init__(self, node_id: str = "yrd-fake", signals: Sequence[str] = ("court_judgment",)):
        self.node_id = node_id
        self.signals = list(signals)
        self.watched: dict[str, _Watched] = {}
        self.watch_requests: list[monitoring_pb2.WatchRequest] = []
        self.monitor_requests: list[monitoring_pb2.MonitorRequest] = []
        #: "ok", "down" (UNAVAILABLE), "short" (a sealed batch of the wrong size),
        #: "forget" (answers every subscription as unknown).
        self.mode = "ok"
        self.ended: dict[str, str] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self.port = 0
        self._server: grpc.Server | None = None

    def start(self, port: int = 0) -> int:
        """Serve on ``port`` (0: a free one, or the one served before); the port."""
        server = grpc.server(ThreadPoolExecutor(max_workers=8))
        node_pb2_grpc.add_DataNodeServicer_to_server(self, server)
        monitoring_pb2_grpc.add_MonitoringServicer_to_server(self, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{port or self.port}")
        server.start()
        self._server = server
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(None).wait()
            self._server = None

    def Describe(self, request: Any, context: Any) -> node_pb2.DescribeResponse:  # noqa: N802
        return node_pb2.DescribeResponse(
            node_id=self.node_id,
            department="court",
            chain="yrd",
            indicators=[node_pb2.Indicator(name="judgments_band", bands=["0", "1+"])],
            signals=self.signals,
        )

    def Score(self, request: Any, context: Any) -> node_pb2.ScoreResponse:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "a monitoring fake scores nothing")
        raise AssertionError("unreachable")

    def RevokeConsent(  # noqa: N802
        self, request: Any, context: Any
    ) -> node_pb2.RevokeConsentResponse:
        return node_pb2.RevokeConsentResponse(node_id=self.node_id, newly_revoked=True)

    def AddCheckpoint(self, request: Any, context: Any) -> node_pb2.AddCheckpointResponse:  # noqa: N802
        context.abort(grpc.StatusCode.NOT_FOUND, "this fake node is no witness")
        raise AssertionError("unreachable")

    def Watch(  # noqa: N802
        self, request: monitoring_pb2.WatchRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.WatchResponse:
        if self.mode == "down":
            context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        signed = SignedSubscription.from_json(parse_canonical(request.subscription))
        with self._lock:
            self.watch_requests.append(request)
            new = signed.subscription_id not in self.watched
            if new:
                self.watched[signed.subscription_id] = _Watched(signed.alert_key, signed.digest())
        return monitoring_pb2.WatchResponse(node_id=self.node_id, newly_registered=new)

    def raise_event(self, subscription_id: str, signal: Signal = Signal.COURT_JUDGMENT) -> str:
        with self._lock:
            self._seq += 1
            event = AlertEvent(
                id=event_id(self.node_id, subscription_id, self._seq, signal),
                seq=self._seq,
                signal=signal,
                severity=SIGNAL_RULES[signal].severity,
                observed_at=date(2026, 11, 30),
                snapshot=self._seq,
                indicator="judgments_band",
                before="0",
                after="1+",
            )
            self.watched[subscription_id].events.append((event, None))
            return event.id

    def Monitor(  # noqa: N802
        self, request: monitoring_pb2.MonitorRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.MonitorResponse:
        if self.mode == "down":
            context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        reply = monitoring_pb2.MonitorResponse(node_id=self.node_id)
        with self._lock:
            self.monitor_requests.append(request)
            for item in request.subscriptions:
                sid = item.subscription_id
                watched = self.watched.get(sid)
                if watched is None or watched.digest != item.digest or self.mode == "forget":
                    reply.unknown.append(sid)
                    continue
                if sid in self.ended:
                    reply.ended.append(
                        monitoring_pb2.EndedSubscription(
                            subscription_id=sid, reason=self.ended[sid]
                        )
                    )
                    continue
                ack = request.acknowledged_cycle
                watched.events = [(e, c) for e, c in watched.events if c is None or c > ack]
                batch = [e for e, _ in watched.events[:4]]
                watched.events = [
                    (e, request.cycle if k < 4 else c) for k, (e, c) in enumerate(watched.events)
                ]
                plain = AlertBatch(
                    sid, self.node_id, request.cycle, tuple(batch), len(watched.events) > 4
                ).to_plaintext()
                sealed = watched.alert_key.seal(plain, batch_info(sid, self.node_id, request.cycle))
                if self.mode == "short":
                    sealed = sealed[:100]
                reply.batches.append(monitoring_pb2.SealedBatch(subscription_id=sid, sealed=sealed))
        return reply


@contextmanager
def serving(node: FakeNode) -> Iterator[str]:
    """The fake node on a thread-pool grpc server; its address (``stop``/``start``
    take the server down and up again on the same port, as a node host restarting)."""
    port = node.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        node.stop()


class Harness:
    """The running coordinator with a bank (bank-1, certified), a second bank (bank-2,
    not certified) and an operator, and helpers that go through the public API."""

    def __init__(
        self,
        app: FastAPI,
        client: httpx.Client,
        clock: Clock,
        nodes: list[FakeNode],
        url: str = "http://testserver",
    ):
        self.app = app
        self.url = url
        self.client = client
        self.clock = clock
        self.nodes = nodes
        self.services: Services = app.state.services
        signers = authority()
        services = self.services
        participants = services.participants
        bank = participants.register(signers.bank_id, "bank", "Bank")
        services.credentials.add(bank, signers.bank_credential, None)
        self.bank_key = participants.issue_key(signers.bank_id).api_key
        participants.register("bank-2", "bank", "Other bank")
        self.other_bank_key = participants.issue_key("bank-2").api_key
        participants.register("ops", "operator", "Operator")
        self.operator_key = participants.issue_key("ops").api_key
        self.signing, _ = signers.enterprise(USCC)
        participants.register(
            ENTERPRISE,
            "enterprise",
            "Ent",
            uscc=USCC,
            signing_key=self.signing.verify_key.to_text(),
        )
        self.enterprise_key = participants.issue_key(ENTERPRISE).api_key
        self.alert_key = AlertPrivateKey.generate()

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.bank_key}"}

    def consent(
        self,
        *,
        purpose: Purpose = Purpose.POST_LOAN_MONITORING,
        grantee: str | None = None,
        valid_until: datetime | None = None,
        chains: tuple[Chain, ...] = tuple(Chain),
    ) -> str:
        now = self.clock()
        grant = ConsentGrant.create(
            USCC,
            grantee or authority().bank_id,
            purpose,
            now - timedelta(minutes=1),
            valid_until or now + timedelta(days=30),
            chains=chains,
        )
        services = self.services
        services.consents.grant(grant.sign(self.signing), services.participants.get(ENTERPRISE))
        return grant.consent_id

    def body(
        self,
        consent_id: str,
        signals: list[dict[str, Any]] | None = None,
        *,
        subscription_id: str | None = None,
        chains: list[str] | None = None,
        alert_key: AlertPublicKey | None = None,
    ) -> dict[str, Any]:
        """A POST /v1/subscriptions body signed by bank-1 (placeholders for signals that
        cannot be signed: the coordinator refuses those before any signature check)."""
        signals = signals if signals is not None else [{"type": "court_judgment"}]
        key = alert_key or self.alert_key.public_key()
        sid = subscription_id or secrets.token_hex(16)
        now = datetime.now(UTC).replace(microsecond=0)
        body: dict[str, Any] = {
            "subscription_id": sid,
            "uscc": USCC,
            "consent_id": consent_id,
            "signals": signals,
            "alert_key": key.to_text(),
            "requested_at": format_time(now),
        }
        if chains is not None:
            body["chains"] = chains
        try:
            choices = [SignalChoice.of(s["type"], s.get("threshold")) for s in signals]
            document = subscription_document(
                subscription_id=sid,
                requester=authority().bank_id,
                uscc=USCC,
                consent_id=consent_id,
                chains=chains or [],
                signals=choices,
                alert_key=key,
                time=now,
            )
            signature = SignedSubscription.sign(document, authority().bank_key).to_json()
            body["signature"] = signature["signature"]
        except CreditShareError:
            body["signature"] = base64.b64encode(bytes(64)).decode("ascii")
        return body

    def subscribe(self, consent_id: str, **kwargs: Any) -> Any:
        return self.client.post(
            "/v1/subscriptions", json=self.body(consent_id, **kwargs), headers=self.headers()
        )

    def cycle(self) -> dict[str, Any]:
        response = self.client.post(
            "/v1/monitoring/cycles", headers=self.headers(self.operator_key)
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def records(self) -> list[tuple[str, dict[str, Any]]]:
        """Every ledger record with its subject (whose access log shows it), oldest first."""
        storage = self.services.ledger_storage
        return [
            (leaf.subject, parse_canonical(leaf.data)) for leaf in storage.leaves(0, storage.size())
        ]

    def written(self) -> tuple[int, int, int]:
        """Ledger size, subscription rows, registration rows: to show nothing was written."""
        with self.services.engine.connect() as conn:
            subs = conn.execute(select(func.count()).select_from(SubscriptionRow)).scalar()
            regs = conn.execute(select(func.count()).select_from(RegistrationRow)).scalar()
        return self.services.ledger.size(), int(subs or 0), int(regs or 0)


@contextmanager
def harness(
    tmp_path: Path,
    nodes: Sequence[FakeNode] = (),
    database_url: str | None = None,
    *,
    real_http: bool = False,
    **settings: Any,
) -> Iterator[Harness]:
    """A coordinator over ``nodes`` (default: one fake court node raising court_judgment),
    cycles only on demand; ``real_http``: served by uvicorn, the client talks real HTTP."""
    nodes = list(nodes) or [FakeNode()]
    init_log_key(tmp_path / "log.pem")
    with contextlib.ExitStack() as stack:
        addresses = [stack.enter_context(serving(n)) for n in nodes]
        defaults: dict[str, Any] = {
            "database_url": database_url or f"sqlite:///{tmp_path / 'c.db'}",
            "log_signing_key_file": tmp_path / "log.pem",
            "allow_insecure": True,
            "node_deadline_seconds": 5,
            "monitoring_interval_seconds": 0,
            "witness_interval_seconds": 0,
            "revocation_relay_interval_seconds": 0,
            # The banks' webhook receivers in these tests listen on loopback.
            "webhook_allowed_networks": ["127.0.0.0/8"],
            "nodes": [
                {"id": n.node_id, "chain": "yrd", "department": "court", "address": a}
                for n, a in zip(nodes, addresses, strict=True)
            ],
        }
        config = CoordinatorSettings(**(defaults | settings))
        clock = Clock()
        app = create_app(config, clock=clock)
        if not real_http:
            with TestClient(app) as client:
                yield Harness(app, client, clock, nodes)
            return
        url = stack.enter_context(serve_in_thread(app))
        http = stack.enter_context(httpx.Client(base_url=url, timeout=60))
        yield Harness(app, http, clock, nodes, url)
