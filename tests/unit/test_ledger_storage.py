"""One contract suite for every ``LedgerStorage`` backend, plus SQL-only concurrency.

As in Trillian, each backend must pass the same tests: memory and SQLite here;
PostgreSQL joins the parametrisation when the test database is wired in.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.pool import ConnectionPoolEntry

from creditshare._database import open_engine
from creditshare.errors import ConfigurationError, InvalidInputError, LedgerError, NotFoundError
from creditshare.ledger import (
    Ledger,
    LedgerStorage,
    LogSigner,
    MemoryLedgerStorage,
    Receipt,
    SignedTreeHead,
    SqlLedgerStorage,
    StoredLeaf,
    leaf_hash,
    root,
    verify_consistency,
    verify_log,
)

from .._databases import fresh_postgres_database, migrated_engine

FIXED = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
SIGNER_SEED = bytes(range(32))
StorageFactory = Callable[[], LedgerStorage]


def fixed_clock() -> datetime:
    return FIXED


def sqlite_engine(path: Path) -> Engine:
    return migrated_engine(f"sqlite:///{path}")


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageFactory]:
    """A factory: SQL backends return a fresh object over the *same* database each
    call, so tests can check that nothing lives only in one object's memory."""
    if request.param == "memory":
        memory = MemoryLedgerStorage()
        yield lambda: memory
        return
    if request.param == "sqlite":
        engine = sqlite_engine(tmp_path / "ledger.db")
        yield lambda: SqlLedgerStorage(engine)
        engine.dispose()
        return
    with fresh_postgres_database() as url:
        engine = migrated_engine(url)
        yield lambda: SqlLedgerStorage(engine)
        engine.dispose()


@pytest.fixture
def sql_engine(database_url: str) -> Iterator[Engine]:
    """A migrated coordinator database: SQLite file or PostgreSQL."""
    engine = migrated_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def storage(make_storage: StorageFactory) -> LedgerStorage:
    return make_storage()


@pytest.fixture(scope="module")
def signer() -> LogSigner:
    return LogSigner.from_private_bytes(SIGNER_SEED)


def builder(
    signer: LogSigner, calls: list[tuple[int, list[bytes]]] | None = None
) -> Callable[[int, Sequence[bytes]], SignedTreeHead]:
    def build(size: int, hashes: Sequence[bytes]) -> SignedTreeHead:
        if calls is not None:
            calls.append((size, list(hashes)))
        return signer.sign_head(size, root(hashes), 1_000 + size)

    return build


# --- the contract ---


def test_empty_storage(storage: LedgerStorage) -> None:
    assert storage.size() == 0
    assert storage.latest_head() is None
    assert storage.head(0) is None
    assert storage.heads() == []
    assert storage.leaves(0, 10) == []
    assert storage.leaf_hashes(0) == []
    assert storage.leaves_for_subject("x") == []
    with pytest.raises(NotFoundError):
        storage.leaf(0)
    with pytest.raises(InvalidInputError):
        storage.leaf_hashes(1)


def test_append_assigns_indices_and_stores_heads(storage: LedgerStorage, signer: LogSigner) -> None:
    calls: list[tuple[int, list[bytes]]] = []
    records = [(b"", "a"), (b"\x00binary\xff", "b"), (b"third", "a"), (b"fourth", "c")]
    for expected_index, (data, subject) in enumerate(records):
        index, head = storage.append(data, subject, builder(signer, calls))
        assert index == expected_index
        assert head.size == index + 1
    hashes = [leaf_hash(d) for d, _ in records]
    assert calls == [(n, hashes[:n]) for n in range(1, 5)]
    assert storage.size() == 4
    assert storage.leaf(1) == StoredLeaf(1, b"\x00binary\xff", hashes[1], "b")
    assert storage.leaves(1, 3) == [storage.leaf(1), storage.leaf(2)]
    assert storage.leaves(3, 99) == [storage.leaf(3)]
    assert storage.leaf_hashes(3) == hashes[:3]
    assert [h.size for h in storage.heads()] == [1, 2, 3, 4]
    latest = storage.latest_head()
    assert latest is not None and latest == storage.head(4)
    assert latest.root == root(hashes)
    assert storage.head(9) is None
    assert [leaf.index for leaf in storage.leaves_for_subject("a")] == [0, 2]
    with pytest.raises(InvalidInputError):
        storage.leaves(3, 1)


def test_state_lives_in_the_database_not_the_object(
    make_storage: StorageFactory, signer: LogSigner
) -> None:
    first = make_storage()
    first.append(b"one", "s", builder(signer))
    second = make_storage()
    assert second.append(b"two", "s", builder(signer))[0] == 1
    assert first.append(b"three", "s", builder(signer))[0] == 2
    assert first.leaf_hashes(3) == second.leaf_hashes(3)
    assert [leaf.data for leaf in second.leaves(0, 3)] == [b"one", b"two", b"three"]


