"""A real node whose own schema has a WOE-binned category: the label-sum round over gRPC,
the order it must come in, and a bank scored with exactly the table training used.

The node (a schema file of its own, no code) refuses to compute before its WOE tables
are set; the bureau sends Enc(y) for the fit rows only; the kept shard carries the
table, and the node's Score RPC decrypts to the plaintext model with that table to 1e-6.
"""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import pytest
from sqlmodel import Session

from creditshare.crypto import Ciphertext, FastEncryptor, FixedPointEncoding, PrivateKey, VerifyKey
from creditshare.federated import (
    BureauParty,
    FeatureTransform,
    LevelGroups,
    ModelShard,
    Preprocessing,
    PsiParty,
    TrainingConfig,
    WoeFeature,
    WoeTable,
    bureau_request,
    evaluation_scores,
    share_level_sums,
    train,
)
from creditshare.identity.uscc import make_uscc
from creditshare.ledger import Ledger, LogSigner, MemoryLedgerStorage, Receipt
from creditshare.node import NodeSettings, build_server, import_into_node
from creditshare.node._authority_store import RefusalLog
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
from .conftest import receipt_message, scored_partial

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.training_pb2_grpc import TrainingAsyncStub

LOG = LogSigner.generate()
LEDGER = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))
trusted = {"size": 0}
NODE = "yrd-registry"
LEVELS = ("farming", "mining", "trade", "services", "fishing")

SCHEMA = textwrap.dedent(
    """
    id = "registry"
    display_name = "Business registry"

    [[columns]]
    name = "industry"
    type = "category"
    levels = ["farming", "mining", "trade", "services", "fishing"]

    [[columns]]
    name = "staff"
    type = "integer"
    min = 0

    [[features]]
    name = "industry_woe"
    column = "industry"
    encoding = "woe"
    min_rows = 20

    [[features]]
    name = "staff"
    column = "staff"
    """
)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> NodeSettings:
    """A node of a department declared only by its schema file, with 240 records: no
    "fishing" enterprise among the first 200 (the ones trained on)."""
    folder = tmp_path_factory.mktemp("woe-node")
    (folder / "registry.toml").write_text(SCHEMA, encoding="utf-8")
    rng = np.random.default_rng(3)
    lines = ["uscc,industry,staff"]
    for k in range(240):
        uscc = make_uscc("9", "1", "350100", f"{k:08d}").code
        level = (
            "fishing"
            if k >= 200 and k % 5 == 0
            else LEVELS[int(rng.choice(4, p=[0.4, 0.3, 0.2, 0.1]))]
        )
        lines.append(f"{uscc},{level},{int(rng.integers(1, 500))}")
    (folder / "registry.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = NodeSettings(
        node_id=NODE,
        schema_file=folder / "registry.toml",
        chain="yrd",
        listen="127.0.0.1:0",
        database_url=f"sqlite:///{folder / 'node.db'}",
        log_public_key=VerifyKey.from_cryptography(LOG.public_key).to_text(),
        allow_insecure=True,
        credential_ca=authority().ca_cert,
    )
    import_into_node(settings, [folder / "registry.csv"])
    return settings


@pytest.fixture
async def port(settings: NodeSettings) -> AsyncIterator[int]:
    server, bound = await build_server(settings)
    try:
        yield bound
    finally:
        await server.stop(None)


def _receipt(job_id: str, key: PrivateKey, config: TrainingConfig) -> node_pb2.QueryReceipt:
    """The receipt of a job the bureau signed for ``config``."""
    record = authority().training_record(job_id, key.public_key.fingerprint(), (NODE,), config)
    receipt: Receipt = LEDGER.append(record.to_bytes(), "training")
    old = trusted["size"]
    trusted["size"] = receipt.head.size
    return receipt_message(receipt, old, LEDGER)


