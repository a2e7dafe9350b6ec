"""The node's database: its engine, model shards, and (from ``_records``) its records.

The records and their snapshot history live in ``_records``; their names are
re-exported here, where callers have always found them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

from creditshare import migrations
from creditshare._database import open_engine
from creditshare.errors import ConflictError
from creditshare.federated import ModelShard, Preprocessing
from creditshare.node._records import ImportBatch, RecordRow, RecordStore

__all__ = ["ImportBatch", "ModelShardRow", "RecordRow", "RecordStore", "ShardStore", "make_engine"]


class ModelShardRow(SQLModel, table=True):
    """A trained model's weights for this node's features; they never leave the node.

    ``weights`` apply to the features after ``preprocessing`` (a Preprocessing
    document); none (shards kept before n0006, configured models) is the identity.
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


class ShardStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def save(self, model_id: str, shard: ModelShard, job_id: str | None = None) -> None:
        """Keep a new shard; an existing model's shard is never overwritten."""
        pre = shard.preprocessing
        with Session(self._engine) as session:
            session.add(
                ModelShardRow(
                    model_id=model_id,
                    weights=dict(shard.weights),
                    offset=shard.offset,
                    created_at=datetime.now(UTC),
                    job_id=job_id,
                    preprocessing=pre.to_document() if pre is not None else None,
                )
            )
            try:
                session.commit()
            except IntegrityError:
                raise ConflictError(
                    f"this node already holds a shard of model {model_id!r}"
                ) from None

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
        with Session(self._engine) as session:
            return {
                r.model_id: ModelShard(
                    dict(r.weights),
                    r.offset,
                    Preprocessing.from_document(r.preprocessing) if r.preprocessing else None,
                )
                for r in session.exec(select(ModelShardRow))
            }


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
