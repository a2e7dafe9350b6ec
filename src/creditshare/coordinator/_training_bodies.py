"""What a bureau sends to the training-job endpoints, and the bounds on it.

Every list, string and number a bureau sends is bounded here, before anything is
relayed or written: lists by the largest job a node accepts, strings by the
largest 4096-bit value they can encode, integers by the protobuf field they are
relayed in, and floats are finite (NaN and Infinity are refused, never stored).
The logistic steps' bodies live here with the job's own; the tree steps' bodies
(``_routes_tree_training``) are built from the same bounded types.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import Path
from pydantic import (
    AwareDatetime,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from creditshare.coordinator._schemas import (
    FINGERPRINT_PATTERN,
    ID_PATTERN,
    REQUEST_ID_PATTERN,
    SIGNATURE_PATTERN,
    InputModel,
)
from creditshare.errors import InvalidInputError
from creditshare.federated import DEFAULT_PSI_CHUNK, MAX_PSI_CHUNK, TrainingConfig
from creditshare.federated._psi import MAX_PSI_ITEMS
from creditshare.trees import TreeConfig

__all__ = [
    "MAX_CIPHERTEXT_TEXT",
    "MAX_ITEMS",
    "MAX_LEVEL_SUMS_ROWS",
    "MAX_MAGNITUDE",
    "ApplyIn",
    "ApplyLevelSumsIn",
    "CancelIn",
    "CiphertextText",
    "ConfigIn",
    "FailIn",
    "FinishIn",
    "GradientIn",
    "JobId",
    "JobIn",
    "LevelSumsIn",
    "MetricName",
    "NodeName",
    "Number",
    "OpenIn",
    "Point",
    "ProgressIn",
    "PsiIn",
    "PsiPointsIn",
    "Row",
    "RowsIn",
    "Strict",
    "from_base64",
    "model_type_of",
    "to_base64",
]

#: The most rows (or PSI points) one call may carry: a node's whole aligned set.
MAX_ITEMS = 200_000
_UINT32 = 2**32 - 1
#: Base64 of a ciphertext modulo n² for a 4096-bit n (1024 bytes) is 1368 characters.
MAX_CIPHERTEXT_TEXT = 1400
#: The most fit rows one level-sums call may carry (the bureau sends 4096 at a time):
#: Enc(y) at 4096 bits stays well under the body limit.
MAX_LEVEL_SUMS_ROWS = 8192
#: |float| bound on any number a bureau reports: far beyond any real loss or metric.
MAX_MAGNITUDE = 1e12

JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
NodeName = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Point = Annotated[str, StringConstraints(min_length=1, max_length=64)]
CiphertextText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CIPHERTEXT_TEXT)]
Row = Annotated[int, Field(ge=0, le=_UINT32)]
Number = Annotated[float, Field(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE, allow_inf_nan=False)]
MetricName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
]


#: Unknown fields refused, floats finite, no control characters (NUL cannot be stored).
Strict = InputModel


def model_type_of(document: Any) -> str:
    """Which config a job's document is: a tree document names ``"model_type": "gbdt"``;
    anything else is the logistic document (the default, which has no such field)."""
    if isinstance(document, TreeConfig):
        return "gbdt"
    if isinstance(document, dict) and document.get("model_type") == "gbdt":
        return "gbdt"
    return "logistic"


#: The logistic document (default) or a gradient-boosted-tree one. Problem locations leave
#: these tags out (``_problems._UNION_TAGS``): a caller names ``config.mask_bits``.
ConfigIn = Annotated[
    Annotated[TrainingConfig, Tag("logistic")] | Annotated[TreeConfig, Tag("gbdt")],
    Discriminator(model_type_of),
]


class JobIn(Strict):
    model_id: str = Field(pattern=ID_PATTERN)
    description: str = Field(default="", max_length=500)
    #: A set of nodes: a name given twice counts once.
    nodes: list[NodeName] = Field(min_length=1, max_length=64)
    key_fingerprint: str = Field(
        pattern=FINGERPRINT_PATTERN,
        description="one of the bureau's registered Paillier keys (POST /v1/paillier-keys): "
        "what nodes encrypt under and the bureau decrypts with",
    )
    #: The one training-configuration document (unknown fields and values out of their
    #: bounds are refused here, 422 naming the field); stored with the job as sent. A
    #: document with ``"model_type": "gbdt"`` is a ``TreeConfig`` (gradient-boosted trees).
    config: ConfigIn = Field(default_factory=TrainingConfig)
    job_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="chosen by the bureau (128 random bits, lowercase hex) and signed",
    )
    requested_at: AwareDatetime = Field(description="when the bureau signed the job (UTC)")
    config_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 (lowercase hex) of the canonical JSON of `config` (all of its "
        "fields, defaults included), as signed: every node recomputes it from the settings "
        "it is sent and refuses the job when it differs",
    )
    signature: str = Field(
        pattern=SIGNATURE_PATTERN,
        description="base64 Ed25519 signature, by the key the bureau's credential certifies, "
        "over the signed training-job document (version 2: job id, key fingerprint, nodes, "
        "config_sha256, purpose, time)",
    )

    @field_validator("nodes")
    @classmethod
    def _distinct(cls, nodes: list[str]) -> list[str]:
        return list(dict.fromkeys(nodes))


class PsiIn(Strict):
    """One chunk of the bureau's blinded ids (the first, ``offset`` 0, starts the run)."""

    node: NodeName
    domain: str = Field(min_length=1, max_length=256)
    blinded: list[Point] = Field(max_length=MAX_PSI_CHUNK)
    offset: int = Field(
        default=0, ge=0, le=MAX_PSI_ITEMS, description="how many points earlier chunks held"
    )
    more: bool = Field(default=False, description="whether more chunks follow this one")
    transcript_signature: str | None = Field(
        default=None,
        pattern=SIGNATURE_PATTERN,
        description="with the last chunk (and only then): base64 Ed25519 signature, by the "
        "key the bureau's credential certifies, over its PSI transcript with this node "
        "(job id, bureau, node, domain, how many points, running SHA-256 of them)",
    )

    @model_validator(mode="after")
    def _signed_last(self) -> PsiIn:
        if self.more == (self.transcript_signature is not None):
            raise ValueError(
                "transcript_signature is required with the last chunk (more false) and "
                "only with it: the node pages nothing out until it verifies"
            )
        return self


