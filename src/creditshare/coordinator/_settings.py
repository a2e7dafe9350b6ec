"""Typed settings of the coordinator (file + ``CREDITSHARE_COORDINATOR_*`` environment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, IPvAnyNetwork, PrivateAttr, model_validator
from pydantic_settings import SettingsConfigDict

from creditshare._logging import LogFormat, LogLevel
from creditshare._settings import EnvFirstSettings
from creditshare.crypto import MAX_SCALE
from creditshare.errors import InvalidInputError
from creditshare.identity import Chain
from creditshare.pki import TlsSettings
from creditshare.trees import TreeModel, check_leaf_spans

__all__ = ["CoordinatorSettings", "ModelEntry", "NodeEntry", "ScoreScale"]


class NodeEntry(BaseModel):
    """A data node registered on one of the regional chains."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    chain: Chain
    department: str
    address: str = Field(description="host:port of the node's gRPC endpoint")


class ScoreScale(BaseModel):
    """How a linear log-odds score maps to points: published with the model.

    points = base_score - (points_to_double_odds / ln 2) * (linear + ln(base_odds)),
    clamped to [minimum, maximum]; so base_odds:1 good:bad odds score base_score and
    every doubling of those odds adds points_to_double_odds.
    """

    base_score: float = 600.0
    base_odds: float = Field(default=50.0, gt=0)
    points_to_double_odds: float = Field(default=40.0, gt=0)
    minimum: float = 300.0
    maximum: float = 900.0

    @model_validator(mode="after")
    def _ordered(self) -> ScoreScale:
        if self.minimum >= self.maximum:
            raise ValueError("score scale minimum must be below its maximum")
        return self


class ModelEntry(BaseModel):
    """A scoring model: per-node weights (or split rules) live on the nodes; the rest here.

    A logistic model is its ``intercept``; a gradient-boosted-tree model (``model_type``
    "gbdt") is its published ``tree_model`` document (``trees.TreeModel``: shapes, the
    node owning each split, leaf weights, base score; never a feature or threshold).
    """

    id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    intercept: float = 0.0
    score_scale: ScoreScale = Field(default_factory=ScoreScale)
    model_type: Literal["logistic", "gbdt"] = "logistic"
    tree_model: dict[str, Any] | None = None
    _trees: TreeModel | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _tree_model_matches_type(self) -> ModelEntry:
        if self.model_type == "gbdt":
            if self.tree_model is None:
                raise ValueError("a gbdt model needs its tree_model document")
            try:
                self._trees = TreeModel.from_document(self.tree_model)
                check_leaf_spans(self._trees)  # else no node would ever score it
            except InvalidInputError as exc:
                raise ValueError(f"tree_model: {exc}") from None
        elif self.tree_model is not None:
            raise ValueError("only a gbdt model has a tree_model")
        return self

    @property
    def trees(self) -> TreeModel | None:
        """The parsed tree model (None for a logistic model)."""
        return self._trees


