"""`bureau train` options: one validation per model type, by its config document, with
the option named in every error."""

from __future__ import annotations

import pytest

from creditshare.cli._bureau import _config
from creditshare.errors import InvalidInputError
from creditshare.federated import TrainingConfig
from creditshare.trees import TreeConfig


def test_gbdt_options_make_a_tree_config_and_logistic_ones_a_training_config() -> None:
    trees = _config(
        "gbdt",
        {
            "--trees": 20,
            "--max-depth": 4,
            "--max-bins": 16,
            "--learning-rate": 0.1,
            "--l2": 2.0,
            "--min-child-weight": 3.0,
            "--gamma": 0.5,
            "--early-stopping-rounds": 5,
            "--validation-share": 0.2,
            "--test-share": 0.25,
            "--seed": 7,
        },
    )
    assert trees == TreeConfig(
        trees=20,
        max_depth=4,
        max_bins=16,
        learning_rate=0.1,
        l2=2.0,
        min_child_weight=3.0,
        gamma=0.5,
        early_stopping_rounds=5,
        validation_fraction=0.2,
        test_fraction=0.25,
        seed=7,
    )
    assert _config("logistic", {"--epochs": 3, "--clip": 2.0}) == TrainingConfig(
        max_epochs=3, feature_clip=2.0
    )
    assert _config("gbdt", {}) == TreeConfig()


@pytest.mark.parametrize(
    ("model_type", "given", "message"),
    [
        ("gbdt", {"--max-depth": 99}, "--max-depth:"),
        ("gbdt", {"--learning-rate": 2.0}, "--learning-rate:"),
        ("gbdt", {"--validation-share": 0.5}, "--validation-share:"),
        ("gbdt", {"--epochs": 3, "--clip": 1.0}, "--epochs, --clip: not an option of"),
        ("logistic", {"--trees": 3}, "--trees: not an option of --model-type logistic"),
        ("forest", {}, "--model-type: expected logistic or gbdt"),
    ],
)
def test_errors_name_the_option(model_type: str, given: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _config(model_type, given)