async def _open(
    stub: TrainingAsyncStub, key: PrivateKey, wanted: list[str], config: TrainingConfig
) -> tuple[str, list[str], training_pb2.OpenJobResponse]:
    """PSI and OpenJob as the bureau runs them; the job id and its aligned ids."""
    job = uuid.uuid4().hex
    receipt = _receipt(job, key, config)
    party = PsiParty(b"woe-domain")
    request = training_pb2.PsiAnswerRequest(
        credentials=authority().training_credentials(),
        job_id=job,
        domain=b"woe-domain",
        blinded=list(bureau_request(party, wanted).blinded),
        public_key=node_pb2.PaillierPublicKey(n=key.public_key.to_bytes()),
        receipt=receipt,
    )
    reply = await stub.PsiAnswer(authority().sign_psi(request, NODE))
    paged = await node_points(stub, job)
    theirs = dict(zip(party.reblind(paged), paged, strict=True))
    points = {
        u: theirs[d] for u, d in zip(wanted, reply.double_blinded, strict=True) if d in theirs
    }
    aligned = [u for u in wanted if u in points]
    receipt.consistency_from = trusted["size"]
    del receipt.consistency_proof[:]
    opened = await stub.OpenJob(
        training_pb2.OpenJobRequest(
            credentials=authority().training_credentials(),
            job_id=job,
            public_key=node_pb2.PaillierPublicKey(n=key.public_key.to_bytes()),
            points=[points[u] for u in aligned],
            receipt=receipt,
            settings=settings_to_pb(config),
        )
    )
    return job, aligned, opened


