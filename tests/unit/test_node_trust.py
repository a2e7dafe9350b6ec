"""The node's trusted head and access log: one transaction per answer, nothing lost.

Within ``AccessLog.deferring_heads`` (the Score/TreeScore path) a head the tracker
accepts is written with the claim's row; refused or lost claims still leave the head
stored when the block ends; heads written out of order never move the stored head
back. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from creditshare.ledger import (
    Ledger,
    LogSigner,
    MemoryLedgerStorage,
    QueryRecord,
    SignedTreeHead,
    TrustedHeadTracker,
)
from creditshare.node._storage import make_engine
from creditshare.node._trust import AccessLog, TrustedHeadStore


def _clock() -> datetime:
    return datetime.now(UTC)


def _record(query_id: str) -> QueryRecord:
    return QueryRecord(
        "query",
        query_id,
        _clock(),
        "91310000MA1FL8LQ3B",
        "bank-1",
        "bank",
        "pre_loan_review",
        "consent-1",
        "default",
        "fingerprint",
        ("yrd",),
        ("*",),
    )


class _Federation:
    """A ledger, a node's store, tracker and access log on ``url``, counting commits."""

    def __init__(self, url: str) -> None:
        self.signer = LogSigner.generate()
        self.ledger = Ledger(MemoryLedgerStorage(), self.signer, _clock)
        self.engine: Engine = make_engine(url)
        self.heads = TrustedHeadStore(self.engine)
        self.tracker = TrustedHeadTracker(load=self.heads.load, save=self.heads.save)
        self.log = AccessLog(self.engine, _clock, self.heads)
        self.commits = 0
        event.listen(self.engine, "commit", self._committed)

    def _committed(self, connection: object) -> None:
        self.commits += 1

    def append(self) -> SignedTreeHead:
        return self.ledger.append(b"entry %d" % self.ledger.size(), "subject").head

    def accept(self, head: SignedTreeHead) -> None:
        trusted = self.tracker.trusted_size
        proof = self.ledger.consistency_proof(trusted, head.size) if trusted else []
        self.tracker.accept(head, proof, trusted, self.signer.public_key)

    def stored(self) -> SignedTreeHead | None:
        return TrustedHeadStore(self.engine).load()


@pytest.fixture
def node(database_url: str) -> _Federation:
    return _Federation(database_url)


def test_an_answer_stores_its_head_and_its_claim_in_one_commit(node: _Federation) -> None:
    node.accept(node.append())  # the first head, written at once (not deferring)
    head = node.append()
    commits = node.commits
    with node.log.deferring_heads():
        node.accept(head)
        stored = node.stored()
        assert stored is not None and stored.size < head.size  # not yet written
        assert node.log.claim(head.size - 1, _record("q-1"))
    assert node.commits == commits + 1
    assert node.stored() == head
    assert [row.query_id for row in node.log.entries()] == ["q-1"]


def test_a_head_accepted_without_a_claim_is_stored_when_the_block_ends(
    node: _Federation,
) -> None:
    head = node.append()
    with pytest.raises(RuntimeError), node.log.deferring_heads():
        node.accept(head)
        raise RuntimeError("refused after the head was accepted (consent, credentials...)")
    assert node.stored() == head
    assert node.log.entries() == []


def test_a_lost_claim_does_not_lose_the_head(node: _Federation) -> None:
    first = node.append()
    node.accept(first)
    assert node.log.claim(0, _record("q-1"))
    head = node.append()
    with node.log.deferring_heads():
        node.accept(head)
        assert not node.log.claim(0, _record("q-2"))  # the receipt was used: rolled back
    assert node.stored() == head
    assert [row.query_id for row in node.log.entries()] == ["q-1"]


def test_every_claim_first_writes_a_head_still_unwritten(node: _Federation) -> None:
    """A head accepted on one thread's deferring block is written by any claim that
    commits before that block ends: no answer is stored without its head."""
    head = node.append()
    node.heads._local.deferring = True  # this thread's block, still open
    node.accept(head)
    node.heads._local.deferring = False
    assert node.stored() is None
    assert node.log.claim(0, _record("q-1"))
    assert node.stored() == head


def test_heads_written_out_of_order_never_move_the_stored_head_back(node: _Federation) -> None:
    older, newer = node.append(), node.append()
    node.heads.save(newer)
    assert node.stored() == newer
    # An older head committed late (another answer's transaction) changes nothing.
    with node.engine.begin() as connection:
        node.heads._unwritten = older
        node.heads.write_unwritten(connection)
    assert node.stored() == newer


def test_outside_a_deferring_block_a_head_is_written_at_once(node: _Federation) -> None:
    head = node.append()
    node.accept(head)
    assert node.stored() == head
