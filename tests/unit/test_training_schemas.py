"""One training configuration: the same document at the SDK, the coordinator and nodes.

TrainingConfig is the request body's ``config`` field, what the coordinator stores, and
(through ``settings_to_pb``/``settings_from_pb``) what every node is opened with; these
tests check that nothing is dropped or bounded differently on the way.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from creditshare.coordinator._db import TrainingJobRow
from creditshare.coordinator._routes_training import _tree_model
from creditshare.coordinator._settings import ModelEntry
from creditshare.coordinator._training_bodies import FinishIn, JobIn, PsiIn
from creditshare.crypto import MAX_SCALE
from creditshare.errors import InvalidInputError
from creditshare.federated import TrainingConfig
from creditshare.proto import settings_from_pb, settings_to_pb, training_pb2
from creditshare.trees import (
    MAX_LEAF_SPAN,
    MAX_WEIGHT,
    TreeConfig,
    max_shifted_weight,
    shifted_weights,
)

#: A value for every field, none of them its default: a dropped field shows.
EVERY_FIELD: dict[str, Any] = {
    "learning_rate": 0.123,
    "learning_rate_decay": 0.5,
    "batch_size": 77,
    "l2": 0.01,
    "max_epochs": 7,
    "early_stopping_rounds": 2,
    "min_improvement": 0.002,
    "validation_fraction": 0.2,
    "test_fraction": 0.25,
    "feature_clip": 3.5,
    "score_bits": 24,
    "feature_bits": 14,
    "mask_bits": 96,
    "packing": False,
    "seed": 2**32 - 1,
}


def test_every_field_is_tested_and_none_is_its_default() -> None:
    assert set(EVERY_FIELD) == set(TrainingConfig.model_fields)
    defaults = TrainingConfig().to_document()
    assert all(EVERY_FIELD[name] != defaults[name] for name in EVERY_FIELD)


def test_the_proto_message_names_exactly_the_config_fields() -> None:
    names = set(training_pb2.TrainingSettings.DESCRIPTOR.fields_by_name)
    assert names == set(TrainingConfig.model_fields)


def test_document_to_proto_to_document_is_unchanged_with_every_field() -> None:
    config = TrainingConfig.from_document(EVERY_FIELD)
    assert config.to_document() == EVERY_FIELD
    wire = training_pb2.TrainingSettings.FromString(settings_to_pb(config).SerializeToString())
    back = settings_from_pb(wire)
    assert back == config
    assert back.to_document() == EVERY_FIELD
    # And through the coordinator's request body (JSON), as the SDK sends it.
    body = JobIn.model_validate(
        {
            "model_id": "m",
            "nodes": ["n"],
            "key_fingerprint": "0" * 16,
            "config": EVERY_FIELD,
            "job_id": "0" * 32,
            "requested_at": "2026-11-30T10:00:00Z",
            "config_sha256": config.digest(),
            "signature": "A" * 86 + "==",
        }
    )
    assert body.config == config
    # So the hash the bureau signs is the one the coordinator and every node compute.
    assert body.config.digest() == back.digest() == config.digest()


def test_clipping_can_be_turned_off() -> None:
    config = TrainingConfig.from_document({"feature_clip": 0})
    assert settings_from_pb(settings_to_pb(config)).feature_clip == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", math.nan),
        ("learning_rate", math.inf),
        ("l2", -math.inf),
        ("min_improvement", math.nan),
        ("feature_clip", math.inf),
        ("feature_clip", -1.0),
        ("batch_size", 2**63),
        ("batch_size", 31),
        ("seed", -1),
        ("mask_bits", 79),
        ("validation_fraction", 0.5),
        ("test_fraction", 0.0),
        ("test_fraction", 0.95),
    ],
)
def test_out_of_range_or_non_finite_settings_are_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingConfig(**{field: value})
    assert caught.value.errors()[0]["loc"] == (field,)
    with pytest.raises(InvalidInputError, match=f"training setting {field}:"):
        TrainingConfig.from_document({field: value})


def test_unknown_settings_are_refused_by_name() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingConfig.model_validate({"learning_rate": 0.1, "surprise": 1})
    assert caught.value.errors()[0]["loc"] == ("surprise",)
    with pytest.raises(InvalidInputError, match="training setting surprise: unknown field"):
        TrainingConfig.from_document({"surprise": 1})


@pytest.mark.parametrize(
    ("field", "value"),
    [("mask_bits", 40), ("score_bits", 8), ("learning_rate", math.inf), ("feature_clip", -2.0)],
)
def test_a_node_refuses_weak_or_broken_settings_from_the_wire(field: str, value: float) -> None:
    """A coordinator cannot talk a node into thin masks: the node validates the message."""
    wire = settings_to_pb(TrainingConfig())
    setattr(wire, field, value)
    with pytest.raises(InvalidInputError, match=f"training setting {field}:"):
        settings_from_pb(wire)


def test_a_message_with_fields_left_out_is_refused_not_defaulted() -> None:
    with pytest.raises(InvalidInputError, match="batch_size"):
        settings_from_pb(training_pb2.TrainingSettings(learning_rate=0.3))


def test_replace_validates() -> None:
    assert TrainingConfig().replace(max_epochs=3).max_epochs == 3
    with pytest.raises(InvalidInputError, match="max_epochs"):
        TrainingConfig().replace(max_epochs=0)


def _job_body(config: Any) -> dict[str, Any]:
    return {
        "model_id": "m",
        "nodes": ["n"],
        "key_fingerprint": "0" * 16,
        "config": config,
        "job_id": "0" * 32,
        "requested_at": "2026-11-30T10:00:00Z",
        "config_sha256": "0" * 64,
        "signature": "A" * 86 + "==",
    }


def test_a_job_body_with_a_gbdt_document_is_a_tree_config_and_others_stay_logistic() -> None:
    tree = TreeConfig(trees=5, max_depth=2)
    body = JobIn.model_validate(_job_body(tree.to_document()))
    assert isinstance(body.config, TreeConfig)
    assert body.config == tree
    assert body.config.digest() == tree.digest()
    # No model_type (or an empty document): the logistic default, as before trees.
    assert isinstance(JobIn.model_validate(_job_body({"seed": 3})).config, TrainingConfig)
    assert isinstance(JobIn.model_validate(_job_body({})).config, TrainingConfig)
    body = JobIn.model_validate({k: v for k, v in _job_body({}).items() if k != "config"})
    assert body.config == TrainingConfig()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"model_type": "gbdt", "max_epochs": 3}, "max_epochs"),  # a logistic setting
        ({"model_type": "gbdt", "max_depth": 99}, "max_depth"),
        ({"trees": 5}, "trees"),  # a tree setting without model_type: logistic, unknown
    ],
)
def test_a_setting_of_the_other_kind_or_out_of_range_is_refused_by_name(
    config: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        JobIn.model_validate(_job_body(config))
    assert field in caught.value.errors()[0]["loc"]


def _tree_job(nodes: list[str]) -> TrainingJobRow:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    return TrainingJobRow(
        id="j",
        bureau="b",
        model_id="m",
        status="training",
        nodes=nodes,
        config={},
        progress={},
        history=[],
        sizes={},
        public_key="",
        created_at=now,
        updated_at=now,
    )


def _tree_document(owner: str = "node-a", depth_position: int = 0) -> dict[str, Any]:
    internal = [0] if depth_position == 0 else [0, 1, 3]
    leaves = {0: [1, 2], 3: [2, 4, 7, 8]}[max(internal)]
    return {
        "base_score": -1.5,
        "trees": [
            {
                "owners": {str(p): owner for p in internal},
                "weights": {str(p): 0.1 * p for p in leaves},
            }
        ],
    }


def _finish(intercept: float, tree_model: dict[str, Any] | None = None) -> FinishIn:
    return FinishIn.model_validate({"intercept": intercept, "tree_model": tree_model})


def test_a_tree_job_finishes_with_a_tree_model_of_its_own_nodes_within_its_config() -> None:
    job = _tree_job(["node-a", "node-b"])
    config = TreeConfig(trees=2, max_depth=2)
    good = _finish(-1.5, _tree_document())
    trees = _tree_model(job, config, good)
    assert trees is not None and trees.nodes == ("node-a",)
    cases = [
        (_finish(-1.5), "a gbdt job finishes with its tree model"),
        (_finish(-1.5, _tree_document("node-z")), "node-z, which are not"),
        (_finish(-1.5, _tree_document(depth_position=3)), "max_depth 2"),
        (_finish(0.0, _tree_document()), "base_score"),
        (_finish(-1.5, {"trees": []}), "exactly base_score and trees"),
    ]
    for body, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            _tree_model(job, config, body)
    with pytest.raises(InvalidInputError, match="logistic model, not trees"):
        _tree_model(job, TrainingConfig(), good)
    assert _tree_model(job, TrainingConfig(), _finish(0.0)) is None


def _wide_document(span: float) -> dict[str, Any]:
    """Two one-split trees; the second's leaf weights span ``span`` log-odds."""
    return {
        "base_score": -1.5,
        "trees": [
            {"owners": {"0": "node-a"}, "weights": {"1": -0.1, "2": 0.1}},
            {"owners": {"0": "node-a"}, "weights": {"1": -span / 2, "2": span / 2}},
        ],
    }