class WoeHost:
    """HostEndpoint and LevelSumsEndpoint over the node's real Training service."""

    def __init__(self, channel: grpc.Channel, job_id: str, key: PrivateKey, ids: list[str]):
        self._stub = training_pb2_grpc.TrainingStub(channel)
        self._job = job_id
        self._key = key.public_key
        self._position = {uscc: k for k, uscc in enumerate(ids)}
        self.sent_rows: list[list[int]] = []

    @property
    def name(self) -> str:
        return NODE

    def _rows(self, ids: Sequence[str]) -> list[int]:
        return [self._position[i] for i in ids]

    def _ciphertexts(self, reply: Any) -> list[Ciphertext]:
        return [Ciphertext.from_bytes(self._key, c) for c in reply.ciphertexts]

    @staticmethod
    def _proofs(proofs: Sequence[int]) -> list[bytes]:
        return [r.to_bytes((r.bit_length() + 7) // 8 or 1, "big") for r in proofs]

    def level_sums(
        self, ids: Sequence[str], labels: Sequence[Ciphertext], total: int, final: bool
    ) -> list[Ciphertext]:
        self.sent_rows.append(self._rows(ids))
        request = training_pb2.LevelSumsRequest(
            job_id=self._job,
            rows=self.sent_rows[-1],
            labels=[c.to_bytes() for c in labels],
            total=total,
            final=final,
        )
        return self._ciphertexts(self._stub.LevelSums(request))

    def apply_level_sums(self, masked_plain: Sequence[int], proofs: Sequence[int]) -> None:
        self._stub.ApplyLevelSums(
            training_pb2.ApplyLevelSumsRequest(
                job_id=self._job,
                values=[str(v) for v in masked_plain],
                randomness=self._proofs(proofs),
            )
        )

    def forward(self, ids: Sequence[str]) -> list[Ciphertext]:
        request = training_pb2.ForwardRequest(job_id=self._job, rows=self._rows(ids))
        return self._ciphertexts(self._stub.Forward(request))

    def forward_packed(
        self, ids: Sequence[str], slot_bits: int, additions: int
    ) -> list[Ciphertext]:
        request = training_pb2.ForwardRequest(
            job_id=self._job, rows=self._rows(ids), slot_bits=slot_bits, additions=additions
        )
        return self._ciphertexts(self._stub.Forward(request))

    def masked_gradient(
        self, ids: Sequence[str], residuals: Sequence[Ciphertext]
    ) -> list[Ciphertext]:
        request = training_pb2.MaskedGradientRequest(
            job_id=self._job, rows=self._rows(ids), residuals=[r.to_bytes() for r in residuals]
        )
        return self._ciphertexts(self._stub.MaskedGradient(request))

    def apply_gradient(
        self, masked_plain: Sequence[int], proofs: Sequence[int], batch_size: int, rate: float
    ) -> None:
        self._stub.ApplyGradient(
            training_pb2.ApplyGradientRequest(
                job_id=self._job,
                values=[str(v) for v in masked_plain],
                randomness=self._proofs(proofs),
                batch_size=batch_size,
                rate=rate,
            )
        )


async def _refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_a_woe_job_refuses_to_compute_before_its_tables_are_set(
    port: int, settings: NodeSettings, bank_key: PrivateKey
) -> None:
    wanted = sorted(RecordStore(make_engine(settings.database_url)).all())[:120]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = training_pb2_grpc.TrainingStub(channel)
        job, aligned, opened = await _open(stub, bank_key, wanted, TrainingConfig())
        assert opened.label_sums_needed and len(aligned) == 120
        forward = stub.Forward(training_pb2.ForwardRequest(job_id=job, rows=[0, 1]))
        code, details = await _refusal(forward)
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "WOE tables are not set" in details
        residual = FastEncryptor(bank_key.public_key).encrypt_encoded(1).to_bytes()
        gradient = training_pb2.MaskedGradientRequest(
            job_id=job, rows=list(range(40)), residuals=[residual] * 40
        )
        assert (await _refusal(stub.MaskedGradient(gradient)))[0] == (
            grpc.StatusCode.FAILED_PRECONDITION
        )
        apply = training_pb2.ApplyLevelSumsRequest(job_id=job, values=["1"], randomness=[b"\x01"])
        code, details = await _refusal(stub.ApplyLevelSums(apply))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "ask for the level sums" in details
        keep = training_pb2.CloseJobRequest(job_id=job, model_id="woe-too-early")
        assert (await _refusal(stub.CloseJob(keep)))[0] == grpc.StatusCode.FAILED_PRECONDITION
        # Refused, not dropped: the job is still there to be finished properly.
        too_many = training_pb2.LevelSumsRequest(
            job_id=job, rows=[0, 1], labels=[residual], total=2, final=True
        )
        code, details = await _refusal(stub.LevelSums(too_many))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "one ciphertext per row" in details
        # The refusal (out of order) is in the node's refusal log, with the RPC and job.
        refusals = RefusalLog(make_engine(settings.database_url), lambda: datetime.now(UTC))
        logged = {(r.rpc, r.request_id, r.status) for r in refusals.entries()}
        assert ("ApplyLevelSums", job, "FAILED_PRECONDITION") in logged
        await stub.CloseJob(training_pb2.CloseJobRequest(job_id=job))
        assert "woe-too-early" not in ShardStore(make_engine(settings.database_url)).load()


async def test_a_woe_job_trains_and_a_bank_is_scored_with_its_table(
    port: int, settings: NodeSettings, bank_key: PrivateKey
) -> None:
    key = bank_key
    engine = make_engine(settings.database_url)
    records = RecordStore(engine).all()
    wanted = sorted(records)[:200]  # no "fishing" enterprise among them
    department = settings.department_schema
    rng = np.random.default_rng(11)
    risk = {"farming": 0.1, "mining": 0.45, "trade": 0.25, "services": 0.6, "fishing": 0.3}
    labels = {u: int(rng.random() < risk[str(records[u]["industry"])]) for u in wanted}
    config = TrainingConfig(batch_size=32, max_epochs=2, learning_rate=0.5, feature_clip=2.0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = training_pb2_grpc.TrainingStub(channel)
        job, aligned, opened = await _open(stub, key, wanted, config)
        assert opened.label_sums_needed
        fit, valid = aligned[:150], aligned[150:]

        def run() -> tuple[BureauParty, np.ndarray, list[list[int]]]:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as blocking:
                host = WoeHost(blocking, job, key, aligned)
                share_level_sums(host, fit, labels, key, FastEncryptor(key.public_key))
                with pytest.raises(grpc.RpcError) as again:  # once per job
                    host.level_sums(
                        fit[:40],
                        [FastEncryptor(key.public_key).encrypt_encoded(0)] * 40,
                        150,
                        True,
                    )
                assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                bureau = BureauParty(labels, key, config)
                train(bureau, [host], fit, valid, config)
                return bureau, evaluation_scores(bureau, [host], valid, config), host.sent_rows

        bureau, evaluated, sent = await asyncio.to_thread(run)
        assert sent[0] == list(range(150))  # the fit rows only: never validation rows
        refusals = RefusalLog(engine, lambda: datetime.now(UTC)).entries()
        assert ("LevelSums", job, "FAILED_PRECONDITION") in {
            (r.rpc, r.request_id, r.status) for r in refusals
        }  # the second round, refused: in the node's refusal log
        await stub.CloseJob(training_pb2.CloseJobRequest(job_id=job, model_id="woe-model"))

        shard = ShardStore(engine).load()["woe-model"]
        assert shard.preprocessing is not None
        # Kept with how the schema derived each feature: a later schema is checked on it.
        derived = _stored_derivations(engine, "woe-model")
        assert derived["industry_woe"]["levels"] == list(LEVELS)
        assert derived["industry_woe"]["encoding"] == "woe"
        assert derived["staff"]["transform"] == "identity"
        woe_transform = shard.preprocessing.features[0]
        table = woe_transform.woe
        assert table is not None
        # The table is the plaintext WOE of the fit rows (levels pooled under 20 rows).
        levels = [LEVELS.index(str(records[u]["industry"])) for u in fit]
        groups = LevelGroups.of(WoeFeature("industry_woe", LEVELS, 20), levels)
        positives = [
            sum(
                labels[u]
                for u, lv in zip(fit, levels, strict=True)
                if groups.group_of_level[lv] == g
            )
            for g in range(len(groups.sizes))
        ]
        assert table == groups.table(positives)
        # "fishing" had no fit row: it is pooled, and scores with the pool's WOE.
        assert table.pooled[LEVELS.index("fishing")]
        assert table.values[LEVELS.index("fishing")] == table.other

        node = node_pb2_grpc.DataNodeStub(channel)
        scale = 10**9
        fishing = next(u for u in sorted(records) if records[u]["industry"] == "fishing")
        for k, uscc in [(0, valid[0]), (7, valid[7]), (None, fishing)]:
            values = department.feature_values(records[uscc])
            plain = shard.partial_score(values)
            # The plaintext model with the stored table, computed by hand.
            staff = shard.preprocessing.features[1]
            woe = table.values[int(values["industry_woe"])]
            by_hand = shard.weights["industry_woe"] * float(
                np.clip((woe - woe_transform.centre) / woe_transform.scale, -2.0, 2.0)
            ) + shard.weights["staff"] * float(
                np.clip((values["staff"] - staff.centre) / staff.scale, -2.0, 2.0)
            )
            assert abs(plain - by_hand) < 1e-9
            if k is not None:  # what training evaluated for this validation row
                assert abs(evaluated[k] - bureau.intercept - plain) < 1e-8
            partial = await scored_partial(node, uscc, "woe-model", key, scale, LEDGER)
            assert abs(partial - plain) < 1e-6
        assert shard.weights["industry_woe"] != 0.0


def _stored_derivations(engine: Any, model_id: str) -> dict[str, Any]:
    with Session(engine) as session:
        row = session.get(ModelShardRow, model_id)
        assert row is not None and row.preprocessing is not None
        return dict(row.preprocessing["schema"])


#: Three shards as CloseJob keeps them: one per feature, and one of both.
_TABLE = WoeTable(LEVELS, (-0.5, 0.2, 0.1, 0.7, 0.0), (False,) * 5, 0.0)
_SHARDS = {
    "industry-model": ModelShard(
        {"industry_woe": 0.8},
        0.0,
        Preprocessing((FeatureTransform("industry_woe", 0.1, 0.4, 2.0, _TABLE),)),
    ),
    "staff-model": ModelShard(
        {"staff": 0.3}, 0.0, Preprocessing((FeatureTransform("staff", 250.0, 140.0, 2.0),))
    ),
}


async def _score(node: Any, uscc: str, model_id: str, key: PrivateKey) -> Any:
    """A bank's Score call (not yet awaited), with its receipt and credentials."""
    record = authority().record(uscc, key.public_key.fingerprint(), model_id=model_id)
    logged = LEDGER.append(record.to_bytes(), record.uscc)
    described = await node.Describe(node_pb2.DescribeRequest())
    return node.Score(
        node_pb2.ScoreRequest(
            uscc=uscc,
            model_id=model_id,
            public_key=node_pb2.PaillierPublicKey(n=key.public_key.to_bytes()),
            scale=10**9,
            request_id=record.query_id,
            receipt=receipt_message(logged, described.trusted_tree_size, LEDGER),
            credentials=authority().credentials(uscc),
        )
    )


def _node_on(tmp_path: Any, settings: NodeSettings, schema: str) -> NodeSettings:
    """A node of ``settings``' records under ``schema``, in a database of its own."""
    path = tmp_path / f"schema-{uuid.uuid4().hex}.toml"
    path.write_text(schema, encoding="utf-8")
    fields = settings.model_dump() | {
        "schema_file": path,
        "database_url": f"sqlite:///{tmp_path / 'node.db'}",
    }
    fields.pop("department", None)
    return NodeSettings(**fields)


async def test_a_record_imported_under_another_schema_is_refused_without_its_value(
    tmp_path: Any, settings: NodeSettings, bank_key: PrivateKey
) -> None:
    """A level renamed after the import: the stored "fishing" is refused at a query with
    FAILED_PRECONDITION naming the column only; the value never leaves the node."""
    first = _node_on(tmp_path, settings, SCHEMA)
    import_into_node(first, [settings.schema_file.parent / "registry.csv"])  # type: ignore[union-attr]
    engine = make_engine(first.database_url)
    ShardStore(engine).save("staff-model", _SHARDS["staff-model"], "j", first.department_schema)
    records = RecordStore(engine).all()
    fishing = next(u for u in sorted(records) if records[u]["industry"] == "fishing")
    renamed = _node_on(tmp_path, settings, SCHEMA.replace('"fishing"]', '"fisheries"]'))
    server, port = await build_server(renamed)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            node = node_pb2_grpc.DataNodeStub(channel)
            code, details = await _refusal(await _score(node, fishing, "staff-model", bank_key))
            assert code == grpc.StatusCode.FAILED_PRECONDITION
            assert "for industry " in details and "re-imported under its schema" in details
            assert "fishing" not in details
            other = next(u for u in sorted(records) if records[u]["industry"] == "trade")
            assert (await (await _score(node, other, "staff-model", bank_key))).partial_score
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    ("change", "refused", "feature"),
    [
        # The same levels in another order: every stored WOE index now means another level.
        (
            (
                'levels = ["farming", "mining", "trade", "services", "fishing"]',
                ('levels = ["mining", "farming", "trade", "services", "fishing"]'),
            ),
            "industry-model",
            "industry_woe",
        ),
        # staff now log10(1 + staff): the shard's weights were fitted to staff itself.
        (
            ('column = "staff"\n', 'column = "staff"\ntransform = "log10p1"\n'),
            "staff-model",
            "staff",
        ),
        # A level appended keeps every old index: both models still score.
        (('"fishing"]', '"fishing", "forestry"]'), None, None),
    ],
    ids=["levels-reordered", "transform-changed", "levels-appended"],
)
async def test_a_restarted_node_refuses_a_model_trained_on_another_schema(
    tmp_path: Any,
    settings: NodeSettings,
    bank_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    change: tuple[str, str],
    refused: str | None,
    feature: str | None,
) -> None:
    """A node restarted with a schema that derives a shard's feature differently refuses
    that model's queries (FAILED_PRECONDITION, naming model and feature, logged), never
    scores it with another meaning nor as if it held no shard; other models still score."""
    original = tmp_path / "registry.toml"
    original.write_text(SCHEMA, encoding="utf-8")
    assert change[0] in SCHEMA
    changed = tmp_path / "changed.toml"
    changed.write_text(SCHEMA.replace(change[0], change[1]), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'node.db'}"
    before = settings.model_dump() | {"schema_file": original, "database_url": url}
    before.pop("department", None)
    first = NodeSettings(**before)
    import_into_node(first, [settings.schema_file.parent / "registry.csv"])  # type: ignore[union-attr]
    engine = make_engine(url)
    for model_id, shard in _SHARDS.items():  # what CloseJob keeps: shard and derivations
        ShardStore(engine).save(model_id, shard, f"job-{model_id}", first.department_schema)
        assert set(_stored_derivations(engine, model_id)) == set(shard.weights)
    restarted = NodeSettings(**(before | {"schema_file": changed}))
    records = RecordStore(engine).all()
    uscc = sorted(records)[0]
    with caplog.at_level("WARNING", logger="creditshare.node"):
        server, port = await build_server(restarted)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            node = node_pb2_grpc.DataNodeStub(channel)
            for model_id, shard in _SHARDS.items():
                described = await node.Describe(node_pb2.DescribeRequest())
                call = await _score(node, uscc, model_id, bank_key)
                if model_id == refused:
                    code, details = await _refusal(call)
                    assert code == grpc.StatusCode.FAILED_PRECONDITION
                    assert details == (
                        f"model {model_id!r} was trained on a different schema of feature "
                        f"{feature!r}; retrain"
                    )
                    assert model_id not in [m.model_id for m in described.models]
                    continue
                score = await call
                partial = FixedPointEncoding(10**9).decrypt(
                    Ciphertext.from_bytes(bank_key.public_key, score.partial_score), bank_key
                )
                values = restarted.department_schema.feature_values(records[uscc])
                assert abs(partial - shard.partial_score(values)) < 1e-6
                assert partial != 0.0
    finally:
        await server.stop(None)
    # The node's own state to redo, not someone's attempt: not in its refusal log.
    assert RefusalLog(engine, lambda: datetime.now(UTC)).entries() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if refused is None:
        assert not any("different schema" in w for w in warnings)
    else:
        assert any(refused in w and repr(feature) in w for w in warnings), warnings
