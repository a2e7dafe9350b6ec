"""Typed settings of a data node (file + ``CREDITSHARE_NODE_*`` environment)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from creditshare._logging import LogFormat, LogLevel
from creditshare._settings import EnvFirstSettings
from creditshare.crypto import VerifyKey
from creditshare.departments import Department, SchemaError, resolve_department
from creditshare.errors import InvalidKeyError
from creditshare.identity import Chain
from creditshare.pki import TlsSettings

__all__ = ["ModelShardSettings", "NodeSettings"]


class ModelShardSettings(BaseModel):
    """This node's weights for one model; they never leave the node."""

    weights: dict[str, float]


class NodeSettings(EnvFirstSettings):
    model_config = SettingsConfigDict(
        env_prefix="CREDITSHARE_NODE_", env_nested_delimiter="__", extra="forbid"
    )

    node_id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    department: str = Field(
        default="",
        description="a built-in department (tax, market, social, court, utility); "
        "may be left out when schema_file is set",
    )
    schema_file: Path | None = Field(
        default=None,
        description="the department's own schema (TOML): import columns, model features and "
        "banded indicators (`creditshare node schema check FILE` checks one)",
    )
    chain: Chain
    display_name: str = ""
    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///node.db"
    models: dict[str, ModelShardSettings] = Field(default_factory=dict)
    import_max_rows: int | None = Field(
        default=None,
        ge=1,
        description="refuse an import (`creditshare node import`) of more rows than this "
        "(none: no limit; an import's memory does not grow with its size)",
    )
    max_concurrent_requests: int = Field(default=64, ge=1, le=10_000)
    fast_encryption: bool = Field(
        default=True,
        description="keep fixed-base encryption tables (~17 MiB each) for recent requester keys",
    )
    fast_encryption_keys: int = Field(default=4, ge=1, le=64)
    training_encryption_workers: int = Field(
        default=1,
        ge=0,
        le=16,
        description="processes per training job that make encryption obfuscators ahead "
        "(0: encrypt in the serving process)",
    )
    training_job_idle_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=7 * 86_400,
        description="a training job untouched this long is dropped and its worker "
        "processes stopped (a bureau that vanished cannot hold the node's job slots)",
    )
    log_public_key: str = Field(
        description="base64 Ed25519 key that signs the coordinator's ledger tree heads"
    )
    witness_key_file: Path | None = Field(
        default=None,
        description="Ed25519 key (PEM) this node cosigns the tree heads it accepts with; "
        "made on the node by `creditshare node witness-key` (none: the node cosigns nothing)",
    )
    receipt_max_age_seconds: float = Field(default=300.0, gt=0, le=86_400)
    tls: TlsSettings | None = None
    credential_ca: Path | None = Field(
        default=None,
        description="PEM bundle of the CA certificate(s) whose participant credentials this "
        "node believes (default: tls.ca, the node's own chain CA)",
    )
    revocation_max_age_seconds: float = Field(
        default=2 * 86_400.0,
        gt=0,
        le=30 * 86_400,
        description="refuse every request while the newest revocation list from the CA is "
        "older than this (the CA issues one daily; this bounds how long a revoked "
        "credential can still be used)",
    )
    allow_insecure: bool = Field(
        default=False, description="serve without mutual TLS (tests and local development only)"
    )
    log_format: LogFormat = Field(
        default="json", description="json: one JSON object per line; text: for a terminal"
    )
    log_level: LogLevel = "info"
    shutdown_grace_seconds: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="on SIGTERM, how long in-flight calls may still run before they are "
        "cancelled (keep it below the orchestrator's kill timeout)",
    )

    stats_epsilon_per_period: float = Field(
        default=10.0,
        gt=0,
        le=1000,
        description="privacy budget: the ε each regulator's statistics queries may spend on "
        "this node per stats_budget_period, summed over its queries (refused past it)",
    )
    stats_epsilon_total_per_period: float = Field(
        default=20.0,
        gt=0,
        le=10_000,
        description="privacy budget of the node: the ε all regulators' statistics queries "
        "together may spend on this node per stats_budget_period (refused past it; at least "
        "stats_epsilon_per_period). This, not the per-regulator one, bounds what the node "
        "releases: whoever runs the chain's CA can certify any number of regulators",
    )
    stats_regulators: list[str] = Field(
        default_factory=list,
        description="the regulator ids this node answers statistics queries for (empty: any "
        "regulator the chain's CA certifies); set it so a new regulator needs the "
        "department's agreement",
    )
    stats_budget_period: Literal["month", "quarter", "year"] = Field(
        default="month",
        description="the period a regulator's privacy budget is counted over (UTC, by the "
        "time of the query's ledger record)",
    )
    stats_min_cell: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="this node withholds a statistics cell whose noisy count is below this "
        "(or below the query's min_cell, whichever is larger)",
    )
    stats_max_epsilon_per_query: float = Field(
        default=2.0,
        gt=0,
        le=10,
        description="refuse a statistics query that asks for a larger ε than this",
    )

    @field_validator("log_public_key")
    @classmethod
    def _valid_log_key(cls, value: str) -> str:
        try:
            VerifyKey.from_text(value)
        except InvalidKeyError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _total_budget_covers_one_regulator(self) -> NodeSettings:
        if round(self.stats_epsilon_total_per_period * 1000) < round(
            self.stats_epsilon_per_period * 1000
        ):
            raise ValueError(
                f"stats_epsilon_total_per_period ({self.stats_epsilon_total_per_period:g}) "
                f"must be at least stats_epsilon_per_period ({self.stats_epsilon_per_period:g})"
            )
        return self

    @model_validator(mode="after")
    def _transport_is_explicit(self) -> NodeSettings:
        if self.tls is None and not self.allow_insecure:
            raise ValueError("configure [tls] (ca, cert, key) or set allow_insecure = true")
        if self.tls is None and self.credential_ca is None:
            raise ValueError(
                "set credential_ca (the chain CA certificate): without TLS there is no CA "
                "to check requesters' and enterprises' credentials against"
            )
        return self

    @property
    def credential_ca_file(self) -> Path:
        """The CA bundle credentials are checked against (validated: one is configured)."""
        if self.credential_ca is not None:
            return self.credential_ca
        assert self.tls is not None  # the validator above guarantees one of them
        return self.tls.ca

    _department: Department | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _known_department(self) -> NodeSettings:
        """Load the schema once, at start-up: a bad schema stops the node, not a query."""
        try:
            self._department = resolve_department(self.department, self.schema_file)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        except SchemaError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _weights_name_features(self) -> NodeSettings:
        features = {f.name for f in self.department_schema.features}
        for model_id, shard in self.models.items():
            unknown = sorted(set(shard.weights) - features)
            if unknown:
                raise ValueError(
                    f"model {model_id!r} weighs unknown feature(s) {', '.join(unknown)}; "
                    f"{self.department_schema.id} features are {', '.join(sorted(features))}"
                )
        return self

    @property
    def log_key(self) -> VerifyKey:
        return VerifyKey.from_text(self.log_public_key)

    @property
    def department_schema(self) -> Department:
        """The department this node serves (validated when the settings were read)."""
        assert self._department is not None  # the validator above always sets it
        return self._department