def test_failed_build_head_stores_nothing(storage: LedgerStorage, signer: LogSigner) -> None:
    storage.append(b"kept", "s", builder(signer))

    def explode(size: int, hashes: Sequence[bytes]) -> SignedTreeHead:
        raise RuntimeError("signer unavailable")

    with pytest.raises(RuntimeError, match="signer unavailable"):
        storage.append(b"lost", "s", explode)

    def wrong_size(size: int, hashes: Sequence[bytes]) -> SignedTreeHead:
        return signer.sign_head(size + 1, root(hashes), 0)

    with pytest.raises(LedgerError, match="size 3 for size 2"):
        storage.append(b"lost", "s", wrong_size)
    assert storage.size() == 1
    assert storage.latest_head() == storage.head(1)
    assert storage.leaf_hashes(1) == [leaf_hash(b"kept")]
    assert storage.append(b"next", "s", builder(signer))[0] == 1
    assert storage.leaf_hashes(2) == [leaf_hash(b"kept"), leaf_hash(b"next")]


def test_append_refuses_bad_input(storage: LedgerStorage, signer: LogSigner) -> None:
    with pytest.raises(InvalidInputError, match="bytes"):
        storage.append("text", "s", builder(signer))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="subject"):
        storage.append(b"x", "", builder(signer))
    assert storage.size() == 0


def _check_whole_log(storage: LedgerStorage, signer: LogSigner, expected: int) -> None:
    """No gap, no duplicate; every head signed, matching its leaves, consistent with the rest."""
    assert storage.size() == expected
    assert [leaf.index for leaf in storage.leaves(0, expected)] == list(range(expected))
    heads = storage.heads()
    assert [h.size for h in heads] == list(range(1, expected + 1))
    report = verify_log(storage, signer.public_key)  # every signature and every root
    assert report.ok, report.problems
    ledger = Ledger(storage, signer, fixed_clock)
    latest = heads[-1]
    for older, newer in [*itertools.pairwise(heads), *((h, latest) for h in heads)]:
        proof = ledger.consistency_proof(older.size, newer.size)
        verify_consistency(older.size, newer.size, older.root, newer.root, proof)


def test_two_threads_append_without_gaps(make_storage: StorageFactory, signer: LogSigner) -> None:
    errors: list[BaseException] = []
    receipts: list[Receipt] = []

    def work(name: str) -> None:
        ledger = Ledger(make_storage(), signer, fixed_clock)
        try:
            for i in range(200):
                receipts.append(ledger.append(f"{name}-{i}".encode(), name))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in ("t1", "t2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    storage = make_storage()
    _check_whole_log(storage, signer, 400)
    for receipt in receipts:  # each signed while the other thread was appending too
        receipt.verify(signer.public_key)
    for name in ("t1", "t2"):
        data = [leaf.data for leaf in storage.leaves_for_subject(name)]
        assert data == [f"{name}-{i}".encode() for i in range(200)]


# --- SQL only ---


def _append_in_process(url: str, name: str, count: int) -> None:
    engine = open_engine(url)  # the product's engine: its SQLite busy timeout included
    ledger = Ledger(
        SqlLedgerStorage(engine), LogSigner.from_private_bytes(SIGNER_SEED), fixed_clock
    )
    for i in range(count):
        ledger.append(f"{name}-{i}".encode(), name)
    engine.dispose()


def test_two_processes_append_to_one_database(database_url: str, signer: LogSigner) -> None:
    """Two coordinator replicas on one database: the lock is the database's (BEGIN
    IMMEDIATE on SQLite, an advisory transaction lock on PostgreSQL), not a process's."""
    engine = migrated_engine(database_url)
    storage = SqlLedgerStorage(engine)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_append_in_process, args=(database_url, name, 200))
        for name in ("p1", "p2")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    _check_whole_log(storage, signer, 400)
    engine.dispose()


def test_sqlite_engine_that_begins_its_own_transactions(tmp_path: Path, signer: LogSigner) -> None:
    """SQLAlchemy's documented pysqlite recipe (driver autocommit + BEGIN on begin)."""
    engine = sqlite_engine(tmp_path / "recipe.db")

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: object, record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # type: ignore[attr-defined]

    @event.listens_for(engine, "begin")
    def _begin(conn: object) -> None:
        conn.exec_driver_sql("BEGIN")  # type: ignore[attr-defined]

    storage = SqlLedgerStorage(engine)
    for i in range(3):
        storage.append(b"%d" % i, "s", builder(signer))

    def explode(size: int, hashes: Sequence[bytes]) -> SignedTreeHead:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        storage.append(b"lost", "s", explode)
    _check_whole_log(SqlLedgerStorage(engine), signer, 3)
    engine.dispose()


def test_sql_cache_notices_a_replaced_database(sql_engine: Engine, signer: LogSigner) -> None:
    engine = sql_engine
    storage = SqlLedgerStorage(engine)
    for data in (b"a", b"b", b"c"):
        storage.append(data, "s", builder(signer))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_leaf"))
        conn.execute(text("DELETE FROM ledger_head"))
    storage.append(b"x", "s", builder(signer))
    assert storage.leaf_hashes(1) == [leaf_hash(b"x")]
    _check_whole_log(storage, signer, 1)


def test_sql_append_refuses_a_log_with_a_gap(sql_engine: Engine, signer: LogSigner) -> None:
    engine = sql_engine
    SqlLedgerStorage(engine).append(b"a", "s", builder(signer))
    SqlLedgerStorage(engine).append(b"b", "s", builder(signer))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_leaf WHERE idx = 0"))
    with pytest.raises(LedgerError, match="no row for index 0"):
        SqlLedgerStorage(engine).append(b"c", "s", builder(signer))


def test_sql_storage_names_missing_tables(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ConfigurationError, match="creditshare db upgrade coordinator"):
        SqlLedgerStorage(engine)
    engine.dispose()
