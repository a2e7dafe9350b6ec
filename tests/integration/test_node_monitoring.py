"""A real court node's Monitoring service: Watch registers only a subscription the bank
signed under the enterprise's post_loan_monitoring consent and its ledger receipt;
Monitor answers only under the cycle's receipt, one fixed-size sealed batch per
subscription served, which opens only with the bank's alert key."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from creditshare._canonical import canonical_json
from creditshare.consent import ConsentRevocation, Purpose, SignedConsent
from creditshare.crypto import (
    SEAL_OVERHEAD,
    AlertPrivateKey,
    SealedOpenError,
    SigningKey,
    VerifyKey,
)
from creditshare.identity.uscc import make_uscc
from creditshare.ledger import Ledger, LogSigner, MemoryLedgerStorage, QueryRecord
from creditshare.monitoring import (
    BATCH_BYTES,
    AlertBatch,
    SignalChoice,
    batch_info,
    cycle_digest,
    node_digest,
)
from creditshare.node import NodeSettings, build_server, import_into_node, refusal_log_entries
from creditshare.proto import monitoring_pb2, monitoring_pb2_grpc, node_pb2, node_pb2_grpc
from creditshare.signed import SignedSubscription, subscription_document

from .._authority import TestAuthority
from .conftest import receipt_message

LOG = LogSigner.generate()
LEDGER = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))
NODE = "yrd-court"
A = str(make_uscc("9", "1", "350100", "M0001000"))
B = str(make_uscc("9", "1", "110000", "10000000"))
ALERT_KEY = AlertPrivateKey.generate()
#: Every sealed batch: the padded plaintext and HPKE's encapsulated key and tag.
SEALED_BYTES = BATCH_BYTES + SEAL_OVERHEAD


def _csv(folder: Path, name: str, rows: dict[str, tuple[int, int]]) -> Path:
    path = folder / name
    lines = ["uscc,judgments_as_defendant,dishonest_debtor"]
    lines += [f"{uscc},{j},{d}" for uscc, (j, d) in rows.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def signers(tmp_path: Path) -> TestAuthority:
    return TestAuthority(tmp_path / "authority")


@pytest.fixture
def settings(tmp_path: Path, signers: TestAuthority, database_url: str) -> NodeSettings:
    """A court node on SQLite and on PostgreSQL (its monitoring tables are storage)."""
    settings = NodeSettings(
        node_id=NODE,
        department="court",
        chain="yrd",
        listen="127.0.0.1:0",
        database_url=database_url,
        log_public_key=VerifyKey.from_cryptography(LOG.public_key).to_text(),
        allow_insecure=True,
        credential_ca=signers.ca_cert,
        revocation_max_age_seconds=3600.0,
    )
    import_into_node(settings, [_csv(tmp_path, "court-1.csv", {A: (0, 0), B: (0, 0)})])
    return settings


class Node:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.server: grpc.aio.Server | None = None
        self.channel: grpc.aio.Channel | None = None
        self.monitoring: Any = None
        self.node: Any = None

    async def start(self) -> None:
        self.server, port = await build_server(self.settings)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.monitoring = monitoring_pb2_grpc.MonitoringStub(self.channel)
        self.node = node_pb2_grpc.DataNodeStub(self.channel)

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.server is not None:
            await self.server.stop(None)


@pytest.fixture
async def node(settings: NodeSettings) -> AsyncIterator[Node]:
    running = Node(settings)
    await running.start()
    yield running
    await running.stop()


def _subscription(
    signers: TestAuthority,
    consent: SignedConsent,
    *,
    bank_key: SigningKey | None = None,
    signals: tuple[str, ...] = ("court_judgment", "dishonest_debtor"),
) -> SignedSubscription:
    return SignedSubscription.sign(
        subscription_document(
            subscription_id=uuid.uuid4().hex,
            requester=signers.bank_id,
            uscc=consent.grant.uscc,
            consent_id=consent.grant.consent_id,
            chains=(),
            signals=[SignalChoice.of(s) for s in signals],
            alert_key=ALERT_KEY.public_key(),
            time=datetime.now(UTC),
        ),
        bank_key or signers.bank_key,
    )


def _monitoring_consent(signers: TestAuthority, uscc: str, **kwargs: Any) -> SignedConsent:
    return signers.consent(uscc, purpose=Purpose.POST_LOAN_MONITORING.value, **kwargs)


def _subscription_record(
    signed: SignedSubscription, consent: SignedConsent, **overrides: Any
) -> QueryRecord:
    """As an honest coordinator records it (``overrides``: a dishonest one)."""
    fields: dict[str, Any] = {
        "kind": "subscription",
        "query_id": signed.subscription_id,
        "time": datetime.now(UTC).replace(microsecond=0),
        "uscc": signed.uscc,
        "requester": signed.requester,
        "requester_role": "bank",
        "purpose": "post_loan_monitoring",
        "consent_id": signed.consent_id,
        "model_id": "",
        "key_fingerprint": signed.alert_key.fingerprint(),
        "chains": tuple(sorted(c.value for c in consent.grant.chains)),
        "indicators": consent.grant.indicators,
        "request": signed.to_json(),
        "consent": consent.to_json(),
    }
    return QueryRecord(**(fields | overrides))


async def _receipt(node: Node, record: QueryRecord, subject: str) -> node_pb2.QueryReceipt:
    logged = LEDGER.append(record.to_bytes(), subject)
    trusted = (await node.node.Describe(node_pb2.DescribeRequest())).trusted_tree_size
    return receipt_message(logged, trusted, LEDGER)


async def _watch(
    node: Node,
    signers: TestAuthority,
    signed: SignedSubscription,
    record: QueryRecord,
) -> monitoring_pb2.WatchResponse:
    response: monitoring_pb2.WatchResponse = await node.monitoring.Watch(
        monitoring_pb2.WatchRequest(
            subscription=canonical_json(signed.to_json()),
            receipt=await _receipt(node, record, signed.uscc),
            credentials=signers.credentials(signed.uscc),
        )
    )
    return response


async def _watched(
    node: Node, signers: TestAuthority, uscc: str, **kwargs: Any
) -> tuple[SignedSubscription, SignedConsent]:
    consent = _monitoring_consent(signers, uscc, **kwargs)
    signed = _subscription(signers, consent)
    assert (
        await _watch(node, signers, signed, _subscription_record(signed, consent))
    ).newly_registered
    return signed, consent


async def _refused(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


def _cycle_record(number: int, nodes: dict[str, str], **overrides: Any) -> QueryRecord:
    fields: dict[str, Any] = {
        "kind": "monitoring_cycle",
        "query_id": uuid.uuid4().hex,
        "time": datetime.now(UTC).replace(microsecond=0),
        "uscc": "",
        "requester": "coordinator",
        "requester_role": "operator",
        "purpose": "post_loan_monitoring",
        "consent_id": "",
        "model_id": "",
        "key_fingerprint": "",
        "chains": ("yrd",),
        "indicators": (),
        "cycle": {"number": number, "digest": cycle_digest(nodes), "nodes": sorted(nodes)},
    }
    return QueryRecord(**(fields | overrides))


async def _monitor(
    node: Node,
    signers: TestAuthority,
    number: int,
    subscriptions: dict[str, str],
    *,
    acknowledged: int = 0,
    nodes: dict[str, str] | None = None,
    record: QueryRecord | None = None,
) -> monitoring_pb2.MonitorResponse:
    """Cycle ``number`` as the coordinator asks it (``nodes``: every node's digest as the
    request and, unless ``record`` is given, its ledger entry say; default: this node's
    true one)."""
    nodes = nodes or {NODE: node_digest(subscriptions)}
    record = record or _cycle_record(number, nodes)
    response: monitoring_pb2.MonitorResponse = await node.monitoring.Monitor(
        monitoring_pb2.MonitorRequest(
            cycle=number,
            receipt=await _receipt(node, record, "monitoring"),
            subscriptions=[
                monitoring_pb2.CycleSubscription(subscription_id=sid, digest=digest)
                for sid, digest in sorted(subscriptions.items())
            ],
            node_digests=[
                monitoring_pb2.NodeDigest(node_id=n, digest=d) for n, d in sorted(nodes.items())
            ],
            acknowledged_cycle=acknowledged,
            credentials=signers.credentials(),
        )
    )
    return response


def _opened(sealed: monitoring_pb2.SealedBatch, number: int) -> AlertBatch:
    plaintext = ALERT_KEY.open(sealed.sealed, batch_info(sealed.subscription_id, NODE, number))
    return AlertBatch.from_plaintext(plaintext)


# -- Watch ---------------------------------------------------------------------------------


async def test_describe_advertises_the_signals_the_schema_raises(node: Node) -> None:
    described = await node.node.Describe(node_pb2.DescribeRequest())
    assert list(described.signals) == ["court_judgment", "dishonest_debtor"]


async def test_watch_registers_a_signed_consented_subscription_once(
    node: Node, signers: TestAuthority
) -> None:
    consent = _monitoring_consent(signers, A)
    signed = _subscription(signers, consent)
    record = _subscription_record(signed, consent)
    first = await _watch(node, signers, signed, record)
    assert (first.node_id, first.newly_registered, first.watching_from_snapshot) == (
        NODE,
        True,
        1,
    )
    again = await _watch(node, signers, signed, record)
    assert not again.newly_registered and again.watching_from_snapshot == 1


async def test_watch_refuses_a_subscription_the_bank_did_not_sign(
    node: Node, signers: TestAuthority
) -> None:
    consent = _monitoring_consent(signers, A)
    forged = _subscription(signers, consent, bank_key=SigningKey.generate())
    code, detail = await _refused(
        _watch(node, signers, forged, _subscription_record(forged, consent))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "not signed by 'bank-1'" in detail
    logged = [r for r in refusal_log_entries(node.settings) if r.rpc == "Watch"]
    assert [r.request_id for r in logged] == [forged.subscription_id]


async def test_watch_refuses_a_consent_of_another_purpose(
    node: Node, signers: TestAuthority
) -> None:
    consent = signers.consent(A, purpose=Purpose.PRE_LOAN_REVIEW.value)
    signed = _subscription(signers, consent)
    code, detail = await _refused(
        _watch(node, signers, signed, _subscription_record(signed, consent))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "purpose" in detail


async def test_watch_refuses_a_revoked_consent(node: Node, signers: TestAuthority) -> None:
    consent = _monitoring_consent(signers, A, valid_until=datetime.now(UTC) + timedelta(days=9))
    enterprise_key, credential = signers.enterprise(A)
    revocation = ConsentRevocation.create(
        consent.grant.consent_id, A, datetime.now(UTC), enterprise_key
    )
    await node.node.RevokeConsent(
        node_pb2.RevokeConsentRequest(
            revocation=canonical_json(revocation.to_json()),
            credentials=node_pb2.Credentials(
                enterprise=[credential], revocation_lists=[signers.crl]
            ),
        )
    )
    signed = _subscription(signers, consent)
    code, detail = await _refused(
        _watch(node, signers, signed, _subscription_record(signed, consent))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in detail


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"kind": "query"}, "kind"),
        ({"chains": ("zsj",)}, "chain"),
        ({"key_fingerprint": "0" * 64}, "alert key"),
        ({"uscc": B}, "uscc"),
        ({"indicators": ("judgments_band",)}, "indicators"),
    ],
)
async def test_watch_refuses_a_record_that_does_not_say_what_was_signed(
    node: Node, signers: TestAuthority, overrides: dict[str, Any], named: str
) -> None:
    consent = _monitoring_consent(signers, A)
    signed = _subscription(signers, consent)
    code, detail = await _refused(
        _watch(node, signers, signed, _subscription_record(signed, consent, **overrides))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and named in detail


async def test_watch_refuses_a_subscription_to_signals_this_node_does_not_raise(
    node: Node, signers: TestAuthority
) -> None:
    consent = _monitoring_consent(signers, A)
    signed = _subscription(signers, consent, signals=("tax_downgrade",))
    code, detail = await _refused(
        _watch(node, signers, signed, _subscription_record(signed, consent))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "raises: court_judgment, dishonest_debtor" in detail


# -- Monitor -------------------------------------------------------------------------------


async def test_monitor_answers_one_equal_sized_sealed_batch_per_subscription(
    node: Node, signers: TestAuthority, tmp_path: Path
) -> None:
    judged, _ = await _watched(node, signers, A)
    quiet, _ = await _watched(node, signers, B)
    import_into_node(node.settings, [_csv(tmp_path, "court-2.csv", {A: (1, 0), B: (0, 0)})])
    subscriptions = {s.subscription_id: s.digest() for s in (judged, quiet)}
    answer = await _monitor(node, signers, 1, subscriptions)
    assert answer.node_id == NODE and not answer.unknown and not answer.ended
    assert [b.subscription_id for b in answer.batches] == sorted(subscriptions)
    assert {len(b.sealed) for b in answer.batches} == {SEALED_BYTES}
    opened = {b.subscription_id: _opened(b, 1) for b in answer.batches}
    (event,) = opened[judged.subscription_id].events
    assert (event.signal.value, event.seq, event.before, event.after) == (
        "court_judgment",
        1,
        "none",
        "1",
    )
    assert opened[quiet.subscription_id].events == ()
    # Bound to its subscription, node and cycle: under another cycle's info it does not open.
    sealed = answer.batches[0]
    with pytest.raises(SealedOpenError):
        ALERT_KEY.open(sealed.sealed, batch_info(sealed.subscription_id, NODE, 2))
    with pytest.raises(SealedOpenError):
        AlertPrivateKey.generate().open(sealed.sealed, batch_info(sealed.subscription_id, NODE, 1))
    # Unacknowledged, the event comes again; acknowledged, it is gone.
    again = await _monitor(node, signers, 2, subscriptions)
    assert [len(_opened(b, 2).events) for b in again.batches] == [
        len(opened[b.subscription_id].events) for b in again.batches
    ]
    done = await _monitor(node, signers, 3, subscriptions, acknowledged=2)
    assert [len(_opened(b, 3).events) for b in done.batches] == [0, 0]
    assert {len(b.sealed) for b in done.batches} == {SEALED_BYTES}


async def test_monitor_names_unknown_and_ended_subscriptions(
    node: Node, signers: TestAuthority
) -> None:
    served, _ = await _watched(node, signers, A)
    revoked, consent = await _watched(node, signers, B)
    enterprise_key, credential = signers.enterprise(B)
    revocation = ConsentRevocation.create(
        consent.grant.consent_id, B, datetime.now(UTC), enterprise_key
    )
    await node.node.RevokeConsent(
        node_pb2.RevokeConsentRequest(
            revocation=canonical_json(revocation.to_json()),
            credentials=node_pb2.Credentials(
                enterprise=[credential], revocation_lists=[signers.crl]
            ),
        )
    )
    never = "e" * 32
    subscriptions = {
        served.subscription_id: served.digest(),
        revoked.subscription_id: revoked.digest(),
        never: "d" * 64,
    }
    answer = await _monitor(node, signers, 1, subscriptions)
    assert [b.subscription_id for b in answer.batches] == [served.subscription_id]
    assert list(answer.unknown) == [never]
    assert [(e.subscription_id, e.reason) for e in answer.ended] == [
        (revoked.subscription_id, "consent revoked")
    ]


async def test_monitor_refuses_a_cycle_its_receipt_does_not_commit_to(
    node: Node, signers: TestAuthority
) -> None:
    served, _ = await _watched(node, signers, A)
    subscriptions = {served.subscription_id: served.digest()}
    # The receipt commits to another subscription set for this node.
    other = {NODE: node_digest({served.subscription_id: "0" * 64})}
    code, detail = await _refused(_monitor(node, signers, 1, subscriptions, nodes=other))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert detail.endswith("monitoring cycle: node digest")
    # The request's node digests are not those the recorded cycle digest covers.
    code, detail = await _refused(
        _monitor(node, signers, 1, subscriptions, record=_cycle_record(1, other))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and detail.endswith("cycle digest")
    # Another cycle's number, and a record of another kind.
    mine = {NODE: node_digest(subscriptions)}
    code, detail = await _refused(
        _monitor(node, signers, 1, subscriptions, record=_cycle_record(2, mine))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "cycle number" in detail
    code, detail = await _refused(
        _monitor(node, signers, 1, subscriptions, record=_cycle_record(1, mine, kind="query"))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "kind" in detail
    # A cycle digest over other nodes than the record names.
    tampered = _cycle_record(1, mine | {"sh-court": "1" * 64})
    code, detail = await _refused(_monitor(node, signers, 1, subscriptions, record=tampered))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "nodes" in detail
    assert len((await _monitor(node, signers, 1, subscriptions)).batches) == 1


async def test_monitor_refuses_a_cycle_that_goes_back(node: Node, signers: TestAuthority) -> None:
    served, _ = await _watched(node, signers, A)
    subscriptions = {served.subscription_id: served.digest()}
    await _monitor(node, signers, 5, subscriptions)
    again = await _monitor(node, signers, 5, subscriptions)  # a retry: answered again
    assert len(again.batches) == 1
    code, detail = await _refused(_monitor(node, signers, 4, subscriptions))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "never go back" in detail


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"acknowledged_cycle": 7}, "acknowledged_cycle 7 must be below cycle 7"),
        ({"cycle": 0}, "cycle must be a positive number"),
    ],
)
async def test_monitor_refuses_malformed_requests(
    node: Node, signers: TestAuthority, change: dict[str, Any], reason: str
) -> None:
    request = monitoring_pb2.MonitorRequest(**({"cycle": 7} | change))
    code, detail = await _refused(node.monitoring.Monitor(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and reason in detail


@pytest.mark.parametrize(
    ("subscriptions", "reason"),
    [
        (["b" * 32, "a" * 32], "subscriptions must be sorted by id, each once"),
        (["a" * 32, "a" * 32], "subscriptions must be sorted by id, each once"),
        (["A" * 32], "subscriptions[0].subscription_id must be 32 hex digits"),
    ],
)
async def test_monitor_refuses_malformed_subscription_lists(
    node: Node, subscriptions: list[str], reason: str
) -> None:
    request = monitoring_pb2.MonitorRequest(
        cycle=1,
        subscriptions=[
            monitoring_pb2.CycleSubscription(subscription_id=sid, digest="0" * 64)
            for sid in subscriptions
        ],
    )
    code, detail = await _refused(node.monitoring.Monitor(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and reason in detail


@pytest.mark.parametrize(
    ("subscription", "reason"),
    [
        (b"", "subscription is required"),
        (b"x" * 9000, "subscription is over 8192 bytes"),
        (b"{not json", "subscription must be JSON {document, signature}"),
    ],
)
async def test_watch_refuses_malformed_subscriptions(
    node: Node, signers: TestAuthority, subscription: bytes, reason: str
) -> None:
    request = monitoring_pb2.WatchRequest(
        subscription=subscription, credentials=signers.credentials(A)
    )
    code, detail = await _refused(node.monitoring.Watch(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and reason in detail


async def test_watch_without_a_receipt_is_refused(node: Node, signers: TestAuthority) -> None:
    signed = _subscription(signers, _monitoring_consent(signers, A))
    request = monitoring_pb2.WatchRequest(
        subscription=canonical_json(signed.to_json()), credentials=signers.credentials(A)
    )
    code, detail = await _refused(node.monitoring.Watch(request))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "receipt" in detail


async def test_a_cycle_whose_answer_could_not_fit_one_message_is_refused_saying_so(
    node: Node,
) -> None:
    """16 000 sealed batches fit the 64 MiB a gRPC message may carry; a node asked for
    more could not send its answer, so it says why instead."""
    from creditshare.node.monitoring import _service

    limit = _service.MAX_CYCLE_BATCHES

    def asking(count: int) -> monitoring_pb2.MonitorRequest:
        return monitoring_pb2.MonitorRequest(
            cycle=1,
            subscriptions=[
                monitoring_pb2.CycleSubscription(subscription_id=f"{k:032x}", digest="0" * 64)
                for k in range(count)
            ],
        )

    largest = monitoring_pb2.MonitorResponse(
        node_id="n" * 64,
        batches=[
            monitoring_pb2.SealedBatch(subscription_id=f"{k:032x}", sealed=bytes(SEALED_BYTES))
            for k in range(limit)
        ],
    )
    assert largest.ByteSize() <= 64 * 1024 * 1024
    code, detail = await _refused(node.monitoring.Monitor(asking(limit + 1)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "must fit one 64 MiB" in detail
    code, detail = await _refused(node.monitoring.Monitor(asking(limit)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "receipt" in detail
