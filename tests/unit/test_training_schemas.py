"""The training job's config schema is TrainingConfig's fields, each bounded and finite."""

from __future__ import annotations

import dataclasses
import math

import pytest
from pydantic import ValidationError

from creditshare.coordinator._routes_training import TrainingConfigIn
from creditshare.errors import InvalidInputError
from creditshare.federated import TrainingConfig


def test_config_schema_has_exactly_the_training_config_fields_and_defaults() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(TrainingConfig)}
    assert set(TrainingConfigIn.model_fields) == set(fields)
    assert TrainingConfigIn().model_dump() == fields
    # Every value the schema accepts, TrainingConfig accepts too.
    TrainingConfig(**TrainingConfigIn().model_dump())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", math.nan),
        ("learning_rate", math.inf),
        ("l2", -math.inf),
        ("min_improvement", math.nan),
        ("batch_size", 2**63),
        ("seed", -1),
        ("mask_bits", 79),
        ("validation_fraction", 0.5),
    ],
)
def test_out_of_range_or_non_finite_settings_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingConfigIn(**{field: value})
    assert caught.value.errors()[0]["loc"] == (field,)


def test_unknown_settings_are_refused_by_name() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingConfigIn.model_validate({"learning_rate": 0.1, "surprise": 1})
    assert caught.value.errors()[0]["loc"] == ("surprise",)


@pytest.mark.parametrize("field", ["learning_rate", "l2", "feature_clip", "min_improvement"])
def test_training_config_itself_refuses_non_finite_numbers(field: str) -> None:
    """Nodes build a TrainingConfig from gRPC doubles: Infinity must not pass there either."""
    with pytest.raises(InvalidInputError, match=field):
        dataclasses.replace(TrainingConfig(), **{field: math.inf})  # type: ignore[arg-type]
