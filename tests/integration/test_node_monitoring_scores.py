"""score_change on a real court node: Watch takes the bank's Paillier key only when it is
the key the bank signed; each cycle, Monitor answers Enc(the node's share of the model's
linear score) for every served subscription watching score_change whose model the node
holds a shard of, under that key, the same size whether or not it holds a record."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from creditshare._canonical import canonical_json
from creditshare.crypto import Ciphertext, FixedPointEncoding, PrivateKey, VerifyKey
from creditshare.departments import DEFAULT_MODEL_ID, DEFAULT_WEIGHTS, get_department
from creditshare.errors import CapacityError
from creditshare.federated import ModelShard
from creditshare.identity.uscc import make_uscc
from creditshare.monitoring import AlertBatch, SignalChoice, node_digest
from creditshare.node import NodeSettings, import_into_node
from creditshare.node._storage import make_engine
from creditshare.node.monitoring import (
    CyclePlan,
    MonitoringService,
    MonitoringStore,
    PlannedBatch,
    PlannedScore,
)
from creditshare.proto import monitoring_pb2, node_pb2
from creditshare.signed import SignedSubscription, subscription_document

from .._authority import TestAuthority
from .test_node_monitoring import (
    ALERT_KEY,
    LOG,
    NODE,
    SEALED_BYTES,
    A,
    B,
    Node,
    _csv,
    _cycle_record,
    _monitoring_consent,
    _receipt,
    _refused,
    _subscription_record,
    signers,  # noqa: F401 - fixture
)

SCALE = 10**6
#: A model none of this node's shards belong to (trained elsewhere).
ELSEWHERE = "elsewhere-v1"
#: Neither A nor B: this node holds no record of it.
NOBODY = str(make_uscc("9", "1", "310000", "30000000"))
ROWS = {A: (2, 1), B: (0, 0)}


@pytest.fixture
def settings(tmp_path: Path, signers: TestAuthority, database_url: str) -> NodeSettings:  # noqa: F811
    settings = NodeSettings(
        node_id=NODE,
        department="court",
        chain="yrd",
        listen="127.0.0.1:0",
        database_url=database_url,
        models={DEFAULT_MODEL_ID: {"weights": dict(DEFAULT_WEIGHTS["court"])}},
        log_public_key=VerifyKey.from_cryptography(LOG.public_key).to_text(),
        allow_insecure=True,
        credential_ca=signers.ca_cert,
        revocation_max_age_seconds=3600.0,
    )
    import_into_node(settings, [_csv(tmp_path, "court-1.csv", ROWS)])
    return settings


@pytest.fixture
async def node(settings: NodeSettings) -> AsyncIterator[Node]:
    running = Node(settings)
    await running.start()
    yield running
    await running.stop()


def _registered(settings: NodeSettings, subscription_id: str) -> bool:
    engine = make_engine(settings.database_url)
    try:
        return (
            MonitoringStore(engine, lambda: datetime.now(UTC)).subscription(subscription_id)
            is not None
        )
    finally:
        engine.dispose()


def _expected(uscc: str) -> float:
    """The node's plaintext share, from the shard's weights and the schema's features."""
    court = get_department("court")
    judgments, dishonest = ROWS[uscc]
    record = {"judgments_as_defendant": judgments, "dishonest_debtor": dishonest}
    return ModelShard(DEFAULT_WEIGHTS["court"]).partial_score(court.feature_values(record))


def _scored(
    signers: TestAuthority,  # noqa: F811
    uscc: str,
    key: PrivateKey,
    *,
    model_id: str = DEFAULT_MODEL_ID,
    signals: tuple[str, ...] = ("court_judgment", "score_change"),
    fingerprint: str | None = None,
) -> tuple[SignedSubscription, Any]:
    consent = _monitoring_consent(signers, uscc)
    scored = "score_change" in signals
    signed = SignedSubscription.sign(
        subscription_document(
            subscription_id=uuid.uuid4().hex,
            requester=signers.bank_id,
            uscc=uscc,
            consent_id=consent.grant.consent_id,
            chains=(),
            signals=[SignalChoice.of(s) for s in signals],
            alert_key=ALERT_KEY.public_key(),
            time=datetime.now(UTC),
            model_id=model_id if scored else "",
            key_fingerprint=(fingerprint or key.public_key.fingerprint()) if scored else "",
        ),
        signers.bank_key,
    )
    return signed, consent


async def _watch(
    node: Node,
    signers: TestAuthority,  # noqa: F811
    signed: SignedSubscription,
    consent: Any,
    key: PrivateKey | None,
) -> monitoring_pb2.WatchResponse:
    request = monitoring_pb2.WatchRequest(
        subscription=canonical_json(signed.to_json()),
        receipt=await _receipt(node, _subscription_record(signed, consent), signed.uscc),
        credentials=signers.credentials(signed.uscc),
    )
    if key is not None:
        request.public_key.CopyFrom(node_pb2.PaillierPublicKey(n=key.public_key.to_bytes()))
    response: monitoring_pb2.WatchResponse = await node.monitoring.Watch(request)
    return response


