"""One contract suite for every ``LedgerStorage`` backend, plus SQL-only concurrency.

As in Trillian, each backend must pass the same tests: memory and SQLite here;
PostgreSQL joins the parametrisation when the test database is wired in.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.pool import ConnectionPoolEntry

from creditshare._database import open_engine
from creditshare.errors import (
    ConfigurationError,
    InvalidInputError,
    LedgerError,
    LedgerIntegrityError,
    NotFoundError,
)
from creditshare.ledger import (
    BuildBatch,
    Frontier,
    Ledger,
    LedgerStorage,
    LogSigner,
    MemoryLedgerStorage,
    Receipt,
    SignedTreeHead,
    SqlLedgerStorage,
    StoredLeaf,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_log,
)
from creditshare.ledger._storage import NewNode, ReadHashes

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
    signer: LogSigner,
    entries: Sequence[tuple[bytes, str]],
    calls: list[tuple[int, list[bytes]]] | None = None,
) -> BuildBatch:
    """A ``build`` that reads every stored hash (as no production caller does) and
    returns the nodes its new leaves complete: the reference the storage must keep."""

    def build(old: int, read: ReadHashes) -> tuple[SignedTreeHead, list[NewNode]]:
        hashes = read(0, old) + [leaf_hash(data) for data, _ in entries]
        if calls is not None:
            calls.append((len(hashes), hashes))
        frontier, nodes = Frontier(), list[NewNode]()
        for h in hashes:
            frontier.append(h, nodes)
        fresh = [n for n in nodes if (n[1] + 1) << n[0] > old]
        return signer.sign_head(len(hashes), root(hashes), 1_000 + len(hashes)), fresh

    return build


def put(
    storage: LedgerStorage,
    data: bytes,
    subject: str,
    signer: LogSigner,
    calls: list[tuple[int, list[bytes]]] | None = None,
) -> tuple[int, SignedTreeHead]:
    return storage.append([(data, subject)], builder(signer, [(data, subject)], calls))


# --- the contract ---


def test_empty_storage(storage: LedgerStorage) -> None:
    assert storage.size() == 0
    assert storage.latest_head() is None
    assert storage.head(0) is None
    assert storage.heads() == []
    assert storage.leaves(0, 10) == []
    assert storage.leaf_hashes(0, 0) == []
    assert storage.leaves_for_subject("x") == []
    with pytest.raises(NotFoundError):
        storage.leaf(0)
    with pytest.raises(LedgerIntegrityError, match="no row for index 0"):
        storage.leaf_hashes(0, 1)


def test_append_assigns_indices_and_stores_heads(storage: LedgerStorage, signer: LogSigner) -> None:
    calls: list[tuple[int, list[bytes]]] = []
    records = [(b"", "a"), (b"\x00binary\xff", "b"), (b"third", "a"), (b"fourth", "c")]
    for expected_index, (data, subject) in enumerate(records):
        index, head = put(storage, data, subject, signer, calls)
        assert index == expected_index
        assert head.size == index + 1
    hashes = [leaf_hash(d) for d, _ in records]
    assert calls == [(n, hashes[:n]) for n in range(1, 5)]
    assert storage.size() == 4
    assert storage.leaf(1) == StoredLeaf(1, b"\x00binary\xff", hashes[1], "b")
    assert storage.leaves(1, 3) == [storage.leaf(1), storage.leaf(2)]
    assert storage.leaves(3, 99) == [storage.leaf(3)]
    assert storage.leaf_hashes(0, 3) == hashes[:3]
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
    put(first, b"one", "s", signer)
    second = make_storage()
    assert put(second, b"two", "s", signer)[0] == 1
    assert put(first, b"three", "s", signer)[0] == 2
    assert first.leaf_hashes(0, 3) == second.leaf_hashes(0, 3)
    assert [leaf.data for leaf in second.leaves(0, 3)] == [b"one", b"two", b"three"]


def test_failed_build_head_stores_nothing(storage: LedgerStorage, signer: LogSigner) -> None:
    put(storage, b"kept", "s", signer)

    def explode(old: int, read: ReadHashes) -> tuple[SignedTreeHead, list[NewNode]]:
        raise RuntimeError("signer unavailable")

    with pytest.raises(RuntimeError, match="signer unavailable"):
        storage.append([(b"lost", "s")], explode)

    def wrong_size(old: int, read: ReadHashes) -> tuple[SignedTreeHead, list[NewNode]]:
        return signer.sign_head(old + 2, root(read(0, old)), 0), []

    with pytest.raises(LedgerError, match="size 3 for size 2"):
        storage.append([(b"lost", "s")], wrong_size)
    assert storage.size() == 1
    assert storage.latest_head() == storage.head(1)
    assert storage.leaf_hashes(0, 1) == [leaf_hash(b"kept")]
    assert put(storage, b"next", "s", signer)[0] == 1
    assert storage.leaf_hashes(0, 2) == [leaf_hash(b"kept"), leaf_hash(b"next")]


def test_append_refuses_bad_input(storage: LedgerStorage, signer: LogSigner) -> None:
    with pytest.raises(InvalidInputError, match="bytes"):
        put(storage, "text", "s", signer)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="subject"):
        put(storage, b"x", "", signer)
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
        put(storage, b"%d" % i, "s", signer)

    def explode(old: int, read: ReadHashes) -> tuple[SignedTreeHead, list[NewNode]]:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        storage.append([(b"lost", "s")], explode)
    _check_whole_log(SqlLedgerStorage(engine), signer, 3)
    engine.dispose()


def test_a_ledger_refuses_a_replaced_database(sql_engine: Engine, signer: LogSigner) -> None:
    """Hashes already signed over must stay: a database that no longer holds them is
    refused, not silently adopted (that is how a log forks). Storage keeps no cache
    now; the ledger's trusted right edge is what notices."""
    engine = sql_engine
    ledger = Ledger(SqlLedgerStorage(engine), signer, fixed_clock)
    for data in (b"a", b"b", b"c"):
        ledger.append(data, "s")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_leaf"))
        conn.execute(text("DELETE FROM ledger_head"))
        conn.execute(text("DELETE FROM ledger_node"))
    for _ in range(2):  # and keeps refusing
        with pytest.raises(LedgerIntegrityError, match="holds 0 entries, fewer than the 3"):
            ledger.append(b"x", "s")
    assert ledger.storage.size() == 0 and ledger.storage.heads() == []