class PsiPointsIn(Strict):
    """A page of the node's blinded ids, after the bureau's last chunk."""

    node: NodeName
    offset: int = Field(
        default=0, ge=0, le=MAX_PSI_ITEMS, description="how many points earlier pages held"
    )
    limit: int = Field(default=DEFAULT_PSI_CHUNK, ge=1, le=MAX_PSI_CHUNK)


class OpenIn(Strict):
    node: NodeName
    points: list[Point] = Field(min_length=1, max_length=MAX_ITEMS)


class RowsIn(Strict):
    node: NodeName
    rows: list[Row] = Field(min_length=1, max_length=MAX_ITEMS)
    #: Packed evaluation scores (see ForwardRequest); 0 = one ciphertext per row.
    slot_bits: int = Field(default=0, ge=0, le=512)
    additions: int = Field(default=0, ge=0, le=1024)


class GradientIn(Strict):
    node: NodeName
    rows: list[Row] = Field(min_length=1, max_length=MAX_ITEMS)
    residuals: list[CiphertextText] = Field(min_length=1, max_length=MAX_ITEMS)


class LevelSumsIn(Strict):
    node: NodeName
    #: A chunk of the fit rows (positions), and Enc(y) for each: never validation or
    #: test rows. Only the final call may be empty.
    rows: list[Row] = Field(max_length=MAX_LEVEL_SUMS_ROWS)
    labels: list[CiphertextText] = Field(max_length=MAX_LEVEL_SUMS_ROWS)
    #: How many fit rows are sent in all (the same in every call).
    total: int = Field(ge=1, le=MAX_ITEMS)
    #: The last call: the node masks its sums and answers them.
    final: bool

    @model_validator(mode="after")
    def _rows_or_final(self) -> LevelSumsIn:
        if not self.rows and not self.final:
            raise ValueError("rows may be empty only in the final call")
        return self


class ApplyLevelSumsIn(Strict):
    node: NodeName
    #: Decrypted masked sums: integers in [0, n) below 2^4096 (1234 digits).
    values: list[Annotated[str, StringConstraints(pattern=r"^[0-9]{1,1300}$")]] = Field(
        min_length=1, max_length=10_000
    )
    randomness: list[CiphertextText] = Field(min_length=1, max_length=10_000)


class ApplyIn(Strict):
    node: NodeName
    #: Signed decimal integers below 2^4096 (1234 digits).
    values: list[Annotated[str, StringConstraints(pattern=r"^-?[0-9]{1,1300}$")]] = Field(
        min_length=1, max_length=10_000
    )
    randomness: list[CiphertextText] = Field(min_length=1, max_length=10_000)
    batch_size: int = Field(ge=1, le=100_000)
    rate: float = Field(gt=0, le=100)


class ProgressIn(Strict):
    epoch: int = Field(ge=0, le=100_000)
    batch: int = Field(ge=0, le=_UINT32)
    batches: int = Field(ge=0, le=_UINT32)
    validation_loss: Number | None = None
    validation_auc: float | None = Field(default=None, ge=0, le=1)
    seconds: float | None = Field(default=None, ge=0, le=MAX_MAGNITUDE)


class FinishIn(Strict):
    #: A tree job's is its tree model's base score.
    intercept: Number
    metrics: dict[MetricName, Number] = Field(default_factory=dict, max_length=32)
    #: A tree job's published model (``trees.TreeModel`` document: shapes, the node owning
    #: each split, leaf weights, base score); checked against the job when it finishes.
    tree_model: dict[str, Any] | None = None


class FailIn(Strict):
    reason: str = Field(max_length=2000)


class CancelIn(Strict):
    reason: str = Field(default="", max_length=500)


def from_base64(items: list[str], what: str) -> list[bytes]:
    """Base64 items as the bytes a node is sent; bad base64 is a 422 naming ``what``."""
    try:
        return [base64.b64decode(i.encode("ascii"), validate=True) for i in items]
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidInputError(f"{what} must be base64") from None


def to_base64(items: Any) -> list[str]:
    """A node's bytes as the base64 text JSON carries."""
    return [base64.b64encode(bytes(i)).decode("ascii") for i in items]
