"""A node's Training service answers only under a recorded "training" ledger entry."""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import pytest
from sqlmodel import Session, select

from creditshare.crypto import Ciphertext, PrivateKey
from creditshare.federated import (
    BureauParty,
    BureauRun,
    Preprocessing,
    PsiParty,
    TrainingConfig,
    bureau_request,
    evaluation_scores,
    train,
)
from creditshare.ledger import Ledger, LogSigner, MemoryLedgerStorage, Receipt
from creditshare.ledger._records import RecordKind
from creditshare.node import NodeSettings, build_server, refusal_log_entries
from creditshare.node._storage import ModelShardRow, RecordStore, ShardStore, make_engine
from creditshare.proto import (
    node_pb2,
    node_pb2_grpc,
    settings_to_pb,
    training_pb2,
    training_pb2_grpc,
)

from .._authority import authority
from .._psi_pages import node_points
from .conftest import receipt_message, scored_partial, tax_node

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.training_pb2_grpc import TrainingAsyncStub

SETTINGS = settings_to_pb(TrainingConfig())
LOG = LogSigner.generate()
LEDGER = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))
trusted = {"size": 0}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> NodeSettings:
    return tax_node(tmp_path_factory.mktemp("training-node"), data_dir, LOG)


@pytest.fixture
async def stub(settings: NodeSettings) -> AsyncIterator[TrainingAsyncStub]:
    server, port = await build_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield training_pb2_grpc.TrainingStub(channel)
    finally:
        await server.stop(None)


def _receipt(
    job_id: str,
    key: PrivateKey,
    kind: RecordKind = "training",
    config: TrainingConfig | None = None,
) -> node_pb2.QueryReceipt:
    """The receipt of a job the bureau signed for ``config`` (default: the defaults)."""
    record = authority().training_record(
        job_id, key.public_key.fingerprint(), ("yrd-tax",), config, kind=kind
    )
    receipt: Receipt = LEDGER.append(record.to_bytes(), "training")
    old = trusted["size"]
    trusted["size"] = receipt.head.size
    return receipt_message(receipt, old, LEDGER)


def _psi(job_id: str, key: PrivateKey, receipt: node_pb2.QueryReceipt | None) -> Any:
    party = PsiParty(b"test-domain")
    request = training_pb2.PsiAnswerRequest(
        credentials=authority().training_credentials(),
        job_id=job_id,
        domain=b"test-domain",
        blinded=list(bureau_request(party, ["91350100M000100Y43"]).blinded),
        public_key=node_pb2.PaillierPublicKey(n=key.public_key.to_bytes()),
    )
    if receipt is not None:
        request.receipt.CopyFrom(receipt)
    return request


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


def _chunk(
    job: str,
    key: PrivateKey,
    receipt: node_pb2.QueryReceipt,
    offset: int,
    blinded: list[bytes],
    more: bool,
) -> training_pb2.PsiAnswerRequest:
    """One chunk of a streamed run: the first carries the receipt, the others only points."""
    first = offset == 0
    request = _psi(job, key, receipt) if first else training_pb2.PsiAnswerRequest(job_id=job)
    request.domain = b"capped"
    request.blinded[:] = blinded
    request.offset, request.more = offset, more
    return request


