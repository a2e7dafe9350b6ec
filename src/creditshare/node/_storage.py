"""The node's database: its engine, model shards, and (from ``_records``) its records.

The records and their snapshot history live in ``_records``; their names are
re-exported here, where callers have always found them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

from creditshare import migrations
from creditshare._database import open_engine
from creditshare.departments import Department, derivation, derivation_change
from creditshare.errors import (
    ConfigurationError,
    ConflictError,
    CreditShareError,
    InvalidInputError,
)
from creditshare.federated import ModelShard, Preprocessing
from creditshare.node._records import ImportBatch, RecordRow, RecordStore
from creditshare.trees import TreeShard

__all__ = [
    "ImportBatch",
    "ModelShardRow",
    "RecordRow",
    "RecordStore",
    "ShardStore",
    "make_engine",
    "make_read_only_engine",
]

log = logging.getLogger("creditshare.node")

#: Key of the preprocessing document under which a shard keeps, per feature, how the
#: schema derived it when it was trained (``departments.derivation``).
SCHEMA_KEY = "schema"


class ModelShardRow(SQLModel, table=True):
    """A trained model's weights for this node's features; they never leave the node.

    ``weights`` apply to the features after ``preprocessing`` (a Preprocessing
    document); none (shards kept before n0006, configured models) is the identity.
    The document's ``schema`` entry describes how each feature was derived when the
    shard was trained (``departments.derivation``), checked against the schema at load.
    """

    __tablename__ = "model_shard"

    model_id: str = Field(primary_key=True, max_length=64)
    weights: dict[str, float] = Field(sa_column=Column(JSON, nullable=False))
    offset: float = 0.0
    created_at: datetime
    #: The training job that made it: dropping that job discards this shard (and only it).
    job_id: str | None = Field(default=None, max_length=64, index=True)
    preprocessing: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )
    #: A tree model's shard (a ``TreeShard`` document; ``weights`` is then empty).
    #: ``none_as_null``: a linear shard's row holds SQL NULL here (not JSON ``null``), so
    #: the two kinds are told apart by ``IS NULL`` in every database.
    tree: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )


class ShardStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def save(
        self,
        model_id: str,
        shard: ModelShard,
        job_id: str | None = None,
        department: Department | None = None,
    ) -> None:
        """Keep a new shard; an existing model's shard is never overwritten. With the
        ``department`` it was trained under, how each of its features was derived is
        kept too, so that a later schema that derives one differently refuses it."""
        pre = shard.preprocessing
        document = pre.to_document() if pre is not None else None
        if department is not None:
            if document is None:
                document = Preprocessing.identity(list(shard.weights)).to_document()
            features = {f.name: f for f in department.features}
            document[SCHEMA_KEY] = {
                name: derivation(department, features[name])
                for name in shard.weights
                if name in features
            }
        with Session(self._engine) as session:
            session.add(
                ModelShardRow(
                    model_id=model_id,
                    weights=dict(shard.weights),
                    offset=shard.offset,
                    created_at=datetime.now(UTC),
                    job_id=job_id,
                    preprocessing=document,
                )
            )
            try:
                session.commit()
            except IntegrityError:
                raise ConflictError(
                    f"this node already holds a shard of model {model_id!r}"
                ) from None

    def save_tree(
        self, model_id: str, shard: TreeShard, job_id: str, department: Department
    ) -> None:
        """Keep a tree model's shard (its split rules and every tree's shape); an existing
        model's shard is never overwritten. How each feature its rules split on was
        derived is kept too, as for linear shards, so a later schema that derives one
        differently refuses the model instead of routing with another meaning."""
        features = {f.name: f for f in department.features}
        unknown = [name for name in shard.features if name not in features]
        if unknown:
            raise InvalidInputError(f"feature {unknown[0]!r} is not in this node's schema")
        schema = {name: derivation(department, features[name]) for name in shard.features}
        with Session(self._engine) as session:
            session.add(
                ModelShardRow(
                    model_id=model_id,
                    weights={},
                    created_at=datetime.now(UTC),
                    job_id=job_id,
                    preprocessing={SCHEMA_KEY: schema},
                    tree=shard.to_document(),
                )
            )
            try:
                session.commit()
            except IntegrityError:
                raise ConflictError(
                    f"this node already holds a shard of model {model_id!r}"
                ) from None

    def usable_trees(
        self, department: Department | None
    ) -> tuple[dict[str, TreeShard], dict[str, str]]:
        """The tree shards this node can score with under ``department``'s schema, and per
        model it cannot, why (as ``usable`` for linear shards)."""
        shards: dict[str, TreeShard] = {}
        refused: dict[str, str] = {}
        with Session(self._engine) as session:
            rows = list(session.exec(select(ModelShardRow).where(ModelShardRow.tree.isnot(None))))  # type: ignore[union-attr]
        for row in rows:
            try:
                shard = TreeShard.from_document(row.tree or {})
            except (CreditShareError, KeyError, TypeError, ValueError, AttributeError):
                log.warning("the stored shard of model %r is malformed; refusing it", row.model_id)
                refused[row.model_id] = (
                    f"this node's stored shard of model {row.model_id!r} is unreadable; retrain"
                )
                continue
            reason = None
            if department is not None:
                reason = _derivation_mismatch(row, shard.features, department)
            if reason is None:
                shards[row.model_id] = shard
            else:
                refused[row.model_id] = reason
        return shards, refused

    def discard_job(self, job_id: str) -> list[str]:
        """Delete the shard training job ``job_id`` kept, if any (its model was never
        registered); the model ids discarded. Idempotent."""
        with Session(self._engine) as session:
            rows = session.exec(select(ModelShardRow).where(ModelShardRow.job_id == job_id)).all()
            for row in rows:
                session.delete(row)
            session.commit()
            return [row.model_id for row in rows]

    def load(self) -> dict[str, ModelShard]:
        """Every readable shard (a malformed row is logged and skipped)."""
        return self.usable(None)[0]

    def usable(self, department: Department | None) -> tuple[dict[str, ModelShard], dict[str, str]]:
        """The shards this node can score with under ``department``'s schema, and per
        model it cannot, why (a refusal naming the model and feature, no value).

        One malformed row refuses its own model, never every model; a shard whose
        feature is gone from the schema or derived differently (a level reordered, a
        transform changed...) is refused rather than scored with another meaning."""
        shards: dict[str, ModelShard] = {}
        refused: dict[str, str] = {}
        with Session(self._engine) as session:
            rows = list(session.exec(select(ModelShardRow).where(ModelShardRow.tree.is_(None))))  # type: ignore[union-attr]
        for row in rows:
            try:
                shard = _shard_of(row)
            except (CreditShareError, KeyError, TypeError, ValueError, AttributeError):
                log.warning("the stored shard of model %r is malformed; refusing it", row.model_id)
                refused[row.model_id] = (
                    f"this node's stored shard of model {row.model_id!r} is unreadable; retrain"
                )
                continue
            reason = None if department is None else _mismatch(row, shard, department)
            if reason is None:
                shards[row.model_id] = shard
            else:
                refused[row.model_id] = reason
        return shards, refused


def _shard_of(row: ModelShardRow) -> ModelShard:
    document = row.preprocessing
    weights = {str(name): float(weight) for name, weight in dict(row.weights).items()}
    pre = Preprocessing.from_document(document) if document else None
    return ModelShard(weights, float(row.offset), pre)


def _mismatch(row: ModelShardRow, shard: ModelShard, department: Department) -> str | None:
    """Why ``department``'s schema cannot score ``shard`` (None: it can): its features'
    derivations, and the WOE levels it was trained on."""
    woe = (
        {}
        if shard.preprocessing is None
        else {f.name: f.woe.levels for f in shard.preprocessing.features if f.woe is not None}
    )
    return _derivation_mismatch(row, tuple(shard.weights), department, woe=woe, legacy=True)


def _derivation_mismatch(
    row: ModelShardRow,
    names: tuple[str, ...],
    department: Department,
    *,
    woe: Mapping[str, tuple[str, ...]] | None = None,
    legacy: bool = False,
) -> str | None:
    """Why ``department``'s schema cannot use the features ``names`` of a shard (None: it
    can); logged here with the model, feature and the part of its derivation that changed.

    ``woe``: per feature, the levels its WOE table was trained on (a prefix of the
    schema's). ``legacy``: a shard kept before derivations were stored still counts
    (only logistic shards predate them; tree shards always store theirs).
    """
    features = {f.name: f for f in department.features}
    stored = (row.preprocessing or {}).get(SCHEMA_KEY)
    for name in names:
        feature = features.get(name)
        if feature is None:
            change: str | None = "it is no longer in the schema"
        elif isinstance(stored, Mapping):
            described = stored.get(name)
            if isinstance(described, Mapping):
                part = derivation_change(described, derivation(department, feature))
                change = None if part is None else f"its {part} changed"
            else:
                change = "no derivation was stored for it"
        else:
            change = None if legacy else "no derivation was stored for it"
        levels = None if woe is None else woe.get(name)
        if (
            change is None
            and levels is not None
            and feature is not None
            and feature.levels[: len(levels)] != levels
        ):
            change = "its levels changed"
        if change is not None:
            log.warning(
                "model %r was trained on a different schema of feature %r (%s): its "
                "queries are refused until it is retrained",
                row.model_id,
                name,
                change,
            )
            return (
                f"model {row.model_id!r} was trained on a different schema of feature "
                f"{name!r}; retrain"
            )
    return None


def _sqlite_wal(connection: Any, _record: Any) -> None:
    """WAL with synchronous=NORMAL: a commit is an append to the log, not a full fsync.

    Every answered query writes the node's trusted head and access-log row; in WAL a
    crash cannot corrupt the database, and at worst the last commits before a power
    loss are lost (the node then trusts an older head, which is still checked for
    consistency).
    """
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine on a node's database, its schema brought to the newest revision unless
    ``migrate`` is off (read-only tools)."""
    engine = open_engine(url)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_wal)
    if migrate:
        migrations.upgrade(engine, "node")
    return engine


