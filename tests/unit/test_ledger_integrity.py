"""The ledger signs only over storage that extends its last signed head.

At start the stored leaves must reproduce the latest signed head; before each
signing the hashes must extend the last head this process signed or verified.
Every tamper case is tried on SQLite and PostgreSQL (``database_url``): the
ledger then refuses to sign, says what mismatched, writes nothing, and keeps
refusing; ``verify_log`` (``creditshare ledger verify``) names the problem too.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, text

from creditshare.errors import InvalidProofError, LedgerIntegrityError
from creditshare.ledger import (
    Ledger,
    LogSigner,
    MemoryLedgerStorage,
    SignedTreeHead,
    SqlLedgerStorage,
    StoredLeaf,
    _audit,
    leaf_hash,
    verify_log,
)
from creditshare.ledger._storage import BuildBatch, ReadHashes

from .._databases import migrated_engine

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
SUBJECT = "91350100M000100Y43"
HINT = "creditshare ledger verify --config FILE"


def clock() -> datetime:
    return T0


@pytest.fixture(scope="module")
def signer() -> LogSigner:
    return LogSigner.from_private_bytes(bytes(range(32)))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = migrated_engine(database_url)
    yield engine
    engine.dispose()


def fill(ledger: Ledger, count: int, prefix: str = "query") -> None:
    for i in range(count):
        ledger.append(f"{prefix} {i}".encode(), SUBJECT)


def run(engine: Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def restarted(engine: Engine, signer: LogSigner) -> Ledger:
    """A new process over the same database: nothing in memory."""
    return Ledger(SqlLedgerStorage(engine), signer, clock)


def test_an_intact_log_is_checked_and_signed_on(engine: Engine, signer: LogSigner) -> None:
    fill(restarted(engine, signer), 10)
    ledger = restarted(engine, signer)
    assert ledger.check_storage() is None and ledger.failure is None
    ledger.check_health()
    receipt = ledger.append(b"next", SUBJECT)
    assert receipt.index == 10
    receipt.verify(signer.public_key)
    assert verify_log(ledger.storage, signer.public_key).ok
    assert restarted(engine, signer).check_storage() is None


def test_an_empty_log_is_checked(engine: Engine, signer: LogSigner) -> None:
    ledger = restarted(engine, signer)
    assert ledger.check_storage() is None
    assert ledger.append(b"first", SUBJECT).index == 0


TAMPERING = {
    "a leaf's data changed": (
        ["UPDATE ledger_leaf SET data = :v WHERE idx = 3"],
        "entry 3's stored data does not match its stored hash",
        "leaf 3: stored hash does not match the stored data",
    ),
    "a leaf and its stored hash replaced": (
        ["UPDATE ledger_leaf SET data = :v, leaf_hash = :h WHERE idx = 3"],
        "the 10 stored entries do not reproduce the root of the latest signed head (size 10)",
        "head 10: root does not match the stored leaves",
    ),
    "the last leaf deleted": (
        ["DELETE FROM ledger_leaf WHERE idx = 9"],
        "the latest signed head covers 10 entries but the database holds 9",
        "head 10: covers more leaves than the log holds (9)",
    ),
    "the last head deleted": (
        ["DELETE FROM ledger_head WHERE size = 10"],
        "the database holds 10 entries but the latest signed head covers 9: "
        "entries 9..9 are under no signed head",
        "leaves 9..9 are not covered by any signed head",
    ),
    "a middle leaf deleted": (
        ["DELETE FROM ledger_leaf WHERE idx = 4"],
        "entry 4 is missing (the latest signed head covers 10)",
        "leaves 4..4 are missing",
    ),
    "every head deleted": (
        ["DELETE FROM ledger_head"],
        "the database holds 10 entries but the latest signed head covers 0",
        "leaves 0..9 are not covered by any signed head",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_a_restart_on_a_tampered_log_refuses_to_sign(
    engine: Engine, signer: LogSigner, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    fill(restarted(engine, signer), 10)
    statements, reason, problem = TAMPERING[case]
    for sql in statements:
        run(engine, sql, v=b"forged", h=leaf_hash(b"forged"))
    storage = SqlLedgerStorage(engine)
    leaves, heads = storage.leaves(0, 100), storage.heads()

    ledger = restarted(engine, signer)
    with caplog.at_level(logging.ERROR, logger="creditshare.ledger"):
        failure = ledger.check_storage()
    assert failure is not None and reason in failure and HINT in failure
    assert failure == ledger.failure
    assert any(reason in record.getMessage() for record in caplog.records)
    for _ in range(2):  # and keeps refusing: appends, the pre-check, the probe
        with pytest.raises(LedgerIntegrityError, match=re.escape(reason)):
            ledger.append(b"fork", SUBJECT)
        with pytest.raises(LedgerIntegrityError):
            ledger.check_can_sign()
        with pytest.raises(LedgerIntegrityError):
            ledger.check_health()
    assert storage.leaves(0, 100) == leaves and storage.heads() == heads  # nothing written
    # An append without the start-up check runs it first, and refuses the same way.
    with pytest.raises(LedgerIntegrityError, match=re.escape(reason)):
        restarted(engine, signer).append(b"fork", SUBJECT)
    assert storage.leaves(0, 100) == leaves and storage.heads() == heads
    assert problem in verify_log(storage, signer.public_key).problems


def test_a_log_cut_short_with_its_heads_is_caught_by_a_witness(
    engine: Engine, signer: LogSigner
) -> None:
    """Deleting the last entries *and* their heads leaves a consistent shorter log; only
    a witness that accepted a larger head (a data node) can tell, with the signed head."""
    fill(restarted(engine, signer), 10)
    storage = SqlLedgerStorage(engine)
    head3, head9, head10 = (storage.head(size) for size in (3, 9, 10))
    assert head3 is not None and head9 is not None and head10 is not None
    run(engine, "DELETE FROM ledger_leaf WHERE idx = 9")
    run(engine, "DELETE FROM ledger_head WHERE size = 10")
    honest = restarted(engine, signer)
    assert honest.check_storage() is None
    assert honest.check_witnesses({"data node a": head9, "data node b": head3}) is None
    assert honest.check_witnesses({}) is None
    # A claim without this log's signature is not believed: one node cannot stop the log.
    forged = dataclasses.replace(head10, size=50, signature=bytes(64))
    assert honest.check_witnesses({"data node x": forged}) is None

    ledger = restarted(engine, signer)
    assert ledger.check_storage() is None
    failure = ledger.check_witnesses({"data node a": head9, "data node b": head10})
    assert failure is not None and HINT in failure
    assert "data node b holds a signed head of size 10 but the database holds 9 entries" in (
        failure
    )
    with pytest.raises(LedgerIntegrityError, match="data node b holds"):
        ledger.append(b"fork", SUBJECT)
    assert ledger.storage.size() == 9


def test_a_rewritten_log_is_caught_by_a_witness_within_its_size(
    engine: Engine, signer: LogSigner
) -> None:
    """A witness's head that the stored entries no longer reproduce (entries below the
    latest head rewritten, and the heads re-signed... by someone holding the key) fails."""
    fill(restarted(engine, signer), 6)
    head4 = SqlLedgerStorage(engine).head(4)
    assert head4 is not None
    other = dataclasses.replace(head4, root=bytes(32))
    signed_other = signer.sign_head(4, other.root, head4.timestamp_ms)
    ledger = restarted(engine, signer)
    assert ledger.check_storage() is None
    failure = ledger.check_witnesses({"data node a": signed_other})
    assert failure is not None and "do not reproduce" in failure


def test_heads_signed_with_another_key_are_not_signed_on(engine: Engine, signer: LogSigner) -> None:
    fill(restarted(engine, signer), 3)
    other = LogSigner.generate()
    failure = Ledger(SqlLedgerStorage(engine), other, clock).check_storage()
    assert failure is not None
    assert "the latest signed head (size 3) does not verify under this coordinator's log key" in (
        failure
    )


def test_a_replica_appending_meanwhile_is_extended_in_o_new(
    engine: Engine, signer: LogSigner
) -> None:
    """Another process appended since: the next head grows the trusted tree by the new
    hashes only (no index below the last trusted one is read), and still verifies."""
    ours, theirs = restarted(engine, signer), restarted(engine, signer)
    fill(ours, 50)
    fill(theirs, 3, "replica")
    read: list[tuple[int, int]] = []
    storage = ours.storage
    real_append = storage.append

    def recording_append(
        entries: Sequence[tuple[bytes, str]], build: BuildBatch
    ) -> tuple[int, SignedTreeHead]:
        def recording_build(old: int, reader: ReadHashes) -> tuple[SignedTreeHead, Any]:
            def reading(start: int, end: int) -> list[bytes]:
                read.append((start, end))
                return reader(start, end)

            return build(old, reading)

        return real_append(entries, recording_build)

    storage.append = recording_append  # type: ignore[method-assign]
    receipt = ours.append(b"after the replica", SUBJECT)
    assert receipt.index == 53 and read == [(49, 53)]
    receipt.verify(signer.public_key)
    assert verify_log(SqlLedgerStorage(engine), signer.public_key).ok


def test_a_running_ledger_whose_database_loses_its_head_stops_signing(
    engine: Engine, signer: LogSigner
) -> None:
    ledger = restarted(engine, signer)
    fill(ledger, 5)
    ledger.check_health()
    run(engine, "DELETE FROM ledger_head WHERE size = 5")
    with pytest.raises(LedgerIntegrityError, match="has no signed head of size 5"):
        ledger.check_health()
    run(engine, "DELETE FROM ledger_leaf WHERE idx = 4")  # now a consistent shorter log
    with pytest.raises(LedgerIntegrityError, match="has no signed head of size 5"):
        ledger.append(b"fork", SUBJECT)
    assert ledger.storage.size() == 4


def test_a_running_ledger_whose_database_is_replaced_refuses_to_sign(
    engine: Engine, signer: LogSigner
) -> None:
    ledger = restarted(engine, signer)
    fill(ledger, 5)
    run(engine, "DELETE FROM ledger_leaf")
    run(engine, "DELETE FROM ledger_head")
    run(engine, "DELETE FROM ledger_node")
    fill(restarted(engine, signer), 7, "other")
    with pytest.raises(LedgerIntegrityError, match="entry 4's hash is not the one under"):
        ledger.append(b"fork", SUBJECT)
    assert ledger.storage.size() == 7
    with pytest.raises(LedgerIntegrityError):
        ledger.check_health()


# --- memory storage: the ledger's own check, whatever the backend ---


def test_memory_storage_that_stops_extending_the_head_is_refused(signer: LogSigner) -> None:
    storage = MemoryLedgerStorage()
    ledger = Ledger(storage, signer, clock)
    fill(ledger, 5)
    # Storage rewrites leaf 4 under the ledger (a backend breaking its contract).
    forged = StoredLeaf(4, b"forged", leaf_hash(b"forged"), SUBJECT)
    storage._leaves[4], storage._hashes[4] = forged, forged.leaf_hash
    with pytest.raises(LedgerIntegrityError, match="entry 4's hash is not the one under the last"):
        ledger.append(b"fork", SUBJECT)
    assert storage.size() == 5 and storage.latest_head() == storage.head(5)


def test_memory_storage_that_shrinks_is_refused(signer: LogSigner) -> None:
    storage = MemoryLedgerStorage()
    ledger = Ledger(storage, signer, clock)
    fill(ledger, 5)
    del storage._leaves[3:], storage._hashes[3:]
    with pytest.raises(LedgerIntegrityError, match="holds 3 entries, fewer than the 5"):
        ledger.append(b"fork", SUBJECT)
    assert storage.size() == 3


def test_memory_storage_tampered_before_start_is_refused(signer: LogSigner) -> None:
    storage = MemoryLedgerStorage()
    fill(Ledger(storage, signer, clock), 4)
    storage._leaves[1] = replace(storage._leaves[1], data=b"forged")
    ledger = Ledger(storage, signer, clock)
    failure = ledger.check_storage()
    assert failure is not None and "entry 1's stored data does not match" in failure
    with pytest.raises(LedgerIntegrityError):
        ledger.append(b"fork", SUBJECT)
    assert storage.size() == 4


def test_rows_another_replica_appended_must_reproduce_its_head(
    engine: Engine, signer: LogSigner
) -> None:
    """A replica signs over leaves the other one appended only if they reproduce the head
    that one signed: a row tampered with in between is not signed over."""
    ours, theirs = restarted(engine, signer), restarted(engine, signer)
    fill(ours, 3)
    fill(theirs, 2, "replica")
    run(engine, "UPDATE ledger_leaf SET leaf_hash = :h WHERE idx = 4", h=bytes(32))
    with pytest.raises(LedgerIntegrityError, match="at size 5, after another replica"):
        ours.append(b"after", SUBJECT)
    assert ours.storage.size() == 5


# --- the start-up check past its rehashed tail: O(log n), the rest is verify's ---


def _tail_ledger(engine: Engine, signer: LogSigner) -> Ledger:
    return Ledger(SqlLedgerStorage(engine), signer, clock, start_tail=4)


def _node(engine: Engine, level: int, index: int) -> bytes:
    with engine.connect() as conn:
        value = conn.execute(
            text("SELECT hash FROM ledger_node WHERE level = :l AND idx = :i"),
            {"l": level, "i": index},
        ).scalar()
    assert value is not None
    return bytes(value)


def test_an_old_leaf_changed_is_left_to_verify_but_never_served_as_genuine(
    engine: Engine, signer: LogSigner
) -> None:
    """Leaf 2 of 20 is older than the rehashed tail: the start-up check (interior nodes
    plus the newest 4) passes, but its receipt fails at whoever verifies it, the next
    head is still right, and ``verify_log`` names the leaf."""
    fill(restarted(engine, signer), 20)
    run(engine, "UPDATE ledger_leaf SET data = :v WHERE idx = 2", v=b"forged")
    ledger = _tail_ledger(engine, signer)
    assert ledger.check_storage() is None
    with pytest.raises(InvalidProofError, match="data does not match its hash"):
        ledger.receipt(2).verify(signer.public_key)
    ledger.append(b"next", SUBJECT).verify(signer.public_key)
    assert "leaf 2: stored hash does not match the stored data" in (
        verify_log(ledger.storage, signer.public_key).problems
    )


def test_an_old_interior_node_changed_is_refused_when_a_proof_needs_it(
    engine: Engine, signer: LogSigner
) -> None:
    fill(restarted(engine, signer), 20)
    run(engine, "UPDATE ledger_node SET hash = :h WHERE level = 1 AND idx = 0", h=bytes(32))
    ledger = _tail_ledger(engine, signer)
    assert ledger.check_storage() is None  # node (1, 0) is neither edge nor tail
    with pytest.raises(LedgerIntegrityError, match="do not prove entry 3 in the head of size 20"):
        ledger.receipt(3)
    ledger.receipt(10).verify(signer.public_key)  # proofs that do not use it still answer
    assert (
        "interior node at level 1, index 0 (leaves 0..1) does not match the stored leaves"
        in verify_log(ledger.storage, signer.public_key).problems
    )


@pytest.mark.parametrize(
    ("level", "index", "reason"),
    [
        (4, 0, "the 20 stored entries do not reproduce the root of the latest signed head"),
        (1, 9, "the interior node at level 1, index 9 does not match the stored entries"),
    ],
)
def test_a_changed_edge_or_tail_node_refuses_to_sign(
    engine: Engine, signer: LogSigner, level: int, index: int, reason: str
) -> None:
    """(4, 0) is on the right edge of 20 leaves (16 + 4); (1, 9) covers leaves 18..19,
    inside the rehashed tail: either one changed stops signing at start."""
    fill(restarted(engine, signer), 20)
    assert _node(engine, level, index)
    run(
        engine,
        "UPDATE ledger_node SET hash = :h WHERE level = :l AND idx = :i",
        h=bytes(32),
        l=level,
        i=index,
    )
    ledger = _tail_ledger(engine, signer)
    failure = ledger.check_storage()
    assert failure is not None and reason in failure
    with pytest.raises(LedgerIntegrityError):
        ledger.append(b"fork", SUBJECT)


def test_a_missing_edge_node_names_the_migration(engine: Engine, signer: LogSigner) -> None:
    fill(restarted(engine, signer), 20)
    run(engine, "DELETE FROM ledger_node WHERE level = 4")
    failure = _tail_ledger(engine, signer).check_storage()
    assert failure is not None and "level 4, index 0 is missing" in failure
    assert "creditshare db upgrade coordinator" in failure


def test_a_receipt_is_never_served_under_a_stored_head_that_does_not_verify(
    engine: Engine, signer: LogSigner
) -> None:
    """Head 10's row rewritten (here its signature; a rewritten root with interior nodes
    to match looks the same to the prover): its proofs still fold to its root, so only
    the signature shows it. The ledger refuses the receipt instead of handing out one
    that every node rejects; receipts under intact heads still answer."""
    fill(restarted(engine, signer), 20)
    run(engine, "UPDATE ledger_head SET signature = :s WHERE size = 10", s=bytes(64))
    ledger = restarted(engine, signer)
    assert ledger.check_storage() is None  # the latest head is intact
    with pytest.raises(LedgerIntegrityError, match="stored head of size 10 does not verify"):
        ledger.receipt_at(3, 10)
    ledger.receipt_at(3, 11).verify(signer.public_key)
    ledger.receipt(3).verify(signer.public_key)


class _ReplicaAppendsDuringAudit(SqlLedgerStorage):
    """Another coordinator appends while the audit reads: at its first page of heads
    and at its first page of leaves, which is when a live ``ledger verify`` meets it."""

    def __init__(self, engine: Engine, replica: Ledger) -> None:
        super().__init__(engine)
        self._replica, self._heads_read, self._leaves_read = replica, False, False

    def heads(self, after: int = -1, limit: int | None = None) -> list[SignedTreeHead]:
        if not self._heads_read:
            self._heads_read = True
            self._replica.append(b"appended while the heads are read", SUBJECT)
        return super().heads(after, limit)

    def leaves(self, start: int, end: int) -> list[StoredLeaf]:
        if not self._leaves_read:
            self._leaves_read = True
            self._replica.append(b"appended while the leaves are read", SUBJECT)
        return super().leaves(start, end)


def test_verify_on_a_log_that_replicas_append_to_reports_nothing(
    engine: Engine, signer: LogSigner
) -> None:
    """``creditshare ledger verify`` runs beside live coordinators: what they append
    while it reads is newer than the audit, not a head beyond the log or leaves under
    no head. It audits the log up to the latest head it saw first."""
    replica = restarted(engine, signer)
    fill(replica, 10)
    report = verify_log(_ReplicaAppendsDuringAudit(engine, replica), signer.public_key)
    assert report.problems == ()
    assert (report.leaves_checked, report.heads_checked) == (10, 10)
    assert verify_log(SqlLedgerStorage(engine), signer.public_key).leaves_checked == 12


def test_verify_still_reports_a_head_beyond_the_log_and_leaves_under_none(
    engine: Engine, signer: LogSigner
) -> None:
    fill(restarted(engine, signer), 10)
    run(engine, "DELETE FROM ledger_leaf WHERE idx = 9")
    problems = verify_log(SqlLedgerStorage(engine), signer.public_key).problems
    assert "head 10: covers more leaves than the log holds (9)" in problems
    fill(restarted(engine, signer), 0)
    run(engine, "DELETE FROM ledger_head WHERE size >= 8")
    run(
        engine,
        "INSERT INTO ledger_leaf (idx, data, leaf_hash, subject) VALUES (9, :d, :h, :s)",
        d=b"query 9",
        h=leaf_hash(b"query 9"),
        s=SUBJECT,
    )
    problems = verify_log(SqlLedgerStorage(engine), signer.public_key).problems
    assert "leaves 7..9 are not covered by any signed head" in problems


def test_verify_of_a_log_rewritten_row_by_row_keeps_bounded_memory(
    signer: LogSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every leaf's data rewritten: one line per leaf would grow with the log (gigabytes
    at 10^7), so the audit keeps the first lines and counts the rest, and still says
    what concerns the whole log."""
    monkeypatch.setattr(_audit, "_MAX_PROBLEMS", 5)
    storage = MemoryLedgerStorage()
    fill(Ledger(storage, signer, clock), 40)
    storage._leaves = [dataclasses.replace(leaf, data=b"forged") for leaf in storage._leaves]
    storage._heads.pop(40)
    problems = verify_log(storage, signer.public_key).problems
    assert problems[0] == "leaf 0: stored hash does not match the stored data"
    assert "leaves 39..39 are not covered by any signed head" in problems
    assert "interior nodes do not match the stored leaves in all" in problems[-3]
    # 40 leaves, 39 roots and 10 interior nodes found wrong; 5 lines kept.
    assert problems[-1] == "84 more problems not shown (the first 5 are)"
    assert len(problems) == 8


