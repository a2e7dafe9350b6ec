"""HTTP request and response bodies: one schema per direction."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from creditshare.consent import MAX_INDICATOR_NAME, MAX_INDICATORS, Purpose
from creditshare.coordinator._settings import ScoreScale
from creditshare.identity import Chain
from creditshare.ledger import Receipt, entry_document

__all__ = [
    "CONSENT_ID_PATTERN",
    "FINGERPRINT_PATTERN",
    "ID_PATTERN",
    "REQUEST_ID_PATTERN",
    "SIGNATURE_PATTERN",
    "ConsentDocumentIn",
    "ConsentOut",
    "ConsentRevocationIn",
    "CosignFailureOut",
    "CosignRoundOut",
    "CosignatureOut",
    "Coverage",
    "CredentialIn",
    "CredentialOut",
    "EncryptedIndicatorOut",
    "FailedNode",
    "InputModel",
    "IssuedKeyOut",
    "JobOut",
    "JobSummaryOut",
    "LedgerEntryOut",
    "LedgerHeadOut",
    "LogKeyOut",
    "ModelOut",
    "NodeOut",
    "NodeRevocationOut",
    "PaillierKeyIn",
    "PaillierKeyOut",
    "ParticipantIn",
    "ParticipantOut",
    "PathIndex",
    "PathText",
    "ProofOut",
    "PublishedIndicatorOut",
    "QueryIn",
    "QueryOut",
    "RevocationListIn",
    "RevocationListOut",
    "ScoreUnavailable",
    "SignedConsentIn",
    "TreeHeadOut",
    "TreeSize",
    "WitnessedHeadOut",
]

#: Participant, model and node ids: what the registries accept, so a schema-valid id is
#: never refused later for its shape.
ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
#: A consent id is the first 128 bits of the SHA-256 of the signed grant, in hex.
CONSENT_ID_PATTERN = r"^[0-9a-f]{32}$"
#: A query or training job id the requester chose and signed: 128 bits in hex.
REQUEST_ID_PATTERN = r"^[0-9a-f]{32}$"
#: Standard base64 of a 64-byte Ed25519 signature.
SIGNATURE_PATTERN = r"^[A-Za-z0-9+/]{86}==$"
#: ``PublicKey.fingerprint()``: the first 64 bits of SHA-256 of the modulus, in hex.
FINGERPRINT_PATTERN = r"^[0-9a-f]{16}$"

#: C0 control characters (tab, newline and carriage return aside) and DEL: no text field
#: needs them, PostgreSQL cannot store NUL, and they corrupt logs and terminals.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_characters(value: Any, where: str = "") -> Any:
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise ValueError(f"{where or 'text'} contains a control character")
    elif isinstance(value, list | tuple):
        for item in value:
            _no_control_characters(item, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_control_characters(key, where)
            _no_control_characters(item, where)
    return value


class InputModel(BaseModel):
    """Base of every request body.

    Unknown fields are refused (a typo is an error, not a silently ignored setting),
    floats must be finite (NaN and Infinity are valid Python JSON but break arithmetic,
    JSON columns and PostgreSQL), and no text may hold control characters.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _text_is_printable(cls, value: Any) -> Any:
        return _no_control_characters(value)


Id = Annotated[str, Field(pattern=ID_PATTERN, examples=["bank-1"])]

#: Path and query parameters, each bounded (what a route does with a value that fits the
#: bound but names nothing is its own business: usually 404).
PathText = Annotated[str, Path(min_length=1, max_length=64)]
PathIndex = Annotated[int, Path(ge=0, le=2**63 - 1)]
TreeSize = Annotated[int, Query(ge=0, le=2**63 - 1)]


