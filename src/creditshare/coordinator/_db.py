"""The coordinator's own tables: participants, their credentials and consents.

The ledger keeps its tables in ``creditshare.ledger``; both live in the one
database named by ``database_url`` so a query record and the consent use it
counts commit in the same place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from creditshare import migrations
from creditshare._database import open_engine

__all__ = [
    "ApiCredential",
    "ConsentRow",
    "ModelRow",
    "PaillierKeyRow",
    "Participant",
    "TrainingJobRow",
    "make_engine",
]


class Participant(SQLModel, table=True):
    __tablename__ = "participant"

    id: str = Field(primary_key=True, max_length=64)
    role: str = Field(index=True, max_length=16)
    name: str = Field(max_length=200)
    uscc: str | None = Field(default=None, unique=True, max_length=18)
    signing_key: str | None = Field(default=None, max_length=64)
    created_at: datetime
    disabled: bool = False


class ApiCredential(SQLModel, table=True):
    """An API key, kept only as a SHA-256 hash of its secret half."""

    __tablename__ = "api_credential"

    key_id: str = Field(primary_key=True, max_length=32)
    participant_id: str = Field(foreign_key="participant.id", index=True)
    secret_sha256: str = Field(max_length=64)
    created_at: datetime
    revoked_at: datetime | None = None


class CredentialRow(SQLModel, table=True):
    """A participant's credential (X.509, from a chain CA), relayed to nodes with requests.

    The coordinator only stores and forwards these; nodes verify them against the CAs
    they trust, so a credential the coordinator invented would convince nobody.
    """

    __tablename__ = "participant_credential"

    fingerprint: str = Field(primary_key=True, max_length=64, description="SHA-256 of the DER")
    participant_id: str = Field(foreign_key="participant.id", index=True, max_length=64)
    serial: str = Field(max_length=64)
    der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    not_after: datetime
    uploaded_at: datetime


class RevocationListRow(SQLModel, table=True):
    """The newest revocation list each chain CA issued, relayed to nodes with requests."""

    __tablename__ = "relayed_revocation_list"

    issuer: str = Field(primary_key=True, max_length=64, description="SHA-256 of the issuer name")
    number: int = Field(sa_column=Column(BigInteger, nullable=False))
    der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    this_update: datetime
    next_update: datetime


class PaillierKeyRow(SQLModel, table=True):
    """A bank's or bureau's registered Paillier public key, validated once on registration.

    Queries and training jobs name a key by fingerprint; the modulus is read from here, so
    a key is checked thoroughly once and never travels in a request again. A key belongs
    to one participant (a second participant cannot claim it), and is retired rather than
    deleted, so ledger records that name its fingerprint stay explicable.
    """

    __tablename__ = "paillier_key"

    fingerprint: str = Field(primary_key=True, max_length=64)
    participant_id: str = Field(foreign_key="participant.id", index=True, max_length=64)
    modulus: str = Field(max_length=1024, description="base64 of the big-endian modulus n")
    bits: int
    created_at: datetime
    retired_at: datetime | None = None


class ConsentRow(SQLModel, table=True):
    __tablename__ = "consent"
    #: The consent listing's pages (newest first, ``ORDER BY created_at DESC, id DESC``)
    #: for each kind of viewer: a grantee's, an enterprise's, an operator's (all).
    __table_args__ = (
        Index("ix_consent_grantee_created_at_id", "grantee", "created_at", "id"),
        Index("ix_consent_uscc_created_at_id", "uscc", "created_at", "id"),
        Index("ix_consent_created_at_id", "created_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=32)
    uscc: str = Field(index=True, max_length=18)
    grantee: str = Field(foreign_key="participant.id", index=True)
    purpose: str = Field(max_length=32)
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    signature: str = Field(max_length=128)
    valid_from: datetime
    valid_until: datetime
    max_uses: int | None = None
    uses: int = 0
    created_at: datetime
    revoked_at: datetime | None = None
    #: The enterprise's signed revocation ``{document, signature}``, relayed to the nodes.
    revocation: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class RevocationDeliveryRow(SQLModel, table=True):
    """A data node that holds (verified and kept) an enterprise's signed revocation."""

    __tablename__ = "revocation_delivery"

    consent_id: str = Field(primary_key=True, max_length=32)
    node_id: str = Field(primary_key=True, max_length=64)
    delivered_at: datetime


class ModelRow(SQLModel, table=True):
    """A model a bureau trained: intercept (or tree model) and metadata here, weight
    shards (or split rules) on the nodes."""

    __tablename__ = "trained_model"

    id: str = Field(primary_key=True, max_length=64)
    description: str = ""
    intercept: float
    trained_by: str = Field(max_length=64)
    job_id: str = Field(max_length=64)
    metrics: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    features: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime
    #: "logistic" (weight shards on the nodes) or "gbdt" (split rules on the nodes).
    model_type: str = Field(default="logistic", max_length=16)
    #: A gbdt model's published ``TreeModel`` document (shapes, owning node ids, leaf
    #: weights, base score); SQL NULL for a logistic model.
    tree_model: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )


class TrainingJobRow(SQLModel, table=True):
    __tablename__ = "training_job"
    #: The job listing's pages (newest first) for a bureau and for an operator (all).
    __table_args__ = (
        Index("ix_training_job_bureau_created_at_id", "bureau", "created_at", "id"),
        Index("ix_training_job_created_at_id", "created_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    bureau: str = Field(index=True, max_length=64)
    model_id: str = Field(max_length=64)
    status: str = Field(max_length=16, index=True)  # aligning, training, finished, failed
    nodes: list[str] = Field(sa_column=Column(JSON, nullable=False))
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    progress: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    history: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    sizes: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    public_key: str
    #: Ledger entry recording the job (bureau, key fingerprint, chains); nodes check it.
    ledger_index: int = -1
    error: str = ""
    created_at: datetime
    updated_at: datetime


def make_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine on the coordinator's database, its schema brought to the newest revision
    unless ``migrate`` is off (read-only tools: an audit must not write)."""
    engine = open_engine(url)
    if migrate:
        migrations.upgrade(engine, "coordinator")
    return engine