def _sqlite_query_only(connection: Any, _record: Any) -> None:
    """Refuse every write on this connection (SQLite's ``query_only``). The connection
    itself is opened read-write so that, on a WAL database a node is serving, it may use
    (and if need be create) the ``-shm`` index every reader needs."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def make_read_only_engine(url: str) -> Engine:
    """An engine on a node's database that cannot write to it, for tools that only read
    (``node imports|access-log|refusals``, the department console): on SQLite every
    connection is ``query_only``; on PostgreSQL every transaction is read only
    (``default_transaction_read_only``, set when the session starts). The schema is
    never migrated from here."""
    if url.startswith("sqlite"):
        engine = open_engine(url)
        event.listen(engine, "connect", _sqlite_query_only)
        return engine
    if url.startswith("postgresql"):
        engine = open_engine(url)
        event.listen(engine, "connect", _postgres_read_only)
        return engine
    raise ConfigurationError(
        f"a node database must be SQLite or PostgreSQL, not {url.split(':', 1)[0]}"
    )


def _postgres_read_only(connection: Any, _record: Any) -> None:
    """Every transaction of this session is READ ONLY: PostgreSQL refuses any write."""
    cursor = connection.cursor()
    cursor.execute("SET default_transaction_read_only = on")
    cursor.close()
    connection.commit()  # the SET ran in a transaction of its own: keep it
