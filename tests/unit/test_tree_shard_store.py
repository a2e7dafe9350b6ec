"""A node keeps a tree model's shard (its split rules and the trees' shapes) beside the
linear shards: one model-id space, each kind read only as itself, a job's drop discarding
either kind, and a schema that derives a split feature differently refusing the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from creditshare.departments import Department, parse_schema
from creditshare.errors import ConflictError, InvalidInputError
from creditshare.federated import ModelShard
from creditshare.node._storage import ShardStore, make_engine
from creditshare.trees import SplitRule, TreeShard

SCHEMA = """
id = "probe"
display_name = "Probe"

[[columns]]
name = "amount"
type = "number"
min = 0
max = 1e9

[[columns]]
name = "staff"
type = "number"
min = 0
max = 1e6

[[features]]
name = "amount_log"
column = "amount"
transform = "log10p1"

[[features]]
name = "staff"
column = "staff"
"""

SHARD = TreeShard(
    shapes=(frozenset({0, 1}), frozenset()),
    rules=(SplitRule(0, 0, "amount_log", 3.5, True), SplitRule(0, 1, "staff", 12.0, False)),
)


def _department(text: str = SCHEMA) -> Department:
    return parse_schema(text, "probe.toml")


@pytest.fixture
def store(tmp_path: Path) -> ShardStore:
    return ShardStore(make_engine(f"sqlite:///{tmp_path / 'node.db'}"))


def test_a_tree_shard_round_trips_and_is_never_read_as_a_linear_one(store: ShardStore) -> None:
    store.save("linear", ModelShard({"staff": 0.5}), job_id="job-a", department=_department())
    store.save_tree("trees", SHARD, job_id="job-b", department=_department())
    trees, refused = store.usable_trees(_department())
    assert trees == {"trees": SHARD} and refused == {}
    linear, refused = store.usable(_department())
    assert set(linear) == {"linear"} and refused == {}


def test_model_ids_are_one_space_and_a_shard_is_never_overwritten(store: ShardStore) -> None:
    store.save("m", ModelShard({"staff": 0.5}), job_id="job-a", department=_department())
    with pytest.raises(ConflictError, match="'m'"):
        store.save_tree("m", SHARD, job_id="job-b", department=_department())
    store.save_tree("t", SHARD, job_id="job-b", department=_department())
    with pytest.raises(ConflictError, match="'t'"):
        store.save_tree("t", SHARD, job_id="job-c", department=_department())


def test_dropping_a_job_discards_the_tree_shard_it_kept(store: ShardStore) -> None:
    store.save_tree("t", SHARD, job_id="job-b", department=_department())
    assert store.discard_job("job-b") == ["t"]
    assert store.usable_trees(_department()) == ({}, {})


def test_a_split_feature_unknown_to_the_schema_is_refused_before_anything_is_kept(
    store: ShardStore,
) -> None:
    shard = TreeShard((frozenset({0}),), (SplitRule(0, 0, "headcount", 1.0, True),))
    with pytest.raises(InvalidInputError, match="headcount"):
        store.save_tree("t", shard, job_id="job-b", department=_department())
    assert store.usable_trees(None) == ({}, {})


def test_a_split_feature_derived_differently_now_refuses_the_model(store: ShardStore) -> None:
    store.save_tree("t", SHARD, job_id="job-b", department=_department())
    changed = _department(SCHEMA.replace('transform = "log10p1"', 'transform = "ln1p"'))
    trees, refused = store.usable_trees(changed)
    assert trees == {}
    assert "amount_log" in refused["t"] and "retrain" in refused["t"]
    # A feature the rules do not split on may change freely.
    other = SHARD.rules[1:]
    store.save_tree("u", TreeShard(SHARD.shapes, other), job_id="job-c", department=_department())
    assert set(store.usable_trees(changed)[0]) == {"u"}
