"""The node's ScoreEngine loads tree shards beside linear ones: a gbdt model has no
linear share, and a tree shard its schema no longer derives the same way refuses both
of its model's calls, as a stale linear shard does."""

from __future__ import annotations

from pathlib import Path

import pytest

from creditshare.crypto import FixedPointEncoding, PrivateKey
from creditshare.errors import InvalidInputError, NotFoundError, StaleShardError
from creditshare.node._scoring import ScoreEngine
from creditshare.node._storage import RecordStore, ShardStore, make_engine

from .test_tree_shard_store import SCHEMA, SHARD, _department

USCC = "91350100M000100Y43"


@pytest.fixture
def store(tmp_path: Path) -> ShardStore:
    store = ShardStore(make_engine(f"sqlite:///{tmp_path / 'node.db'}"))
    store.save_tree("trees", SHARD, job_id="job-b", department=_department())
    return store


@pytest.fixture
def records(tmp_path: Path) -> RecordStore:
    return RecordStore(make_engine(f"sqlite:///{tmp_path / 'records.db'}"))


def test_a_tree_model_is_listed_and_has_no_linear_share(
    store: ShardStore, records: RecordStore, bank_key: PrivateKey
) -> None:
    engine = ScoreEngine(_department(), records, {}, store)
    assert engine.model_ids == ("trees",)
    assert engine.model_features("trees") == ("amount_log", "staff")
    encoding = FixedPointEncoding(1000)
    partial = engine.partial_score(USCC, "trees", bank_key.public_key, encoding)
    assert encoding.decrypt(partial, bank_key) == 0.0
    steps = engine.tree_score(USCC, "trees", bank_key.public_key, [], [])
    assert isinstance(steps, list) and len(steps) == SHARD.leaf_count
    # No record here: the default directions' bits.
    opened = [bank_key.raw_decrypt(c.value) for c in steps]
    assert opened == SHARD.leaf_bits(None)


def test_a_step_of_the_wrong_shape_or_model_is_refused(
    store: ShardStore, records: RecordStore, bank_key: PrivateKey
) -> None:
    engine = ScoreEngine(_department(), records, {}, store)
    with pytest.raises(
        InvalidInputError, match=f"2 weights for model 'trees', whose trees have {SHARD.leaf_count}"
    ):
        engine.tree_shard("trees", 0, 2)
    with pytest.raises(NotFoundError, match="no tree shard of model 'other'"):
        engine.tree_shard("other", 0, 0)


def test_a_stale_tree_shard_refuses_its_models_calls(
    store: ShardStore, records: RecordStore, bank_key: PrivateKey
) -> None:
    changed = _department(SCHEMA.replace('transform = "log10p1"', 'transform = "ln1p"'))
    stale = ScoreEngine(changed, records, {}, store)
    with pytest.raises(StaleShardError, match="amount_log"):
        stale.tree_score(USCC, "trees", bank_key.public_key, [], [])
    with pytest.raises(StaleShardError, match="amount_log"):
        stale.partial_score(USCC, "trees", bank_key.public_key, FixedPointEncoding(1000))