class QueryIn(InputModel):
    uscc: str = Field(
        description="18-character unified social credit code", min_length=1, max_length=64
    )
    model_id: Id
    purpose: Purpose
    consent_id: str = Field(pattern=CONSENT_ID_PATTERN)
    key_fingerprint: str = Field(
        pattern=FINGERPRINT_PATTERN,
        description="fingerprint of one of the caller's registered Paillier keys "
        "(POST /v1/paillier-keys); nodes encrypt the answer under that key",
    )
    chains: list[Chain] | None = Field(
        default=None,
        max_length=len(Chain),
        description="restrict to these chains (a set: repeats are dropped); default: the "
        "consent's chains",
    )
    query_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="chosen by the requester (128 random bits, lowercase hex): part of what "
        "it signs, so a recorded request cannot be replayed as a new one",
    )
    requested_at: AwareDatetime = Field(
        description="when the requester signed the request (UTC, whole seconds are signed)"
    )
    signature: str = Field(
        pattern=SIGNATURE_PATTERN,
        description="base64 Ed25519 signature, by the key the requester's credential "
        "certifies, over the signed-query document of exactly these fields",
    )

    @field_validator("chains")
    @classmethod
    def _distinct(cls, chains: list[Chain] | None) -> list[Chain] | None:
        return None if chains is None else sorted(set(chains))


class PaillierKeyIn(InputModel):
    public_key: str = Field(
        min_length=1,
        max_length=1400,
        description="the Paillier modulus n, standard base64 of its big-endian bytes; "
        "2048 to 4096 bits, checked thoroughly once, here",
    )


class PaillierKeyOut(BaseModel):
    fingerprint: str
    bits: int
    created_at: datetime
    retired_at: datetime | None
    active: bool


class ConsentDocumentIn(InputModel):
    """The grant exactly as the enterprise signed it (see ``creditshare.consent``)."""

    uscc: str = Field(min_length=1, max_length=64)
    grantee: Id
    purpose: Purpose
    chains: list[Chain] = Field(min_length=1, max_length=len(Chain))
    indicators: list[Annotated[str, Field(min_length=1, max_length=MAX_INDICATOR_NAME)]] = Field(
        min_length=1, max_length=MAX_INDICATORS
    )
    valid_from: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
    valid_until: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
    max_uses: int | None = Field(default=..., ge=1, le=1_000_000)
    nonce: str = Field(min_length=8, max_length=64)


class SignedConsentIn(InputModel):
    document: ConsentDocumentIn
    signature: str = Field(
        min_length=1, max_length=128, description="Ed25519 signature, standard base64"
    )


class ConsentRevocationDocumentIn(InputModel):
    v: Literal[1]
    type: Literal["consent_revocation"]
    consent_id: str = Field(pattern=CONSENT_ID_PATTERN)
    uscc: str = Field(min_length=18, max_length=18)
    time: str = Field(max_length=20, description="UTC, like 2026-01-31T12:00:00Z")


class ConsentRevocationIn(InputModel):
    """The enterprise's signed revocation: nodes keep it and refuse the consent themselves."""

    document: ConsentRevocationDocumentIn
    signature: str = Field(pattern=SIGNATURE_PATTERN)


class NodeRevocationOut(BaseModel):
    node: str
    chain: Chain
    #: The node now holds the enterprise's signed revocation (it verified the signature).
    holds_revocation: bool
    reason: str | None = None


class CredentialIn(InputModel):
    certificate: str = Field(
        min_length=1,
        max_length=8192,
        description="the credential the chain CA issued (PEM), certifying your signing key",
    )


class CredentialOut(BaseModel):
    fingerprint: str
    participant_id: str
    serial: str
    not_after: datetime


class RevocationListIn(InputModel):
    crl: str = Field(
        min_length=1,
        max_length=60_000,
        description="a chain CA's revocation list (PEM; the body limit is 64 KiB)",
    )


class RevocationListOut(BaseModel):
    issuer: str
    number: int
    this_update: datetime
    next_update: datetime


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


class ScoreUnavailable(BaseModel):
    """A tree model's score could not be computed: a node of its scoring chain failed.
    The answer then holds no score (``encrypted_score`` is null; a packed slot 0 is not
    a score): the SDK raises ``ScoreUnavailableError``; indicators are still there."""

    node: str
    chain: Chain
    reason: str


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
    score_unavailable: ScoreUnavailable | None = Field(
        default=None,
        description="set when a tree model's scoring chain failed: the answer holds no score",
    )
    indicators: list[EncryptedIndicatorOut]
    coverage: Coverage