class CoordinatorSettings(EnvFirstSettings):
    model_config = SettingsConfigDict(
        env_prefix="CREDITSHARE_COORDINATOR_", env_nested_delimiter="__", extra="forbid"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    nodes: list[NodeEntry] = Field(default_factory=list)
    models: list[ModelEntry] = Field(default_factory=list)
    node_deadline_seconds: float = Field(default=3.0, gt=0, le=60)
    revocation_relay_interval_seconds: float = Field(
        default=60.0,
        ge=0,
        le=86_400,
        description="how often enterprises' signed consent revocations are handed again to "
        "nodes that do not hold them yet (0: only when the enterprise revokes)",
    )
    request_max_skew_seconds: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="a signed query or training job must be sent within this long of the "
        "time it was signed (nodes apply their own receipt_max_age_seconds too)",
    )
    witness_interval_seconds: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="how often every node is asked to cosign the latest tree head "
        "(0: only when someone calls POST /v1/ledger/cosign)",
    )
    node_probe_interval_seconds: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="how often every node is asked its Info (id and version) for the "
        "reachability GET /v1/nodes and /readyz report (0: only real calls update it)",
    )
    node_probe_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="a node that has not answered a probe within this long is reported unreachable",
    )
    scale: int = Field(
        default=10**9,
        ge=1,
        le=MAX_SCALE,
        description="fixed-point scale of the values nodes encrypt for a bank: 10**9 keeps a "
        "bank-path score within 1e-9 per node of the plaintext model",
    )
    database_url: str = "sqlite:///coordinator.db"
    log_signing_key_file: Path = Field(
        description="PEM Ed25519 key that signs the ledger's tree heads "
        "(`creditshare coordinator init-key` makes one)"
    )
    tls: dict[Chain, TlsSettings] = Field(
        default_factory=dict,
        description="per chain: that chain's CA and the coordinator's client certificate",
    )
    allow_insecure: bool = Field(
        default=False, description="talk to nodes without mutual TLS (tests and development only)"
    )
    pack_profiles: bool = Field(
        default=True,
        description="ask nodes for packed answers: the bank decrypts one or two ciphertexts",
    )
    slot_bits: int = Field(default=64, ge=32, le=128)
    participant_requests_per_minute: int = Field(default=600, ge=1)
    training_steps_per_minute: int = Field(
        default=20_000,
        ge=1,
        description="relayed training steps (PSI, open, forward, gradient, apply, progress) "
        "per bureau per minute, counted apart from participant_requests_per_minute",
    )
    enterprise_queries_per_day: int = Field(
        default=200,
        ge=1,
        description="queries one requester may make about one enterprise in 24 h (each "
        "lender has its own budget; a refused query spends none of it)",
    )
    refusals_per_day: int = Field(
        default=20,
        ge=1,
        description="refused queries of one requester about one enterprise recorded in "
        "24 h; beyond it: 429 and nothing recorded, so an access log cannot be flooded",
    )
    auth_failures_per_key_id_per_minute: int = Field(
        default=10,
        ge=1,
        description="failed authentications naming one key id per minute; beyond it "
        "that key id gets 429, except from addresses it was used from successfully",
    )
    forwarded_allow_ips: list[str] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="addresses or networks (CIDR) of the reverse proxies whose "
        "X-Forwarded-For names the client: behind a load balancer, list it, or every "
        "client shares the proxy's address in the per-address limits",
    )
    auth_failures_per_address_per_minute: int = Field(
        default=60,
        ge=1,
        description="failed authentications from one client address per minute; beyond "
        "it that address gets 429",
    )
    rate_limit_store: Literal["memory", "database"] = Field(
        default="memory",
        description="where rate-limit counts live: this process, or the database that "
        "every coordinator replica shares (use with more than one replica)",
    )
    log_format: LogFormat = Field(
        default="json", description="json: one JSON object per line; text: for a terminal"
    )
    log_level: LogLevel = "info"
    shutdown_grace_seconds: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="on SIGTERM, how long in-flight requests may still run before they are "
        "cancelled (keep it below the orchestrator's kill timeout)",
    )
    training_job_idle_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=7 * 86_400,
        description="a training job with no relayed call or progress report for this long "
        "fails, its nodes drop it and its model id is free again",
    )
    training_jobs_per_bureau: int = Field(
        default=3,
        ge=1,
        le=64,
        description="training jobs one bureau may run at once (each holds a slot on every "
        "node it names)",
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="largest request body on every route but the training relays; a larger "
        "one is answered 413 before it is read",
    )
    max_training_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="largest body of a training relay (PSI points, ciphertext batches), "
        "accepted only after the caller authenticated as a bureau",
    )
    monitoring_interval_seconds: float = Field(
        default=3600.0,
        ge=0,
        le=7 * 86_400,
        description="how often a post-loan monitoring cycle asks every node for its sealed "
        "alert batches (0: only when an operator runs one, POST /v1/monitoring/cycles)",
    )
    alert_retention_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="sealed alert batches (and the webhook calls that carried them) older than "
        "this are deleted; a cursor pointing into them is answered 410",
    )
    webhook_max_attempts: int = Field(
        default=12,
        ge=1,
        le=100,
        description="attempts to deliver one webhook call before it is marked failed (its "
        "alerts stay readable through GET /v1/alerts)",
    )
    webhook_initial_backoff_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="wait before the first retry of a failed webhook call; doubles with "
        "each further attempt",
    )
    webhook_max_backoff_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=86_400,
        description="longest wait between two attempts of one webhook call",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="how long one webhook call may take before it counts as failed",
    )
    webhook_allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        max_length=64,
        description="loopback, private or reserved networks webhook URLs may point into (a "
        "bank's endpoint on the chain's intranet); public addresses are always allowed",
    )
    metrics_require_operator_key: bool = Field(
        default=False,
        description="GET /metrics only with an operator's API key (for a listener the "
        "network does not already keep from the public)",
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> CoordinatorSettings:
        for kind, ids in (
            ("node", [n.id for n in self.nodes]),
            ("model", [m.id for m in self.models]),
        ):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} id(s): {', '.join(dupes)}")
        if not self.allow_insecure:
            missing = sorted({n.chain.value for n in self.nodes if n.chain not in self.tls})
            if missing:
                raise ValueError(
                    f"no [tls.<chain>] for chain(s) {', '.join(missing)}; "
                    "configure mutual TLS or set allow_insecure = true"
                )
        return self