async def _monitor(
    node: Node,
    signers: TestAuthority,  # noqa: F811
    number: int,
    subscriptions: list[SignedSubscription],
    scale: int = SCALE,
) -> monitoring_pb2.MonitorResponse:
    pairs = {s.subscription_id: s.digest() for s in subscriptions}
    nodes = {NODE: node_digest(pairs)}
    response: monitoring_pb2.MonitorResponse = await node.monitoring.Monitor(
        monitoring_pb2.MonitorRequest(
            cycle=number,
            receipt=await _receipt(node, _cycle_record(number, nodes), "monitoring"),
            subscriptions=[
                monitoring_pb2.CycleSubscription(subscription_id=sid, digest=digest)
                for sid, digest in sorted(pairs.items())
            ],
            node_digests=[monitoring_pb2.NodeDigest(node_id=NODE, digest=nodes[NODE])],
            credentials=signers.credentials(),
            scale=scale,
        )
    )
    return response


def _decrypted(key: PrivateKey, share: monitoring_pb2.EncryptedScore) -> float:
    ciphertext = Ciphertext.from_bytes(key.public_key, share.partial_score)
    return FixedPointEncoding(SCALE).decrypt(ciphertext, key)


async def test_scores_are_answered_for_scored_subscriptions_of_models_held_here(
    node: Node,
    signers: TestAuthority,  # noqa: F811
    bank_key: PrivateKey,
    tmp_path: Path,
) -> None:
    judged, consent_a = _scored(signers, A, bank_key)
    quiet, consent_b = _scored(signers, B, bank_key)
    unrecorded, consent_n = _scored(signers, NOBODY, bank_key)
    elsewhere, consent_e = _scored(signers, A, bank_key, model_id=ELSEWHERE)
    plain, consent_p = _scored(signers, A, bank_key, signals=("court_judgment",))
    for signed, consent, key in [
        (judged, consent_a, bank_key),
        (quiet, consent_b, bank_key),
        (unrecorded, consent_n, bank_key),
        (elsewhere, consent_e, bank_key),
        (plain, consent_p, None),
    ]:
        assert (await _watch(node, signers, signed, consent, key)).newly_registered
    served = [judged, quiet, unrecorded, elsewhere, plain]
    answer = await _monitor(node, signers, 1, served)
    # One sealed batch for every one of them, a score share only for those watching
    # score_change of the model this node holds, in request (id) order.
    assert len(answer.batches) == len(served)
    expected = sorted(s.subscription_id for s in (judged, quiet, unrecorded))
    assert [s.subscription_id for s in answer.scores] == expected
    shares = {s.subscription_id: s for s in answer.scores}
    # Full width whether or not the node holds a record of the enterprise.
    assert {len(s.partial_score) for s in answer.scores} == {bank_key.public_key.ciphertext_length}
    resolution = FixedPointEncoding(SCALE).resolution
    assert _expected(A) != 0.0
    assert abs(_decrypted(bank_key, shares[judged.subscription_id]) - _expected(A)) <= resolution
    assert abs(_decrypted(bank_key, shares[quiet.subscription_id]) - _expected(B)) <= resolution
    assert _decrypted(bank_key, shares[unrecorded.subscription_id]) == 0.0
    # Fresh encryptions: the same share again is not the same ciphertext.
    again = await _monitor(node, signers, 2, served)
    assert [s.subscription_id for s in again.scores] == expected
    assert {s.partial_score for s in again.scores}.isdisjoint(
        {s.partial_score for s in answer.scores}
    )
    # A new snapshot changes the share the next cycle answers.
    import_into_node(node.settings, [_csv(tmp_path, "court-2.csv", {A: (5, 1)})])
    moved = {s.subscription_id: s for s in (await _monitor(node, signers, 3, served)).scores}
    assert _decrypted(bank_key, moved[judged.subscription_id]) != pytest.approx(_expected(A))
    assert _decrypted(bank_key, moved[quiet.subscription_id]) == pytest.approx(_expected(B))