@pytest.mark.parametrize(
    ("level", "index"),
    [(2, 5), (3, 2), (0, 7), (63, 0), (1, -1)],
)
def test_verify_reports_an_inserted_interior_node(
    engine: Engine, signer: LogSigner, level: int, index: int
) -> None:
    """No proof reads a node the tree does not have, but a row inserted for a subtree
    not yet complete ((2, 5) covers leaves 20..23 of 20; (3, 2) leaves 16..23) makes the
    append that completes it fail; rows at impossible places are tampering too."""
    fill(restarted(engine, signer), 20)
    assert verify_log(SqlLedgerStorage(engine), signer.public_key).ok
    run(
        engine,
        "INSERT INTO ledger_node (level, idx, hash) VALUES (:l, :i, :h)",
        l=level,
        i=index,
        h=bytes(32),
    )
    problems = verify_log(SqlLedgerStorage(engine), signer.public_key).problems
    assert problems == (
        f"interior node at level {level}, index {index} is stored but the log has no "
        "complete subtree there (20 entries): it was inserted",
    )


def test_a_session_holding_the_append_lock_fails_appends_instead_of_stalling_them(
    engine: Engine, signer: LogSigner
) -> None:
    """A replica hung inside its append (or any session holding the advisory lock)
    must not make every replica's callers wait forever: the batch fails after the
    lock timeout, stores nothing, and the next append after the lock is freed works."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite bounds the wait with its busy timeout")
    from sqlalchemy.exc import OperationalError

    from creditshare.ledger._sql import _PG_LOCK_KEY

    ledger = Ledger(SqlLedgerStorage(engine, lock_timeout_s=0.2), signer, clock)
    fill(ledger, 3)
    with engine.connect() as holder:
        holder.begin()
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        with pytest.raises(OperationalError, match="lock timeout"):
            ledger.append(b"waits", SUBJECT)
        holder.rollback()
    assert ledger.storage.size() == 3 and ledger.failure is None
    assert ledger.append(b"next", SUBJECT).index == 3