class NodeOut(BaseModel):
    """A registered node and what this coordinator process last saw of it (each replica
    probes on its own: see coordinator/README.md)."""

    id: str
    chain: Chain
    department: str
    address: str
    reachable: bool | None = Field(
        description="whether the node answers (its last probe or call); null: not tried yet"
    )
    last_answer_at: datetime | None = Field(
        description="when the node last answered a probe or a real call"
    )
    last_latency_ms: float | None = Field(
        description="how long that answer took (a query's includes the node's encryption); "
        "operators only, null for other callers"
    )
    version: str | None = Field(
        description="the creditshare version the node reports; null: not probed yet, a "
        "node too old to say, or a caller that is not an operator"
    )
    last_error: str | None = Field(
        description="why the node is unreachable; null while it answers, and for a caller "
        "that is not an operator"
    )


class PublishedIndicatorOut(BaseModel):
    """An indicator the network publishes: what a consent may name."""

    name: str
    description: str
    bands: list[str] = Field(description="labels of the bands, in order")
    departments: list[str]
    chains: list[Chain]
    nodes: list[str]


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
    model_type: str = Field(
        default="logistic",
        description="'logistic' (weight shards on the nodes) or 'gbdt' (gradient-boosted "
        "trees: split rules on the nodes)",
    )
    trees: int | None = Field(
        default=None,
        description="a gbdt model's number of trees (its leaf weights are not listed)",
    )
    created_at: datetime | None = Field(
        default=None, description="when a trained model was published (none: a scorecard)"
    )


class ParticipantIn(InputModel):
    id: Id
    role: str = Field(min_length=1, max_length=16)
    name: str = Field(min_length=1, max_length=200)
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
    created_at: datetime | None = Field(default=None, description="when it was registered")


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
    created_at: datetime | None = Field(default=None, description="when it was stored")
    nodes: list[NodeRevocationOut] = Field(
        default_factory=list,
        description="after a signed revocation: which data nodes now hold it themselves",
    )


class JobSummaryOut(BaseModel):
    """A training job as listed (``GET /v1/training-jobs``): all but its curve."""

    id: str
    bureau: str
    model_id: str
    model_type: str = Field(default="logistic", description="'logistic' or 'gbdt'")
    status: str = Field(description="aligning, training, finished, failed or cancelled")
    nodes: list[str]
    config: dict[str, Any]
    progress: dict[str, Any]
    sizes: dict[str, Any]
    error: str
    created_at: datetime | None = None
    updated_at: datetime | None = None


class JobOut(JobSummaryOut):
    """One training job (``GET /v1/training-jobs/{id}``): with its per-epoch curve."""

    history: list[dict[str, Any]]


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

    @classmethod
    def of(cls, receipt: Receipt) -> LedgerEntryOut:
        """The ledger's JSON form of an entry (``entry_document``; the client parses it
        back with ``parse_entry``), as a response model: every route answering a receipt
        (the ledger's, a cohort query's) uses this one form."""
        return cls.model_validate(entry_document(receipt))


class LogKeyOut(BaseModel):
    key_id: str
    public_key: str


class CosignatureOut(BaseModel):
    """A witness's C2SP cosignature/v1 over the checkpoint of ``witnessed_head``."""

    witness: str = Field(description="the witness name: a data node's id")
    key_id: str = Field(description="8 hex digits: SHA-256(name || 0x0A || 0x04 || key)[:4]")
    timestamp: int = Field(description="POSIX seconds, part of the signed message")
    signature: str = Field(description="base64 of the 64-byte Ed25519 signature")


class LedgerHeadOut(TreeHeadOut):
    """The latest head, and the newest head the nodes cosigned with their cosignatures
    (the same head when the nodes have caught up; ``null`` while none has)."""

    witnessed_head: TreeHeadOut | None = None
    cosignatures: list[CosignatureOut] = Field(
        default_factory=list, description="over witnessed_head, never over another head"
    )


class WitnessedHeadOut(BaseModel):
    head: TreeHeadOut
    cosignatures: list[CosignatureOut]


class CosignFailureOut(BaseModel):
    node: str
    reason: str


class CosignRoundOut(BaseModel):
    """What one round collected: each head cosigned (usually one) and each node without."""

    tree_size: int = Field(description="the latest head's size when the round began")
    heads: list[WitnessedHeadOut]
    failures: list[CosignFailureOut]