async def test_a_score_change_subscription_on_a_node_without_the_model_is_kept_for_its_signals(
    node: Node,
    signers: TestAuthority,  # noqa: F811
    bank_key: PrivateKey,
) -> None:
    signed, consent = _scored(signers, A, bank_key, model_id=ELSEWHERE)
    assert (await _watch(node, signers, signed, consent, bank_key)).newly_registered
    answer = await _monitor(node, signers, 1, [signed])
    assert len(answer.batches) == 1 and not answer.scores
    # Only score_change, of a model this node holds no shard of: nothing it raises.
    only, consent = _scored(signers, A, bank_key, model_id=ELSEWHERE, signals=("score_change",))
    code, detail = await _refused(_watch(node, signers, only, consent, bank_key))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "raises" in detail
    # Only score_change, of the model it holds: registered, answered.
    held, consent = _scored(signers, A, bank_key, signals=("score_change",))
    assert (await _watch(node, signers, held, consent, bank_key)).newly_registered


async def test_watch_refuses_a_key_other_than_the_one_the_bank_signed(
    node: Node,
    signers: TestAuthority,  # noqa: F811
    bank_key: PrivateKey,
) -> None:
    signed, consent = _scored(signers, A, bank_key, fingerprint="0" * 16)
    code, detail = await _refused(_watch(node, signers, signed, consent, bank_key))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "not the key the bank signed" in detail and "key_fingerprint 0000000000000000" in detail
    assert not _registered(node.settings, signed.subscription_id)


async def test_watch_refuses_a_score_change_subscription_without_a_key(
    node: Node,
    signers: TestAuthority,  # noqa: F811
    bank_key: PrivateKey,
) -> None:
    signed, consent = _scored(signers, A, bank_key)
    code, detail = await _refused(_watch(node, signers, signed, consent, None))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "public_key is required" in detail
    assert not _registered(node.settings, signed.subscription_id)


async def test_monitor_refuses_a_scored_cycle_without_a_scale_and_changes_nothing(
    node: Node,
    signers: TestAuthority,  # noqa: F811
    bank_key: PrivateKey,
) -> None:
    signed, consent = _scored(signers, A, bank_key)
    await _watch(node, signers, signed, consent, bank_key)
    code, detail = await _refused(_monitor(node, signers, 1, [signed], scale=0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "scale is required" in detail
    code, detail = await _refused(_monitor(node, signers, 1, [signed], scale=10**13))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "scale must be between" in detail
    # Refused before anything was written: cycle 1 can still be answered, not a retry.
    answer = await _monitor(node, signers, 1, [signed])
    assert len(answer.batches) == 1 and len(answer.scores) == 1
    # A cycle with no scored subscription needs no scale.
    plain, consent = _scored(signers, B, bank_key, signals=("court_judgment",))
    await _watch(node, signers, plain, consent, None)
    assert len((await _monitor(node, signers, 2, [plain], scale=0)).batches) == 1


class _Engine:
    """Holds one model: all the size check asks a ScoreEngine."""

    model_ids = (DEFAULT_MODEL_ID,)


def _service() -> MonitoringService:
    nothing: Any = None
    engine: Any = _Engine()
    return MonitoringService(
        NODE, get_department("court"), nothing, nothing, nothing, nothing, engine
    )


def test_an_answer_that_could_not_fit_one_message_with_its_scores_is_refused_before_writing(
    bank_key: PrivateKey,
) -> None:
    """16 000 sealed batches fit a 64 MiB message, not with a 2048-bit score share each:
    the node refuses the plan (nothing written yet) instead of failing to send it."""
    key = bank_key.public_key.to_text()

    def plan(count: int, scored: int) -> CyclePlan:
        batches = [
            PlannedBatch(ALERT_KEY.public_key().to_text(), AlertBatch(f"{k:032x}", NODE, 1, ()))
            for k in range(count)
        ]
        scores = [PlannedScore(f"{k:032x}", A, DEFAULT_MODEL_ID, key) for k in range(scored)]
        return CyclePlan(batches=batches, scores=scores)

    service = _service()
    service._settle_scores(plan(16_000, 0), SCALE)
    service._settle_scores(plan(12_000, 12_000), SCALE)
    with pytest.raises(CapacityError, match="would not fit one 64 MiB message"):
        service._settle_scores(plan(16_000, 16_000), SCALE)
    # The estimate bounds what is really sent: the largest answer allowed fits.
    largest = monitoring_pb2.MonitorResponse(
        node_id="n" * 64,
        batches=[
            monitoring_pb2.SealedBatch(subscription_id=f"{k:032x}", sealed=bytes(SEALED_BYTES))
            for k in range(12_000)
        ],
        scores=[
            monitoring_pb2.EncryptedScore(
                subscription_id=f"{k:032x}",
                partial_score=bytes(bank_key.public_key.ciphertext_length),
            )
            for k in range(12_000)
        ],
    )
    assert largest.ByteSize() <= 64 * 1024 * 1024
    # Scores of a model this node holds no shard of are not its to answer.
    elsewhere = plan(1, 1)
    elsewhere.scores = [PlannedScore("0" * 32, A, ELSEWHERE, key)]
    service._settle_scores(elsewhere, SCALE)
    assert elsewhere.scores == []
