"""The training configuration: one typed document, everywhere it travels.

A job's settings go from the bureau (SDK, CLI) to the coordinator (request body,
stored with the job, published with the model) and on to every node (the
``TrainingSettings`` protobuf message, converted in ``creditshare.proto``). Each
of those places reads or writes THIS model, so a field cannot be dropped on the
way or bounded differently by one side: unknown fields are refused, every bound
is a Field constraint, floats must be finite. A node decodes the settings it is
sent through the same model, so a coordinator cannot talk it into weak settings
(masks under 80 bits, a learning rate it would not accept from the bureau).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from creditshare._canonical import canonical_json
from creditshare.errors import InvalidInputError

__all__ = ["TrainingConfig", "describe_validation_error"]

_UINT32 = 2**32 - 1


class TrainingConfig(BaseModel):
    """Hyper-parameters of one vertical logistic-regression job.

    Build from untrusted input with ``from_document`` (errors are InvalidInputError
    naming the field); the constructor raises pydantic's ValidationError.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # Defaults chosen by plaintext simulation of this exact protocol on default_credit
    # (see bench/train_default_credit.py); small batches and a slow decay keep the
    # Taylor-approximated SGD close to the logistic optimum.
    learning_rate: float = Field(default=0.3, gt=0, le=100)
    learning_rate_decay: float = Field(default=0.05, ge=0, le=100)
    batch_size: int = Field(default=256, ge=32, le=100_000)
    l2: float = Field(default=0.0, ge=0, le=1000)
    max_epochs: int = Field(default=10, ge=1, le=1000)
    early_stopping_rounds: int = Field(default=3, ge=1, le=1000)
    min_improvement: float = Field(default=1e-4, ge=0, le=1)
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    #: Share of the aligned rows held out for the published test metrics (stratified by
    #: label, drawn with ``seed``); ignored when the bureau names the test ids itself.
    test_fraction: float = Field(default=0.3, gt=0, le=0.9)
    #: Each node standardises its features and winsorises the ``clipped`` ones (amounts,
    #: counts: not 0/1 flags) at ±clip: heavy tails make the first-order Taylor loss a
    #: poor stand-in for the logistic loss. 0 = no clipping. The clip is part of the model
    #: (the shard's preprocessing), applied again when a bank is scored. 4 was measured
    #: best of 0/2/3/4 on default_credit and a categorical set (plaintext simulation):
    #: at 2 the tails that carry signal are cut, unclipped the Taylor loss drifts.
    feature_clip: float = Field(default=4.0, ge=0, le=1000)
    #: Fixed-point precision of linear scores and of features (bits after the point).
    score_bits: int = Field(default=20, ge=16, le=32)
    feature_bits: int = Field(default=12, ge=8, le=20)
    #: Statistical hiding of a masked gradient: mask this many bits above its magnitude.
    mask_bits: int = Field(default=80, ge=80, le=256)
    #: Pack gradients into slots: one decryption per batch per party instead of one per
    #: feature. Off only to measure what packing saves (evaluation is always packed).
    packing: bool = True
    #: Seeds the test/validation split and the batch order.
    seed: int = Field(default=42, ge=0, le=_UINT32)

    def rate(self, epoch: int) -> float:
        return self.learning_rate / (1.0 + self.learning_rate_decay * epoch)

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> TrainingConfig:
        """The config a JSON document (or decoded message) holds; InvalidInputError
        naming the field if a value is missing its bounds or a field is unknown."""
        try:
            return cls.model_validate(dict(document))
        except ValidationError as exc:
            raise InvalidInputError(describe_validation_error(exc, "training setting")) from None

    def to_document(self) -> dict[str, Any]:
        return self.model_dump()

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of ``to_document()``: what the bureau signs
        as a job's ``config_sha256``. Every node recomputes it from the settings it was
        sent and refuses the job when it differs, so a coordinator cannot open one node
        with other settings than the bureau chose (and a field left out of the protobuf
        message, which reads as 0, changes it too)."""
        return hashlib.sha256(canonical_json(self.to_document())).hexdigest()

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes`` applied, validated like any other document."""
        return self.from_document({**self.to_document(), **changes})


def describe_validation_error(exc: ValidationError, what: str) -> str:
    """'<what> <field>: <reason>' for each problem, in one line."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"]) or "(document)"
        reason = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{what} {location}: {reason}")
    return "; ".join(parts)
