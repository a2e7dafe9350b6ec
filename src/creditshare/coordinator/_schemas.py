"""HTTP request and response bodies: one schema per direction."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from creditshare.consent import Purpose
from creditshare.coordinator._settings import ScoreScale
from creditshare.identity import Chain

__all__ = [
    "ConsentOut",
    "Coverage",
    "EncryptedIndicatorOut",
    "FailedNode",
    "IssuedKeyOut",
    "LedgerEntryOut",
    "LogKeyOut",
    "ModelOut",
    "NodeOut",
    "ParticipantIn",
    "ParticipantOut",
    "ProofOut",
    "QueryIn",
    "QueryOut",
    "TreeHeadOut",
]


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uscc: str = Field(description="18-character unified social credit code", max_length=64)
    model_id: str = Field(max_length=64)
    purpose: Purpose
    consent_id: str = Field(max_length=64)
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
    ciphertext: str | None = Field(default=None, description="unpacked answers only")
    slot: int | None = Field(default=None, description="packed answers: the value's slot")


class FailedNode(BaseModel):
    node: str
    chain: Chain
    reason: str


class Coverage(BaseModel):
    answered: list[str]
    failed: list[FailedNode]


class PackingOut(BaseModel):
    """Slot g is in ciphertexts[g // slots_per_ciphertext], position g % slots_per_ciphertext;
    slots are balanced signed digits of slot_bits bits (see creditshare.crypto.SlotLayout)."""

    slot_bits: int
    slots_per_ciphertext: int
    additions: int
    ciphertexts: list[str]


class QueryOut(BaseModel):
    query_id: str
    ledger_index: int
    uscc: str
    model_id: str
    scale: int
    public_key_fingerprint: str
    encrypted_score: str | None = Field(
        default=None,
        description="Enc(intercept + Σ partial scores) at `scale`; in slot 0 when packed",
    )
    packing: PackingOut | None = None
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
    origin: str = Field(description="'published' (configured scorecard) or 'trained'")
    trained_by: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    features: dict[str, list[str]] = Field(
        default_factory=dict, description="per node, the features its shard weighs"
    )


class ParticipantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(max_length=64)
    role: str = Field(max_length=16)
    name: str = Field(max_length=200)
    uscc: str | None = Field(default=None, max_length=64)
    signing_key: str | None = Field(
        default=None, max_length=64, description="enterprise's Ed25519 public key, base64"
    )


class ParticipantOut(BaseModel):
    id: str
    role: str
    name: str
    uscc: str | None
    signing_key: str | None
    disabled: bool = False


class IssuedKeyOut(BaseModel):
    participant: ParticipantOut
    api_key: str = Field(description="shown once; only its hash is stored")


class ConsentOut(BaseModel):
    consent_id: str
    uscc: str
    grantee: str
    purpose: str
    document: dict[str, Any]
    signature: str
    uses: int
    max_uses: int | None
    revoked: bool


class TreeHeadOut(BaseModel):
    size: int
    root: str
    timestamp_ms: int
    signature: str
    key_id: str


class ProofOut(BaseModel):
    hashes: list[str]


class LedgerEntryOut(BaseModel):
    index: int
    record: dict[str, Any]
    leaf_data: str
    inclusion_proof: list[str]
    tree_head: TreeHeadOut


class LogKeyOut(BaseModel):
    key_id: str
    public_key: str