def test_a_tree_model_no_node_would_score_is_refused_at_finish_and_in_settings() -> None:
    job = _tree_job(["node-a"])
    config = TreeConfig(trees=2, max_depth=2)
    assert _tree_model(job, config, _finish(-1.5, _wide_document(MAX_LEAF_SPAN))) is not None
    wide = _finish(-1.5, _wide_document(MAX_LEAF_SPAN + 1))
    with pytest.raises(InvalidInputError, match="tree_model: tree 1: its leaf weights span 1001"):
        _tree_model(job, config, wide)
    with pytest.raises(ValidationError, match="tree 1: its leaf weights span 1001"):
        ModelEntry(id="wide", model_type="gbdt", tree_model=_wide_document(MAX_LEAF_SPAN + 1))
    # Within the span, every scale the coordinator may use fits the wire and the node's
    # bound (so the chain never meets an EncodingOverflowError).
    entry = ModelEntry(id="ok", model_type="gbdt", tree_model=_wide_document(MAX_LEAF_SPAN))
    assert entry.trees is not None
    for scale in (1, 10**6, MAX_SCALE):
        weights, _ = shifted_weights(entry.trees, scale)
        assert max(weights) <= max_shifted_weight(scale) <= MAX_WEIGHT


def test_tree_early_stopping_without_validation_rows_is_refused_naming_both_fields() -> None:
    # It could never stop (no validation loss to watch): a mistake said at once.
    with pytest.raises(InvalidInputError, match=r"early_stopping_rounds.*validation_fraction"):
        TreeConfig.from_document({"early_stopping_rounds": 3, "validation_fraction": 0})
    assert TreeConfig.from_document({"early_stopping_rounds": 3}).validation_fraction == 0.1
    assert TreeConfig.from_document({"validation_fraction": 0}).early_stopping_rounds == 0


def test_a_psi_chunk_carries_the_transcript_signature_with_its_last_chunk_only() -> None:
    """The coordinator refuses, before relaying, a last chunk without the bureau's
    transcript signature (a node would refuse it and fail the job) and a signature on a
    chunk that is not the last."""
    signature = "A" * 86 + "=="
    base = {"node": "yrd-tax", "domain": "d", "blinded": []}
    assert PsiIn.model_validate(base | {"transcript_signature": signature}).more is False
    assert PsiIn.model_validate(base | {"more": True}).transcript_signature is None
    for body in (base, base | {"more": True, "transcript_signature": signature}):
        with pytest.raises(ValidationError, match="transcript_signature"):
            PsiIn.model_validate(body)
    with pytest.raises(ValidationError, match="transcript_signature"):
        PsiIn.model_validate(base | {"transcript_signature": "not base64!"})