async def test_psi_streams_sets_larger_than_one_message_may_carry(
    settings: NodeSettings, bank_key: PrivateKey
) -> None:
    """A channel that takes at most 1 KiB a message from the node (~30 points): the
    node's set does not fit one, and a page of the whole set is refused, yet chunks and
    pages of 10 points give the exact intersection over the real gRPC server."""
    held = sorted(RecordStore(make_engine(settings.database_url)).all())
    assert len(held) * 32 > 2 * 1024
    bureau_ids = held[::2] + [f"91{i:016d}" for i in range(50)]  # some unknown
    capped = [("grpc.max_receive_message_length", 1024)]
    server, port = await build_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=capped) as channel:
            stub = training_pb2_grpc.TrainingStub(channel)
            job = uuid.uuid4().hex
            receipt = _receipt(job, bank_key)
            run = BureauRun(b"capped", bureau_ids)
            chunks = 0
            for part in run.chunks(10):
                request = _chunk(job, bank_key, receipt, part.offset, part.blinded, part.more)
                reply = await stub.PsiAnswer(request)
                run.answered(part.offset, list(reply.double_blinded), reply.node_set_size)
                chunks += 1
            assert chunks > 2 and reply.node_set_size == len(held)
            # The whole set in one page would be over the cap: refused by the channel.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PsiPoints(
                    training_pb2.PsiPointsRequest(job_id=job, offset=0, limit=len(held))
                )
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # That page was computed and sent, so the run moved on: a new job starts over.
            job = uuid.uuid4().hex
            receipt = _receipt(job, bank_key)
            run = BureauRun(b"capped", bureau_ids)
            for part in run.chunks(10):
                request = _chunk(job, bank_key, receipt, part.offset, part.blinded, part.more)
                reply = await stub.PsiAnswer(request)
                run.answered(part.offset, list(reply.double_blinded), reply.node_set_size)
            offset, last, pages = 0, False, 0
            while not last:
                page = await stub.PsiPoints(
                    training_pb2.PsiPointsRequest(job_id=job, offset=offset, limit=10)
                )
                run.match(offset, list(page.node_blinded), page.node_set_size)
                offset, last, pages = offset + len(page.node_blinded), page.last, pages + 1
            assert pages == -(-len(held) // 10)
            assert list(run.result()) == held[::2]
    finally:
        await server.stop(None)


async def test_psi_needs_a_training_receipt(stub: TrainingAsyncStub, bank_key: PrivateKey) -> None:
    job = uuid.uuid4().hex
    assert await _code(stub.PsiAnswer(_psi(job, bank_key, None))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # A query's receipt is not a training job's.
    query = _receipt(job, bank_key, kind="query")
    assert await _code(stub.PsiAnswer(_psi(job, bank_key, query))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Another job's receipt neither.
    other = _receipt(uuid.uuid4().hex, bank_key)
    assert await _code(stub.PsiAnswer(_psi(job, bank_key, other))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


async def test_psi_answers_once_per_job_and_open_claims_the_receipt(
    stub: TrainingAsyncStub, bank_key: PrivateKey
) -> None:
    job = uuid.uuid4().hex
    receipt = _receipt(job, bank_key)
    reply = await stub.PsiAnswer(_psi(job, bank_key, receipt))
    assert reply.node_set_size > 0 and len(reply.double_blinded) == 1
    node_blinded = await node_points(stub, job)
    again = node_pb2.QueryReceipt()
    again.CopyFrom(receipt)
    again.consistency_from = trusted["size"]
    del again.consistency_proof[:]
    assert await _code(stub.PsiAnswer(_psi(job, bank_key, again))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    points = node_blinded[:40]
    opened = training_pb2.OpenJobRequest(
        credentials=authority().training_credentials(),
        job_id=job,
        public_key=node_pb2.PaillierPublicKey(n=bank_key.public_key.to_bytes()),
        points=points,
        receipt=again,
        settings=SETTINGS,
    )
    assert (await stub.OpenJob(opened)).rows == 40
    assert await _code(stub.OpenJob(opened)) == grpc.StatusCode.PERMISSION_DENIED
    # Closed (or expired, or the node restarted), the job is gone from memory, but its
    # claimed receipt still refuses a second alignment: no fresh run to probe ids with.
    await stub.CloseJob(training_pb2.CloseJobRequest(job_id=job))
    assert await _code(stub.PsiAnswer(_psi(job, bank_key, again))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Opened with a key other than the one recorded: refused.
    other_key = PrivateKey.generate()
    job2 = uuid.uuid4().hex
    receipt2 = _receipt(job2, bank_key)
    await stub.PsiAnswer(_psi(job2, bank_key, receipt2))
    await node_points(stub, job2)
    swapped = training_pb2.OpenJobRequest(
        credentials=authority().training_credentials(),
        job_id=job2,
        public_key=node_pb2.PaillierPublicKey(n=other_key.public_key.to_bytes()),
        points=points,
        receipt=receipt2,
        settings=SETTINGS,
    )
    swapped.receipt.consistency_from = trusted["size"]
    del swapped.receipt.consistency_proof[:]
    assert await _code(stub.OpenJob(swapped)) == grpc.StatusCode.PERMISSION_DENIED


def _workers() -> set[int]:
    """Live multiprocessing-spawn children of this process (the in-process node's job
    workers)."""
    me = os.getpid()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as handle:
                state, ppid = handle.read().rsplit(")", 1)[1].split()[:2]
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                spawned = b"spawn_main" in handle.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(ppid) == me and state != "Z" and spawned:
            found.add(int(name))
    return found


async def _opening(
    stub: TrainingAsyncStub,
    key: PrivateKey,
    rows: int = 40,
    config: TrainingConfig | None = None,
    settings: training_pb2.TrainingSettings | None = None,
) -> training_pb2.OpenJobRequest:
    """A job aligned on the node (PSI) and the OpenJob over ``rows`` of its records: the
    bureau signed ``config``; the message carries ``settings`` (default: ``config``'s)."""
    job = uuid.uuid4().hex
    receipt = _receipt(job, key, config=config)
    await stub.PsiAnswer(_psi(job, key, receipt))
    node_blinded = await node_points(stub, job)
    again = node_pb2.QueryReceipt()
    again.CopyFrom(receipt)
    again.consistency_from = trusted["size"]
    del again.consistency_proof[:]
    return training_pb2.OpenJobRequest(
        credentials=authority().training_credentials(),
        job_id=job,
        public_key=node_pb2.PaillierPublicKey(n=key.public_key.to_bytes()),
        points=node_blinded[:rows],
        receipt=again,
        settings=settings if settings is not None else settings_to_pb(config or TrainingConfig()),
    )


async def _open(
    stub: TrainingAsyncStub,
    key: PrivateKey,
    rows: int = 40,
    config: TrainingConfig | None = None,
    settings: training_pb2.TrainingSettings | None = None,
) -> str:
    """A job opened on the node (PSI, then OpenJob over ``rows`` of its records)."""
    opened = await _opening(stub, key, rows, config, settings)
    assert (await stub.OpenJob(opened)).rows == rows
    return opened.job_id


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 120.0
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_an_idle_job_is_dropped_by_the_sweep_and_its_workers_stop(
    settings: NodeSettings, bank_key: PrivateKey
) -> None:
    """No other job opens: the periodic sweep alone drops the job and stops its workers."""
    # Long enough that a busy machine still opens the job and sees its worker before the
    # job idles out; the test then waits (up to 120 s) for the sweep, not for a time.
    short = settings.model_copy(
        update={"training_job_idle_seconds": 10.0, "training_encryption_workers": 1}
    )
    server, port = await build_server(short)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = training_pb2_grpc.TrainingStub(channel)
            before = _workers()
            job = await _open(stub, bank_key)
            mine = _workers() - before
            assert mine, "the job started no worker process"
            await _until(lambda: not (mine & _workers()), "the job's workers to stop")
            forward = training_pb2.ForwardRequest(job_id=job, rows=[0])
            assert await _code(stub.Forward(forward)) == grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(None)


def _shard_jobs(settings: NodeSettings, model_id: str) -> list[str | None]:
    with Session(make_engine(settings.database_url)) as session:
        rows = session.exec(select(ModelShardRow).where(ModelShardRow.model_id == model_id))
        return [r.job_id for r in rows]


async def test_dropping_a_job_discards_only_the_shard_it_kept(
    stub: TrainingAsyncStub, settings: NodeSettings, bank_key: PrivateKey
) -> None:
    kept = await _open(stub, bank_key)
    other = await _open(stub, bank_key)
    await stub.CloseJob(training_pb2.CloseJobRequest(job_id=kept, model_id="kept-then-dropped"))
    await stub.CloseJob(training_pb2.CloseJobRequest(job_id=other, model_id="kept-for-good"))
    assert _shard_jobs(settings, "kept-then-dropped") == [kept]
    # The coordinator could not register the model: it tells the node to drop the job.
    for _ in range(2):  # idempotent
        await stub.CloseJob(training_pb2.CloseJobRequest(job_id=kept))
        assert _shard_jobs(settings, "kept-then-dropped") == []
    assert _shard_jobs(settings, "kept-for-good") == [other]
    # The id is free on the node again: a new job may keep a shard under it.
    again = await _open(stub, bank_key)
    await stub.CloseJob(training_pb2.CloseJobRequest(job_id=again, model_id="kept-then-dropped"))
    assert _shard_jobs(settings, "kept-then-dropped") == [again]


async def test_out_of_range_training_messages_are_refused(
    stub: TrainingAsyncStub, bank_key: PrivateKey
) -> None:
    job = await _open(stub, bank_key)
    bad: list[Any] = [
        stub.Forward(training_pb2.ForwardRequest(job_id="j" * 65, rows=[0])),
        stub.Forward(training_pb2.ForwardRequest(job_id=job, rows=[])),
        stub.MaskedGradient(
            training_pb2.MaskedGradientRequest(job_id=job, rows=[0], residuals=[b"x" * 1101])
        ),
        stub.MaskedGradient(
            training_pb2.MaskedGradientRequest(job_id=job, rows=[0, 1], residuals=[b"x"])
        ),
        stub.ApplyGradient(
            training_pb2.ApplyGradientRequest(
                job_id=job, values=["1"], randomness=[b"\x01"], batch_size=1, rate=math.nan
            )
        ),
        stub.ApplyGradient(
            training_pb2.ApplyGradientRequest(
                job_id=job, values=["1"], randomness=[b"\x01"], batch_size=0, rate=0.1
            )
        ),
        stub.ApplyGradient(
            training_pb2.ApplyGradientRequest(
                job_id=job, values=["1"] * 10_001, randomness=[b"\x01"], batch_size=1, rate=0.1
            )
        ),
        stub.CloseJob(training_pb2.CloseJobRequest(job_id=job, model_id="Not An Id")),
        stub.PsiAnswer(training_pb2.PsiAnswerRequest(job_id="p", domain=b"d", blinded=[b"x" * 65])),
    ]
    for call in bad:
        assert await _code(call) == grpc.StatusCode.INVALID_ARGUMENT
    bad_settings = training_pb2.TrainingSettings()
    bad_settings.CopyFrom(SETTINGS)
    bad_settings.learning_rate = math.inf
    opened = training_pb2.OpenJobRequest(
        credentials=authority().training_credentials(),
        job_id=uuid.uuid4().hex,
        public_key=node_pb2.PaillierPublicKey(n=bank_key.public_key.to_bytes()),
        points=[b"p"],
        settings=bad_settings,
    )
    assert await _code(stub.OpenJob(opened)) == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing changed: the job still serves, and is still open.
    reply = await stub.Forward(training_pb2.ForwardRequest(job_id=job, rows=[0, 1]))
    assert len(reply.ciphertexts) == 2
    await stub.CloseJob(training_pb2.CloseJobRequest(job_id=job))


async def _refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


@pytest.mark.parametrize(
    ("field", "value"),
    [("mask_bits", 64), ("feature_clip", -1.0), ("batch_size", 0), ("test_fraction", 2.0)],
)
async def test_a_node_refuses_weak_or_out_of_range_settings_by_name(
    stub: TrainingAsyncStub, bank_key: PrivateKey, field: str, value: float
) -> None:
    """The coordinator validated the settings; the node validates them again (the same
    TrainingConfig), so a coordinator cannot talk it into thin masks."""
    weak = training_pb2.TrainingSettings()
    weak.CopyFrom(SETTINGS)
    setattr(weak, field, value)
    code, details = await _refusal(_open(stub, bank_key, settings=weak))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"training setting {field}" in details


async def test_a_node_refuses_an_open_without_settings(
    stub: TrainingAsyncStub, bank_key: PrivateKey
) -> None:
    code, details = await _refusal(_open(stub, bank_key, settings=training_pb2.TrainingSettings()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "training setting" in details
    job = uuid.uuid4().hex
    receipt = _receipt(job, bank_key)
    await stub.PsiAnswer(_psi(job, bank_key, receipt))
    node_blinded = await node_points(stub, job)
    receipt.consistency_from = trusted["size"]
    del receipt.consistency_proof[:]
    request = training_pb2.OpenJobRequest(
        credentials=authority().training_credentials(),
        job_id=job,
        public_key=node_pb2.PaillierPublicKey(n=bank_key.public_key.to_bytes()),
        points=node_blinded[:40],
        receipt=receipt,
    )
    code, details = await _refusal(stub.OpenJob(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "settings is required" in details


@pytest.mark.parametrize(
    ("field", "value"),
    [("feature_clip", 0.0), ("seed", 7), ("packing", False), ("l2", 1.0), ("score_bits", 24)],
)
async def test_a_node_refuses_settings_other_than_the_signed_ones(
    stub: TrainingAsyncStub, settings: NodeSettings, bank_key: PrivateKey, field: str, value: Any
) -> None:
    """Valid settings, but not the ones the bureau signed (their hash is in the signed
    job): refused, logged, and the job's receipt is not used up by the attempt."""
    changed = training_pb2.TrainingSettings()
    changed.CopyFrom(SETTINGS)
    setattr(changed, field, value)
    opened = await _opening(stub, bank_key, settings=changed)
    code, details = await _refusal(stub.OpenJob(opened))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "training settings" in details
    logged = [r for r in refusal_log_entries(settings) if r.request_id == opened.job_id]
    assert [(r.rpc, r.status) for r in logged] == [("OpenJob", "PERMISSION_DENIED")]
    # The bureau's own settings still open the job.
    opened.settings.CopyFrom(SETTINGS)
    assert (await stub.OpenJob(opened)).rows == 40
    await stub.CloseJob(training_pb2.CloseJobRequest(job_id=opened.job_id))


@pytest.mark.parametrize("field", ["feature_clip", "packing", "seed", "learning_rate_decay"])
async def test_a_node_refuses_settings_with_a_field_missing(
    stub: TrainingAsyncStub, bank_key: PrivateKey, field: str
) -> None:
    """proto3 has no presence: a field left out reads as 0 (or False), in range for these
    (unclipped, unpacked, seed 0, no decay); the signed hash is what catches it."""
    missing = training_pb2.TrainingSettings()
    missing.CopyFrom(SETTINGS)
    missing.ClearField(field)  # type: ignore[arg-type]
    opened = await _opening(stub, bank_key, settings=missing)
    code, details = await _refusal(stub.OpenJob(opened))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "training settings" in details


async def test_a_node_opens_a_job_with_the_signed_non_default_settings(
    stub: TrainingAsyncStub, bank_key: PrivateKey
) -> None:
    """The other side of the check: settings that differ from the defaults but are the
    signed ones open the job."""
    config = TrainingConfig(feature_clip=0.0, packing=False, seed=0, l2=0.5)
    job = await _open(stub, bank_key, config=config)
    await stub.CloseJob(training_pb2.CloseJobRequest(job_id=job))


@pytest.mark.parametrize("clip", [2.0, 0.0])
async def test_the_preprocessing_kept_is_the_one_trained(
    stub: TrainingAsyncStub, settings: NodeSettings, bank_key: PrivateKey, clip: float
) -> None:
    """The shard keeps the weights on the transformed features and the transformation
    fitted over the node's records at OpenJob (clip 0: standardised, not clipped)."""
    config = TrainingConfig(feature_clip=clip)
    job = await _open(stub, bank_key, config=config)
    model_id = f"kept-preprocessing-{int(clip)}"
    await stub.CloseJob(training_pb2.CloseJobRequest(job_id=job, model_id=model_id))
    engine = make_engine(settings.database_url)
    shard = ShardStore(engine).load()[model_id]
    department = settings.department_schema
    features = department.features
    names = [f.name for f in features]
    records = RecordStore(engine).all().values()
    matrix = [[department.feature_values(r)[n] for n in names] for r in records]
    flags = [f.clipped for f in features]
    expected = Preprocessing.fit(names, np.array(matrix), flags, clip)
    assert shard.preprocessing == expected
    assert all((f.clip is None) == (clip == 0) for f in expected.features if f.scale != 1.0)
    assert shard.offset == 0.0 and set(shard.weights) == set(names)


class GrpcHost:
    """A HostEndpoint over the node's real Training service (a blocking channel: the
    protocol runs in a worker thread while the node serves on the event loop)."""

    def __init__(self, channel: grpc.Channel, job_id: str, key: PrivateKey, ids: list[str]):
        self._stub = training_pb2_grpc.TrainingStub(channel)
        self._job = job_id
        self._key = key.public_key
        self._position = {uscc: k for k, uscc in enumerate(ids)}

    @property
    def name(self) -> str:
        return "yrd-tax"

    def _rows(self, ids: Any) -> list[int]:
        return [self._position[i] for i in ids]

    def _ciphertexts(self, reply: Any) -> list[Ciphertext]:
        return [Ciphertext.from_bytes(self._key, c) for c in reply.ciphertexts]

    def forward(self, ids: Any) -> list[Ciphertext]:
        request = training_pb2.ForwardRequest(job_id=self._job, rows=self._rows(ids))
        return self._ciphertexts(self._stub.Forward(request))

    def forward_packed(self, ids: Any, slot_bits: int, additions: int) -> list[Ciphertext]:
        request = training_pb2.ForwardRequest(
            job_id=self._job, rows=self._rows(ids), slot_bits=slot_bits, additions=additions
        )
        return self._ciphertexts(self._stub.Forward(request))

    def masked_gradient(self, ids: Any, residuals: Any) -> list[Ciphertext]:
        request = training_pb2.MaskedGradientRequest(
            job_id=self._job, rows=self._rows(ids), residuals=[r.to_bytes() for r in residuals]
        )
        return self._ciphertexts(self._stub.MaskedGradient(request))

    def apply_gradient(self, masked_plain: Any, proofs: Any, batch_size: int, rate: float) -> None:
        self._stub.ApplyGradient(
            training_pb2.ApplyGradientRequest(
                job_id=self._job,
                values=[str(v) for v in masked_plain],
                randomness=[r.to_bytes((r.bit_length() + 7) // 8 or 1, "big") for r in proofs],
                batch_size=batch_size,
                rate=rate,
            )
        )


async def test_a_bank_is_scored_with_the_model_training_evaluated(
    settings: NodeSettings, bank_key: PrivateKey
) -> None:
    """A small job through the real node (2048-bit keys), kept as a model; the node's
    Score RPC for an aligned enterprise decrypts to the plaintext Σ w·pre(x) of its kept
    shard to 1e-6, and to the score training evaluated for that row."""
    key = bank_key  # the bureau's key in this test
    config = TrainingConfig(batch_size=32, max_epochs=1, learning_rate=0.5)
    engine = make_engine(settings.database_url)
    records = RecordStore(engine).all()
    wanted = sorted(records)[:96]
    rng = np.random.default_rng(5)
    labels = {uscc: int(k % 3 == 0) for k, uscc in enumerate(rng.permutation(wanted))}
    server, port = await build_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = training_pb2_grpc.TrainingStub(channel)
            # PSI as the bureau runs it: which of the node's points are the wanted ids.
            job = uuid.uuid4().hex
            receipt = _receipt(job, key, config=config)
            party = PsiParty(b"score-domain")
            request = _psi(job, key, receipt)
            request.domain = b"score-domain"
            request.blinded[:] = list(bureau_request(party, wanted).blinded)
            reply = await stub.PsiAnswer(request)
            paged = await node_points(stub, job)
            theirs = dict(zip(party.reblind(paged), paged, strict=True))
            double = list(reply.double_blinded)
            points = {u: theirs[d] for u, d in zip(wanted, double, strict=True) if d in theirs}
            aligned = [u for u in wanted if u in points]
            assert len(aligned) == len(wanted)
            receipt.consistency_from = trusted["size"]
            del receipt.consistency_proof[:]
            opened = training_pb2.OpenJobRequest(
                credentials=authority().training_credentials(),
                job_id=job,
                public_key=node_pb2.PaillierPublicKey(n=key.public_key.to_bytes()),
                points=[points[u] for u in aligned],
                receipt=receipt,
                settings=settings_to_pb(config),
            )
            assert (await stub.OpenJob(opened)).rows == len(aligned)

            def run() -> tuple[BureauParty, np.ndarray]:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as blocking:
                    host = GrpcHost(blocking, job, key, aligned)
                    bureau = BureauParty(labels, key, config)
                    train(bureau, [host], aligned[:64], aligned[64:], config)
                    return bureau, evaluation_scores(bureau, [host], aligned[64:], config)

            bureau, evaluated = await asyncio.to_thread(run)
            await stub.CloseJob(training_pb2.CloseJobRequest(job_id=job, model_id="scored-model"))

            shard = ShardStore(engine).load()["scored-model"]
            department = settings.department_schema
            node = node_pb2_grpc.DataNodeStub(channel)
            scale = 10**9
            for k in (0, 5):
                uscc = aligned[64 + k]
                plain = shard.partial_score(department.feature_values(records[uscc]))
                # Training evaluated exactly this (to its 2^-30 fixed point).
                assert abs(evaluated[k] - bureau.intercept - plain) < 1e-8
                partial = await scored_partial(node, uscc, "scored-model", key, scale, LEDGER)
                assert abs(partial - plain) < 1e-6
            assert any(w != 0.0 for w in shard.weights.values())
    finally:
        await server.stop(None)