def test_sql_append_refuses_a_log_with_a_gap(sql_engine: Engine, signer: LogSigner) -> None:
    engine = sql_engine
    put(SqlLedgerStorage(engine), b"a", "s", signer)
    put(SqlLedgerStorage(engine), b"b", "s", signer)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_leaf WHERE idx = 0"))
    with pytest.raises(LedgerIntegrityError, match="no row for index 0"):
        put(SqlLedgerStorage(engine), b"c", "s", signer)


def test_sql_storage_names_missing_tables(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ConfigurationError, match="creditshare db upgrade coordinator"):
        SqlLedgerStorage(engine)
    engine.dispose()


# --- proofs from stored interior nodes ---

#: Tree sizes around powers of two, where RFC 6962's split changes shape.
SIZES = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 130)


def test_proofs_from_stored_nodes_equal_proofs_from_the_full_list(
    make_storage: StorageFactory, signer: LogSigner
) -> None:
    """Leaves stored in uneven batches; every interior node stored is the reference
    one, and a fresh object's proofs (stored nodes only) equal ``_merkle``'s over the
    full list, for many (index, size) pairs and every consistency pair in SIZES."""
    storage = make_storage()
    data = [b"entry %d" % i for i in range(SIZES[-1])]
    batches = itertools.cycle((1, 2, 3, 5, 8, 13))
    done = 0
    while done < len(data):
        entries = [(d, "s") for d in data[done : done + next(batches)]]
        first, head = storage.append(entries, builder(signer, entries))
        assert (first, head.size) == (done, done + len(entries))
        done += len(entries)
    hashes = [leaf_hash(d) for d in data]
    expected: list[NewNode] = []
    frontier = Frontier()
    for h in hashes:
        frontier.append(h, expected)
    stored = make_storage().nodes([(level, index) for level, index, _ in expected])
    assert stored == {(level, index): value for level, index, value in expected}
    assert make_storage().nodes([(1, 10_000), (0, 10_000)]) == {}

    ledger = Ledger(make_storage(), signer, fixed_clock)
    for size in SIZES:
        for index in sorted({0, 1, size // 2, size - 2, size - 1} & set(range(size))):
            assert ledger.inclusion_proof(index, size) == inclusion_proof(
                index, hashes, size=size
            ), (index, size)
        for old in (o for o in SIZES if o <= size):
            assert ledger.consistency_proof(old, size) == consistency_proof(
                old, hashes, size=size
            ), (old, size)
    with pytest.raises(InvalidInputError, match=r"outside 0\.\.130"):
        ledger.inclusion_proof(0, 131)


class GatedStorage(MemoryLedgerStorage):
    """Holds the first append until released, so others queue up behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.batches: list[int] = []

    def append(
        self, entries: Sequence[tuple[bytes, str]], build: BuildBatch
    ) -> tuple[int, SignedTreeHead]:
        self.batches.append(len(entries))
        self.gate.wait(timeout=30)
        return super().append(entries, build)


def test_concurrent_appends_share_one_transaction_and_head() -> None:
    """Group commit: callers that arrive while a batch is being written go into the
    next one together, under one head; each gets its own verifiable receipt."""
    signer = LogSigner.from_private_bytes(SIGNER_SEED)
    storage = GatedStorage()
    ledger = Ledger(storage, signer, fixed_clock)
    receipts: dict[str, Receipt] = {}

    def work(name: str) -> None:
        receipts[name] = ledger.append(name.encode(), name)

    leader = threading.Thread(target=work, args=("leader",))
    leader.start()
    _poll(lambda: storage.batches == [1])
    others = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(5)]
    for thread in others:
        thread.start()
    _poll(lambda: len(ledger._queue) == 5)
    storage.gate.set()
    for thread in [leader, *others]:
        thread.join(timeout=30)
    assert storage.batches == [1, 5]
    heads = {receipt.head for name, receipt in receipts.items() if name != "leader"}
    assert len(heads) == 1 and heads.pop().size == 6
    assert sorted(r.index for r in receipts.values()) == list(range(6))
    for receipt in receipts.values():
        receipt.verify(signer.public_key)
    assert [h.size for h in storage.heads()] == [1, 6]
    assert verify_log(storage, signer.public_key).ok


def test_a_failed_batch_fails_each_of_its_callers_and_stores_nothing() -> None:
    signer = LogSigner.from_private_bytes(SIGNER_SEED)
    storage = GatedStorage()
    calls = 0

    def clock() -> datetime:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("clock unavailable")
        return FIXED

    ledger = Ledger(storage, signer, clock)
    errors: dict[str, BaseException] = {}

    def work(name: str) -> None:
        try:
            ledger.append(name.encode(), name)
        except RuntimeError as exc:
            errors[name] = exc

    leader = threading.Thread(target=work, args=("leader",))
    leader.start()
    _poll(lambda: storage.batches == [1])
    others = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(3)]
    for thread in others:
        thread.start()
    _poll(lambda: len(ledger._queue) == 3)
    storage.gate.set()
    for thread in [leader, *others]:
        thread.join(timeout=30)
    assert sorted(errors) == ["t0", "t1", "t2"]
    assert storage.size() == 1
    assert ledger.append(b"after", "s").index == 1  # the ledger goes on


def test_many_threads_on_one_ledger(make_storage: StorageFactory, signer: LogSigner) -> None:
    """Eight threads through one ledger (batched) and a second ledger object on the
    same storage (another replica): no gap, every receipt verifies against its head."""
    ledgers = [
        Ledger(make_storage(), signer, fixed_clock),
        Ledger(make_storage(), signer, fixed_clock),
    ]
    receipts: list[Receipt] = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(40):
                receipts.append(ledgers[n % 3 == 0].append(b"%d-%d" % (n, i), "s"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    storage = make_storage()
    assert storage.size() == 320
    assert sorted(r.index for r in receipts) == list(range(320))
    for receipt in receipts:
        receipt.verify(signer.public_key)
        assert storage.head(receipt.head.size) == receipt.head
    assert verify_log(storage, signer.public_key).ok


def _poll(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_append_async_batches_event_loop_callers() -> None:
    """Callers on an event loop: one batch while the first append holds storage, each
    with its own receipt, on the ledger's threads (not the loop's default pool)."""
    signer = LogSigner.from_private_bytes(SIGNER_SEED)
    storage = GatedStorage()
    ledger = Ledger(storage, signer, fixed_clock)

    async def main() -> list[Receipt]:
        first = asyncio.ensure_future(ledger.append_async(b"first", "s"))
        await _apoll(lambda: storage.batches == [1])
        rest = [asyncio.ensure_future(ledger.append_async(b"%d" % i, "s")) for i in range(12)]
        await _apoll(lambda: len(ledger._queue) == 12)
        storage.gate.set()
        return await asyncio.gather(first, *rest)

    receipts = asyncio.run(asyncio.wait_for(main(), timeout=60))
    assert storage.batches == [1, 12]
    assert sorted(r.index for r in receipts) == list(range(13))
    for receipt in receipts:
        receipt.verify(signer.public_key)


async def _apoll(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (the whole test runs under ``asyncio.wait_for``)."""
    for _ in itertools.count():
        if condition():
            return
        await asyncio.sleep(0.005)


def test_stray_nodes_are_those_no_tree_of_the_size_has(
    storage: LedgerStorage, signer: LogSigner
) -> None:
    """For audits: the stored interior nodes beyond a tree of ``size`` leaves, in
    (level, index) order, at most ``limit``; none beyond the stored log itself."""
    for i in range(11):
        put(storage, b"entry %d" % i, "s", signer)
    assert storage.stray_nodes(11, 10) == []
    assert storage.stray_nodes(8, 10) == [(1, 4)]
    assert storage.stray_nodes(3, 10) == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1), (3, 0)]
    assert storage.stray_nodes(3, 3) == [(1, 1), (1, 2), (1, 3)]
    assert storage.stray_nodes(0, 100)[-1] == (3, 0)
