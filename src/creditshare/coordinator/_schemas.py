"""HTTP request and response bodies: one schema per direction."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from creditshare.coordinator._settings import ScoreScale
from creditshare.identity import Chain

__all__ = [
    "Coverage",
    "EncryptedIndicatorOut",
    "FailedNode",
    "ModelOut",
    "NodeOut",
    "QueryIn",
    "QueryOut",
]


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uscc: str = Field(description="18-character unified social credit code", max_length=64)
    model_id: str = Field(max_length=64)
    public_key: str = Field(
        description="requester's Paillier modulus n, base64 of big-endian bytes (≥ 2048 bits)",
        max_length=4096,
    )
    chains: list[Chain] | None = Field(
        default=None, description="restrict to these chains; default: every chain"
    )


class EncryptedIndicatorOut(BaseModel):
    node: str
    chain: Chain
    department: str
    name: str
    description: str
    bands: list[str]
    ciphertext: str


class FailedNode(BaseModel):
    node: str
    chain: Chain
    reason: str


class Coverage(BaseModel):
    answered: list[str]
    failed: list[FailedNode]


class QueryOut(BaseModel):
    query_id: str
    uscc: str
    model_id: str
    scale: int
    public_key_fingerprint: str
    encrypted_score: str = Field(description="Enc(intercept + Σ partial scores) at `scale`")
    score_scale: ScoreScale
    indicators: list[EncryptedIndicatorOut]
    coverage: Coverage


class NodeOut(BaseModel):
    id: str
    chain: Chain
    department: str
    address: str


class ModelOut(BaseModel):
    id: str
    description: str
    intercept: float
    score_scale: ScoreScale
