"""The configuration of one gradient-boosted-tree job: one typed document everywhere.

Like ``federated.TrainingConfig`` (logistic regression), this document travels from the
bureau (SDK, CLI) to the coordinator (request body, stored with the job, published
with the model) and to every node (the ``TreeSettings`` protobuf message). The bureau
signs its SHA-256 (``digest``), so a node trains with exactly the settings the bureau
chose. ``model_type`` is part of the document (and so of the digest): a tree document
can never be read as a logistic one, nor the other way round.

Defaults are XGBoost's for ``binary:logistic`` with ``tree_method="hist"``, except
``trees`` (100 rounds), ``max_depth`` 3 and ``max_bins`` 32, the values the issue's
benchmark compares at; ``min_child_rows`` is ours: a privacy floor every node enforces
on the row sets it is asked about (see the README's leakage section).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from creditshare._canonical import canonical_json
from creditshare.errors import InvalidInputError
from creditshare.federated import describe_validation_error

__all__ = ["MAX_DEPTH", "MAX_TREES", "MIN_CHILD_ROWS", "TreeConfig"]

_UINT32 = 2**32 - 1
#: The deepest tree any party accepts: 2^(8+1) − 1 = 511 heap positions.
MAX_DEPTH = 8
MAX_TREES = 1000
#: The least number of fit rows a node builds a histogram over or leaves in a child of a
#: split. With XGBoost's min_child_weight = 1 and a logistic hessian p(1 − p) ≤ ¼, no
#: child XGBoost would make has fewer than 4 rows, so this floor changes no model that
#: matches XGBoost's defaults; a bureau may raise it, never lower it.
MIN_CHILD_ROWS = 4


class TreeConfig(BaseModel):
    """Hyper-parameters of one federated gradient-boosted-tree job (SecureBoost-style).

    Build from untrusted input with ``from_document`` (errors are InvalidInputError
    naming the field); the constructor raises pydantic's ValidationError.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model_type: Literal["gbdt"] = "gbdt"
    #: Boosting rounds (XGBoost ``n_estimators``); fewer when early stopping ends the job.
    trees: int = Field(default=100, ge=1, le=MAX_TREES)
    max_depth: int = Field(default=3, ge=1, le=MAX_DEPTH)
    #: Shrinkage applied to every leaf weight (XGBoost ``eta``).
    learning_rate: float = Field(default=0.3, gt=0, le=1)
    #: Most bins per feature; each node cuts its own features at quantiles of its records.
    max_bins: int = Field(default=32, ge=2, le=256)
    #: L2 penalty on leaf weights (XGBoost ``lambda``).
    l2: float = Field(default=1.0, ge=0, le=1000)
    #: Least hessian sum in a child (XGBoost ``min_child_weight``).
    min_child_weight: float = Field(default=1.0, ge=0, le=1e6)
    #: Least loss reduction for a split (XGBoost ``gamma``).
    gamma: float = Field(default=0.0, ge=0, le=1e6)
    #: Least fit rows in a histogram or in either child of a split (privacy floor, above).
    min_child_rows: int = Field(default=MIN_CHILD_ROWS, ge=MIN_CHILD_ROWS, le=1_000_000)
    #: Trees without a better validation loss before stopping; 0: never stop early.
    early_stopping_rounds: int = Field(default=0, ge=0, le=MAX_TREES)
    min_improvement: float = Field(default=1e-4, ge=0, le=1)
    #: Share of the training rows held out for the validation curve and early stopping;
    #: 0: none (every non-test row is fit, as centralised XGBoost on the same split).
    validation_fraction: float = Field(default=0.1, ge=0, lt=0.5)
    #: Share of the aligned rows held out for the published test metrics (stratified by
    #: label, drawn with ``seed``); ignored when the bureau names the test ids itself.
    test_fraction: float = Field(default=0.3, gt=0, le=0.9)
    #: Fixed-point bits of each row's gradient and hessian before encryption.
    gradient_bits: int = Field(default=32, ge=16, le=52)
    #: Seeds the test/validation split.
    seed: int = Field(default=42, ge=0, le=_UINT32)

    @model_validator(mode="after")
    def _stopping_needs_validation(self) -> TreeConfig:
        # Early stopping watches the validation loss: with no validation rows it could
        # never stop, so asking for both is a mistake said now, not a silent no-op.
        if self.early_stopping_rounds and not self.validation_fraction:
            raise ValueError(
                "early_stopping_rounds needs validation rows: set validation_fraction "
                "above 0, or early_stopping_rounds to 0"
            )
        return self

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> TreeConfig:
        """The config a JSON document (or decoded message) holds; InvalidInputError
        naming the field if a value is outside its bounds or a field is unknown."""
        try:
            return cls.model_validate(dict(document))
        except ValidationError as exc:
            raise InvalidInputError(describe_validation_error(exc, "tree setting")) from None

    def to_document(self) -> dict[str, Any]:
        return self.model_dump()

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of ``to_document()``: the job's signed
        ``config_sha256`` (see ``TrainingConfig.digest``)."""
        return hashlib.sha256(canonical_json(self.to_document())).hexdigest()

    def replace(self, **changes: Any) -> TreeConfig:
        return self.from_document({**self.to_document(), **changes})
