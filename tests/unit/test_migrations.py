"""Alembic migrations, on SQLite and PostgreSQL: empty databases, the previous
revision with data in it, databases made before migrations existed, concurrent
upgrades, and a schema that matches the models exactly."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.runtime.environment import EnvironmentContext
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel
from typer.testing import CliRunner

from creditshare import migrations
from creditshare._database import open_engine
from creditshare.cli import app

# The models the migrations must reproduce (importing them registers their tables).
from creditshare.coordinator import _cosignatures as coordinator_cosignatures  # noqa: F401
from creditshare.coordinator import _db as coordinator_db  # noqa: F401
from creditshare.coordinator import _limits as coordinator_limits  # noqa: F401
from creditshare.coordinator.monitoring import _tables as coordinator_monitoring  # noqa: F401
from creditshare.errors import ConfigurationError
from creditshare.ledger import (
    Frontier,
    Ledger,
    LogSigner,
    SqlLedgerStorage,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_log,
)
from creditshare.ledger import _sql as ledger_sql  # noqa: F401
from creditshare.ledger._backfill import backfill_nodes
from creditshare.node import _stats_tables as node_stats_tables  # noqa: F401
from creditshare.node import _storage as node_storage
from creditshare.node import _trust as node_trust  # noqa: F401
from creditshare.node.monitoring import _tables as node_monitoring  # noqa: F401

TABLES = {
    "coordinator": {
        "participant",
        "api_credential",
        "consent",
        "trained_model",
        "training_job",
        "ledger_leaf",
        "ledger_head",
        "ledger_node",
        "rate_limit_bucket",
        "paillier_key",
        "participant_credential",
        "relayed_revocation_list",
        "tree_head_cosignature",
        "revocation_delivery",
        "monitoring_subscription",
        "monitoring_registration",
        "monitoring_cycle",
        "monitoring_node_ack",
        "monitoring_alert",
        "monitoring_alert_pruned",
        "monitoring_webhook",
        "monitoring_webhook_delivery",
    },
    "node": {
        "enterprise_record",
        "import_batch",
        "model_shard",
        "trusted_tree_head",
        "access_log",
        "revoked_consent",
        "revocation_list",
        "refusal_log",
        "previous_record",
        "watched_subscription",
        "alert_event",
        "monitor_cycle",
        "stats_cube",
        "privacy_spend",
    },
}
PREVIOUS = {"coordinator": "c0001", "node": "n0001"}
NEW_INDEX = {
    "coordinator": ("training_job", "ix_training_job_status"),
    "node": ("access_log", "ix_access_log_answered_at"),
}
SERVICES = ("coordinator", "node")


def _engine(url: str) -> Engine:
    return open_engine(url)


#: Tables that later revisions add (not there when migrations began).
LATER_TABLES = {
    "coordinator": {
        "ledger_node",
        "rate_limit_bucket",
        "paillier_key",
        "participant_credential",
        "relayed_revocation_list",
        "tree_head_cosignature",
        "revocation_delivery",
        "monitoring_subscription",
        "monitoring_registration",
        "monitoring_cycle",
        "monitoring_node_ack",
        "monitoring_alert",
        "monitoring_alert_pruned",
        "monitoring_webhook",
        "monitoring_webhook_delivery",
    },
    "node": {
        "revoked_consent",
        "revocation_list",
        "refusal_log",
        "previous_record",
        "watched_subscription",
        "alert_event",
        "monitor_cycle",
        "stats_cube",
        "privacy_spend",
    },
}
#: Columns that later revisions add to tables that were there from the start.
LATER_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "coordinator": {"consent": ("revocation",), "trained_model": ("model_type", "tree_model")},
    "node": {
        "model_shard": ("job_id", "preprocessing", "tree"),
        "import_batch": ("added", "changed", "removed", "unchanged"),
    },
}


#: Indexes that later revisions add to tables that were there from the start.
LATER_INDEXES: dict[str, dict[str, set[str]]] = {
    "coordinator": {
        "consent": {
            "ix_consent_grantee_created_at_id",
            "ix_consent_uscc_created_at_id",
            "ix_consent_created_at_id",
        },
        "training_job": {"ix_training_job_bureau_created_at_id", "ix_training_job_created_at_id"},
    },
    "node": {},
}


def _models(service: str, tables: set[str] | None = None) -> MetaData:
    metadata = MetaData()
    for name in TABLES[service] if tables is None else tables:
        SQLModel.metadata.tables[name].to_metadata(metadata)
    return metadata


def _indexes(engine: Engine, table: str) -> set[str]:
    return {str(i["name"]) for i in inspect(engine).get_indexes(table)}


@pytest.mark.parametrize("service", SERVICES)
def test_empty_database_upgrades_to_a_schema_equal_to_the_models(
    database_url: str, service: str
) -> None:
    engine = _engine(database_url)
    assert migrations.current(engine, service) is None
    assert migrations.upgrade(engine, service) == migrations.head(service)
    assert migrations.current(engine, service) == migrations.head(service)
    names = set(inspect(engine).get_table_names())
    assert names == TABLES[service] | {migrations.version_table(service)}
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": migrations.version_table(service)}
        )
        diff = compare_metadata(context, _models(service))
    assert diff == [], f"models and migrations disagree: {diff}"
    # Idempotent: a second upgrade is a no-op.
    assert migrations.upgrade(engine, service) == migrations.head(service)
    engine.dispose()


def test_previous_coordinator_revision_with_data_upgrades(database_url: str) -> None:
    engine = _engine(database_url)
    assert migrations.upgrade(engine, "coordinator", PREVIOUS["coordinator"]) == "c0001"
    table, index = NEW_INDEX["coordinator"]
    assert index not in _indexes(engine, table)
    now = datetime(2026, 11, 26, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO participant (id, role, name, created_at, disabled) "
                "VALUES ('bank-1', 'bank', 'A Bank', :t, false)"
            ),
            {"t": now},
        )
        conn.execute(
            text("INSERT INTO ledger_leaf (idx, data, leaf_hash, subject) VALUES (0, :d, :h, 'x')"),
            {"d": b"record", "h": bytes(32)},
        )
    assert migrations.upgrade(engine, "coordinator") == migrations.head("coordinator")
    assert index in _indexes(engine, table)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM participant")).scalar() == "A Bank"
        assert conn.execute(text("SELECT data FROM ledger_leaf")).scalar() == b"record"
    engine.dispose()


def test_previous_node_revision_with_data_upgrades(database_url: str) -> None:
    engine = _engine(database_url)
    migrations.upgrade(engine, "node", PREVIOUS["node"])
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO trusted_tree_head (id, size, root, timestamp_ms, signature, key_id) "
                "VALUES (1, 5, :r, :t, :s, 'k')"
            ),
            # A real millisecond timestamp: needs a 64-bit column on PostgreSQL.
            {"r": bytes(32), "t": 1_795_000_000_000, "s": bytes(64)},
        )
        conn.execute(
            text(
                "INSERT INTO import_batch (id, files, sha256, rows, imported_at) "
                "VALUES (1, 'old.csv', :h, 1, :t)"
            ),
            {"h": "0" * 64, "t": datetime(2026, 11, 1, tzinfo=UTC)},
        )
        conn.execute(
            text(
                "INSERT INTO enterprise_record (uscc, data, batch_id) "
                "VALUES ('91310101MA00000011', '{\"x\": 1}', 1)"
            )
        )
    assert migrations.upgrade(engine, "node") == migrations.head("node")
    assert NEW_INDEX["node"][1] in _indexes(engine, "access_log")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT timestamp_ms FROM trusted_tree_head")).scalar() == (
            1_795_000_000_000
        )
    # An import from before snapshots: kept, its counts unknown (NULL), not invented.
    store = node_storage.RecordStore(engine)
    assert store.count() == 1
    [old] = store.snapshots()
    assert (old.files, old.rows, old.added, old.changed, old.removed) == (
        "old.csv",
        1,
        None,
        None,
        None,
    )
    engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_database_made_before_migrations_is_adopted(database_url: str, service: str) -> None:
    """Tables from ``create_all`` (how earlier versions made them), no version table."""
    engine = _engine(database_url)
    metadata = _models(service, TABLES[service] - LATER_TABLES[service])
    table, index = NEW_INDEX[service]
    metadata.tables[table].indexes = {i for i in metadata.tables[table].indexes if i.name != index}
    for name, columns in LATER_COLUMNS[service].items():
        old = metadata.tables[name]
        for column in columns:
            old.indexes = {i for i in old.indexes if column not in i.columns}
            old._columns.remove(old.c[column])
    for name, later in LATER_INDEXES[service].items():
        old = metadata.tables[name]
        old.indexes = {i for i in old.indexes if i.name not in later}
    metadata.create_all(engine)
    assert migrations.current(engine, service) is None
    assert migrations.upgrade(engine, service) == migrations.head(service)
    assert index in _indexes(engine, table)
    for name, later in LATER_INDEXES[service].items():
        assert later <= _indexes(engine, name)
    engine.dispose()


def _downgrade(engine: Engine, service: str, revision: str) -> None:
    """Step ``service``'s schema back to ``revision`` (the services never do; an
    operator rolling back a release does, with Alembic)."""
    script = migrations._script(service)
    with (
        engine.begin() as conn,
        EnvironmentContext(
            migrations._config(service),
            script,
            fn=lambda rev, _context: script._downgrade_revs(revision, rev),
            destination_rev=revision,
        ) as env,
    ):
        env.configure(connection=conn, version_table=migrations.version_table(service))
        with env.begin_transaction():
            env.run_migrations()


def test_listing_indexes_come_with_c0010_and_go_with_its_downgrade(database_url: str) -> None:
    """c0010 adds the (viewer, created_at, id) indexes of the consent and job listings,
    keeping the rows; its downgrade drops exactly those and a new upgrade restores them."""
    engine = _engine(database_url)
    assert migrations.upgrade(engine, "coordinator", "c0009") == "c0009"
    now = datetime(2026, 11, 30, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO training_job (id, bureau, model_id, status, nodes, config, "
                "progress, history, sizes, public_key, ledger_index, error, created_at, "
                "updated_at) VALUES ('j1', 'bureau-1', 'm1', 'finished', '[]', '{}', '{}', "
                "'[]', '{}', '', -1, '', :t, :t)"
            ),
            {"t": now},
        )
    before = {t: _indexes(engine, t) for t in LATER_INDEXES["coordinator"]}
    for table, later in LATER_INDEXES["coordinator"].items():
        assert not later & before[table]
    assert migrations.upgrade(engine, "coordinator", "c0010") == "c0010"
    for table, later in LATER_INDEXES["coordinator"].items():
        assert _indexes(engine, table) == before[table] | later
    _downgrade(engine, "coordinator", "c0009")
    assert migrations.current(engine, "coordinator") == "c0009"
    assert {t: _indexes(engine, t) for t in before} == before
    assert migrations.upgrade(engine, "coordinator") == migrations.head("coordinator")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM training_job")).scalar() == "j1"
    engine.dispose()


def test_c0011_backfills_the_ledger_interior_nodes(database_url: str) -> None:
    """A ledger written before c0011 (leaves and heads, no interior nodes) gets every
    node its leaves complete, streamed in pages smaller than the log; a coordinator
    then starts on it (the start-up check reads those nodes), proves and appends, and
    the downgrade drops the table and nothing else."""
    engine = _engine(database_url)
    assert migrations.upgrade(engine, "coordinator", "c0010") == "c0010"
    signer = LogSigner.from_private_bytes(bytes(range(32)))
    size = 1_030  # beyond START_TAIL, so the start-up check relies on stored nodes
    hashes = [leaf_hash(b"old %d" % i) for i in range(size)]
    frontier = Frontier()
    with engine.begin() as conn:
        for i, h in enumerate(hashes):
            frontier.append(h)
            head = signer.sign_head(i + 1, frontier.root(), 1_000 + i)
            conn.execute(
                text(
                    "INSERT INTO ledger_leaf (idx, data, leaf_hash, subject) "
                    "VALUES (:i, :d, :h, 's')"
                ),
                {"i": i, "d": b"old %d" % i, "h": h},
            )
            conn.execute(
                text(
                    "INSERT INTO ledger_head (size, root, timestamp_ms, signature, key_id) "
                    "VALUES (:s, :r, :t, :g, :k)"
                ),
                {"s": i + 1, "r": head.root, "t": 1_000 + i, "g": head.signature, "k": head.key_id},
            )
    with engine.begin() as conn:
        blob = "BYTEA" if engine.dialect.name == "postgresql" else "BLOB"
        conn.execute(text(f"CREATE TABLE ledger_node (level SMALLINT, idx BIGINT, hash {blob})"))
        seen: list[int] = []
        assert backfill_nodes(conn, page=100, progress=seen.append) == size
        assert seen[-1] == size and len(seen) > 5
        count = conn.execute(text("SELECT count(*) FROM ledger_node")).scalar()
        conn.execute(text("DROP TABLE ledger_node"))
    assert count == size - size.bit_count()  # n - popcount(n) complete perfect subtrees
    assert migrations.upgrade(engine, "coordinator") == migrations.head("coordinator")
    storage = SqlLedgerStorage(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ledger_node")).scalar() == count
    ledger = Ledger(storage, signer, lambda: datetime(2026, 11, 30, tzinfo=UTC))
    assert ledger.check_storage() is None
    for index, at in [(0, size), (511, 1_024), (1_029, size), (700, 777)]:
        assert ledger.inclusion_proof(index, at) == inclusion_proof(index, hashes, size=at)
    assert ledger.consistency_proof(513, size) == consistency_proof(513, hashes)
    receipt = ledger.append(b"new", "s")
    assert receipt.index == size
    receipt.verify(signer.public_key)
    assert verify_log(storage, signer.public_key).ok
    _downgrade(engine, "coordinator", "c0010")
    assert "ledger_node" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ledger_leaf")).scalar() == size + 1
    engine.dispose()


def test_concurrent_upgrades_from_two_replicas_agree(database_url: str) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        engine = _engine(database_url)
        try:
            results.append(migrations.upgrade(engine, "coordinator"))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [migrations.head("coordinator")] * 4
    engine = _engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT version_num FROM creditshare_coordinator_version"))
        assert [r[0] for r in rows] == [migrations.head("coordinator")]
    engine.dispose()


def test_unknown_service_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no migrations for 'bank'"):
        migrations.head("bank")


def test_cli_upgrades_and_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    runner = CliRunner()
    behind = runner.invoke(app, ["db", "current", "node", "--url", url])
    assert behind.exit_code == 1 and "no revision" in behind.output
    done = runner.invoke(app, ["db", "upgrade", "node", "--url", url])
    assert done.exit_code == 0, done.output
    assert f"empty -> {migrations.head('node')}" in done.output
    now = runner.invoke(app, ["db", "current", "node", "--url", url])
    assert now.exit_code == 0 and f"at {migrations.head('node')}" in now.output
    wrong = runner.invoke(app, ["db", "upgrade", "bank", "--url", url])
    assert wrong.exit_code != 0 and "coordinator, node" in wrong.output
    missing = runner.invoke(app, ["db", "upgrade", "node"])
    assert missing.exit_code != 0 and "--config" in missing.output


def test_rate_limits_in_the_database_are_shared_by_replicas(database_url: str) -> None:
    """Two limiters on one database (two coordinator replicas) count the same hits; a
    refused hit is not counted; the window slides."""
    from creditshare.coordinator._limits import DatabaseWindowLimiter
    from creditshare.errors import RateLimitedError

    engine = _engine(database_url)
    migrations.upgrade(engine, "coordinator")
    now = [1_800_000_000.0]
    replicas = [
        DatabaseWindowLimiter(engine, "participant", 3, 60.0, lambda: now[0], "calls")
        for _ in range(2)
    ]
    replicas[0].hit("bank-1")
    replicas[1].hit("bank-1")
    replicas[0].hit("bank-1")
    with pytest.raises(RateLimitedError) as refused:
        replicas[1].hit("bank-1")
    assert 1 <= refused.value.retry_after <= 60
    replicas[1].hit("bank-2")  # other keys have their own count
    other_scope = DatabaseWindowLimiter(engine, "enterprise", 1, 60.0, lambda: now[0], "q")
    other_scope.hit("bank-1")  # and other limits their own
    now[0] += 30
    with pytest.raises(RateLimitedError):
        replicas[0].hit("bank-1")  # refused hits were not counted, but the 3 still are
    now[0] += 31
    replicas[0].hit("bank-1")  # the window has slid past them
    engine.dispose()


def test_a_shard_kept_before_preprocessing_was_stored_still_scores(database_url: str) -> None:
    """n0006: an older shard (weights folded onto raw features, with an offset) reads as
    the identity preprocessing, so it scores exactly as it did."""
    engine = _engine(database_url)
    assert migrations.upgrade(engine, "node", "n0005") == "n0005"
    with engine.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO model_shard (model_id, weights, "offset", created_at, job_id) '
                "VALUES ('old-model', :w, -0.5, :t, 'job-1')"
            ),
            {"w": '{"a": 2.0, "b": -1.0}', "t": datetime(2026, 11, 1, tzinfo=UTC)},
        )
    assert migrations.upgrade(engine, "node") == migrations.head("node")
    shard = node_storage.ShardStore(engine).load()["old-model"]
    assert shard.preprocessing is None
    assert shard.partial_score({"a": 10.0, "b": 4.0}) == 2.0 * 10.0 - 4.0 - 0.5
    engine.dispose()
