"""A stored model shard is only scored with while the node's schema derives its features
exactly as when it was trained (levels, transform, scale, clamp, encoding, missing rule
and default); otherwise its model's queries are refused, and one unreadable row refuses
only its own model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from creditshare.departments import Department, derivation, derivation_change, parse_schema
from creditshare.errors import StaleShardError
from creditshare.federated import FeatureTransform, ModelShard, Preprocessing, WoeTable
from creditshare.node import _service
from creditshare.node._scoring import ScoreEngine
from creditshare.node._storage import ModelShardRow, RecordStore, ShardStore, make_engine

SCHEMA = """
id = "probe"
display_name = "Probe"

[[columns]]
name = "grade"
type = "category"
levels = ["A", "B", "C"]

[[columns]]
name = "amount"
type = "number"
min = 0
max = 1e9
missing = "default"
default = 0

[[features]]
name = "grade_woe"
column = "grade"
encoding = "woe"

[[features]]
name = "grade_map"
column = "grade"
encoding = "map"
values = { A = 0, B = 1, C = 3 }

[[features]]
name = "grade"
column = "grade"

[[features]]
name = "amount_log"
column = "amount"
transform = "log10p1"
scale = 2.0
floor = 0
cap = 18
"""


def _department(old: str = "", new: str = "") -> Department:
    assert old in SCHEMA
    return parse_schema(SCHEMA.replace(old, new), "probe.toml")


def _derivations(department: Department) -> dict[str, dict[str, Any]]:
    return {f.name: derivation(department, f) for f in department.features}


_LEVELS = 'levels = ["A", "B", "C"]'
_MAP = "values = { A = 0, B = 1, C = 3 }"
_ONE_HOT = 'name = "grade"\ncolumn = "grade"\n'


@pytest.mark.parametrize(
    ("edits", "changed"),
    [
        # Only WOE looks levels up by index; a map and one-hot dummies name theirs.
        ([(_LEVELS, 'levels = ["B", "A", "C"]')], {"grade_woe"}),
        ([(_LEVELS, 'levels = ["A", "B"]'), (", C = 3", "")], {"grade_woe", "grade_map", "grade"}),
        ([('transform = "log10p1"', 'transform = "ln1p"')], {"amount_log"}),
        ([("scale = 2.0", "scale = 3.0")], {"amount_log"}),
        ([("floor = 0\n", "floor = 1\n")], {"amount_log"}),
        ([("cap = 18", "cap = 17")], {"amount_log"}),
        ([("default = 0", "default = 1")], {"amount_log"}),
        ([('missing = "default"\ndefault = 0', "")], {"amount_log"}),
        ([("C = 3", "C = 2")], {"grade_map"}),
        (
            [(_ONE_HOT, _ONE_HOT + 'encoding = "map"\nvalues = { A = 1, B = 2, C = 0 }\n')],
            {"grade"},
        ),
        # Appended levels keep every old index, dummy and mapped number.
        ([(_LEVELS, 'levels = ["A", "B", "C", "D"]'), (_MAP, _MAP[:-2] + ", D = 5 }")], set()),
        ([("max = 1e9", "max = 1e10")], set()),  # a bound: records outside it fail on their own
    ],
)
def test_a_derivation_changes_exactly_when_a_feature_means_something_else(
    edits: list[tuple[str, str]], changed: set[str]
) -> None:
    text = SCHEMA
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    stored = _derivations(_department())
    now = _derivations(parse_schema(text, "probe.toml"))
    differs = {
        name for name in stored if name not in now or derivation_change(stored[name], now[name])
    }
    # A one-hot category expands per level ("grade=A"...): name the feature.
    assert {name.split("=")[0] for name in differs} == changed


def test_a_derivation_names_the_part_that_changed_and_holds_no_record_value() -> None:
    stored = _derivations(_department())
    now = _derivations(_department('transform = "log10p1"', 'transform = "ln1p"'))
    assert derivation_change(stored["amount_log"], now["amount_log"]) == "transform"
    assert stored["grade_woe"]["levels"] == ["A", "B", "C"]
    assert stored["amount_log"] | {"transform": "x"} != stored["amount_log"]


def _appended() -> Department:
    """The schema with a level D appended (and mapped)."""
    return parse_schema(
        SCHEMA.replace(_LEVELS, 'levels = ["A", "B", "C", "D"]').replace(
            _MAP, _MAP[:-2] + ", D = 5 }"
        ),
        "probe.toml",
    )


def _engine(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'node.db'}")


_TABLE = WoeTable(("A", "B", "C"), (-0.4, 0.1, 0.6), (False,) * 3, 0.0)
_WOE = ModelShard(
    {"grade_woe": 1.0}, 0.0, Preprocessing((FeatureTransform("grade_woe", 0.0, 1.0, 4.0, _TABLE),))
)
_AMOUNT = ModelShard({"amount_log": 0.5})


def test_load_refuses_a_shard_its_schema_derives_differently_and_keeps_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ShardStore(_engine(tmp_path))
    trained_under = _department()
    store.save("woe", _WOE, "j1", trained_under)
    store.save("amount", _AMOUNT, "j2", trained_under)
    assert set(store.usable(trained_under)[0]) == {"woe", "amount"}
    assert store.usable(trained_under)[1] == {}
    appended = _appended()
    assert set(store.usable(appended)[0]) == {"woe", "amount"}
    reordered = _department('levels = ["A", "B", "C"]', 'levels = ["C", "B", "A"]')
    with caplog.at_level(logging.WARNING, logger="creditshare.node"):
        shards, refused = store.usable(reordered)
    assert set(shards) == {"amount"}
    assert refused == {
        "woe": "model 'woe' was trained on a different schema of feature 'grade_woe'; retrain"
    }
    assert any(
        "'woe'" in r.getMessage() and "'grade_woe'" in r.getMessage() for r in caplog.records
    )
    gone = parse_schema(
        SCHEMA.replace('name = "amount_log"', 'name = "amount_log10"'), "probe.toml"
    )
    assert set(store.usable(gone)[1]) == {"amount"}


def test_a_shard_kept_before_derivations_were_stored_still_checks_its_woe_levels(
    tmp_path: Path,
) -> None:
    store = ShardStore(_engine(tmp_path))
    store.save("old", _WOE)  # no department: as shards kept before this check
    assert set(store.usable(_department())[0]) == {"old"}
    appended = _appended()
    assert set(store.usable(appended)[0]) == {"old"}
    reordered = _department('levels = ["A", "B", "C"]', 'levels = ["A", "C", "B"]')
    assert set(store.usable(reordered)[1]) == {"old"}


def test_one_malformed_stored_row_refuses_only_its_own_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _engine(tmp_path)
    store = ShardStore(engine)
    department = _department()
    store.save("good", _AMOUNT, "j1", department)
    store.save("bad", _AMOUNT, "j2", department)
    with Session(engine) as session:
        row = session.get(ModelShardRow, "bad")
        assert row is not None
        row.preprocessing = {"version": 99, "features": "nonsense"}
        session.add(row)
        session.commit()
    with caplog.at_level(logging.WARNING, logger="creditshare.node"):
        shards, refused = store.usable(department)
        assert set(store.load()) == {"good"}
    assert set(shards) == {"good"} and set(refused) == {"bad"}
    assert "unreadable" in refused["bad"]
    assert any("'bad'" in r.getMessage() for r in caplog.records)


def test_the_score_engine_refuses_a_refused_model_and_scores_the_others(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    store = ShardStore(engine)
    store.save("woe", _WOE, "j1", _department())
    store.save("amount", _AMOUNT, "j2", _department())
    reordered = _department('levels = ["A", "B", "C"]', 'levels = ["C", "B", "A"]')
    scoring = ScoreEngine(reordered, RecordStore(engine), {}, store)
    assert set(scoring.model_ids) == {"amount"}
    assert scoring.model_features("woe") == ()
    with pytest.raises(StaleShardError, match="feature 'grade_woe'; retrain") as refusal:
        scoring._shard("woe")
    assert _service.status_for(refusal.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert scoring._shard("amount") == store.load()["amount"]
    assert scoring._shard("never-trained-here").weights == {}
    # A model configured in the node's settings takes precedence over a stored shard.
    configured = ScoreEngine(reordered, RecordStore(engine), {"woe": {"amount_log": 1.0}}, store)
    assert configured._shard("woe").weights == {"amount_log": 1.0}
