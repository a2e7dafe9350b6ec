"""The ledger above storage: heads, receipts, audits and the node's head tracker."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, text

import creditshare.ledger
from creditshare.errors import (
    ConfigurationError,
    InconsistentTreeHeadError,
    InvalidInputError,
    InvalidProofError,
    InvalidSignatureError,
    LedgerError,
    LedgerIntegrityError,
)
from creditshare.ledger import (
    EMPTY_ROOT,
    EmptyLogError,
    Ledger,
    LogSigner,
    MemoryLedgerStorage,
    Receipt,
    SignedTreeHead,
    SqlLedgerStorage,
    StaleTreeHeadError,
    TrustedHeadTracker,
    key_id_for,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
    verify_log,
    verify_subject,
)

from .._databases import migrated_engine

# RFC 8032 §7.1 TEST 1: a published Ed25519 key pair.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
T0_MS = 1_740_821_400_000
USCC_A, USCC_B = "91350100M000100Y43", "914403001922038216"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def signer() -> LogSigner:
    return LogSigner.from_private_bytes(RFC8032_SECRET)


@pytest.fixture
def ledger(signer: LogSigner) -> Ledger:
    return Ledger(MemoryLedgerStorage(), signer, Clock())


def fill(ledger: Ledger, count: int) -> list[Receipt]:
    subjects = (USCC_A, USCC_B)
    return [ledger.append(b"query %d" % i, subjects[i % 2]) for i in range(count)]


def test_public_api_is_pinned() -> None:
    assert sorted(creditshare.ledger.__all__) == sorted(
        [
            *("EMPTY_ROOT", "HASH_SIZE", "SIGNATURE_SIZE", "BuildBatch", "EmptyLogError"),
            *("Frontier", "Ledger", "LedgerHeadRow", "LedgerLeafRow", "LedgerStorage"),
            *("LedgerNodeRow",),
            *("LogReport", "LogSigner", "MemoryLedgerStorage", "Receipt", "SignedTreeHead"),
            *("MAX_REASON", "MAX_RECORD_BYTES", "QueryRecord", "parse_record", "RECORD_KINDS"),
            *("SqlLedgerStorage", "StaleTreeHeadError", "StoredLeaf", "TrustedHeadTracker"),
            *("consistency_proof", "inclusion_proof", "key_id_for", "leaf_hash", "node_hash"),
            *("root", "verify_consistency", "verify_inclusion", "verify_log", "verify_subject"),
            # C2SP signed notes, checkpoints and witness cosignatures
            *("MAX_NOTE_BYTES", "MAX_SIGNATURES", "NoteSignature", "SignedNote", "parse_note"),
            *("note_key_id", "COSIGNATURE_TYPE", "LOG_ORIGIN_PREFIX", "Checkpoint"),
            *("Cosignature", "WitnessKey", "checkpoint_body", "checkpoint_note", "cosign"),
            *("cosignature_message", "log_origin", "parse_checkpoint", "parse_checkpoint_body"),
            *("verify_cosignature",),
            # the JSON forms served over HTTP
            *("MAX_PROOF_HASHES", "entry_document", "parse_entry", "parse_proof"),
            *("proof_document",),
        ]
    )
    assert issubclass(StaleTreeHeadError, LedgerError)
    assert issubclass(EmptyLogError, LedgerError)


# --- signed tree heads ---


def test_signer_key_id_and_signed_bytes_known_answer(signer: LogSigner) -> None:
    assert signer.key_id == hashlib.sha256(RFC8032_PUBLIC).hexdigest()[:16]
    assert key_id_for(signer.public_key) == signer.key_id
    assert LogSigner.from_private_bytes(signer.private_bytes()).key_id == signer.key_id
    head = signer.sign_head(0x0102, b"\xaa" * 32, 0x0A0B)
    assert head.signed_bytes() == (
        b"creditshare/sth/v1\n"
        + bytes.fromhex("0000000000000102")
        + bytes.fromhex("0000000000000a0b")
        + b"\xaa" * 32
    )
    head.verify(signer.public_key)
    # Ed25519 is deterministic, so this pins the whole signing path.
    assert head == signer.sign_head(0x0102, b"\xaa" * 32, 0x0A0B)
    assert "9d61" not in repr(signer)


def test_head_refuses_other_keys_and_any_change(signer: LogSigner) -> None:
    head = signer.sign_head(5, b"\x01" * 32, T0_MS)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(InvalidSignatureError, match="names key"):
        head.verify(other.public_key())
    impostor = replace(head, signature=other.sign(head.signed_bytes()))
    with pytest.raises(InvalidSignatureError, match="bad signature"):
        impostor.verify(signer.public_key)
    for changed in (
        replace(head, size=6),
        replace(head, root=b"\x02" * 32),
        replace(head, timestamp_ms=T0_MS + 1),
    ):
        with pytest.raises(InvalidSignatureError):
            changed.verify(signer.public_key)


def test_head_json_round_trip(signer: LogSigner) -> None:
    head = signer.sign_head(7, b"\x07" * 32, T0_MS)
    data = json.loads(json.dumps(head.to_dict()))
    assert data["key_id"] == signer.key_id
    assert SignedTreeHead.from_dict(data) == head
    assert head.timestamp == T0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": "7"}, "size must be an integer"),
        ({"size": True}, "size must be an integer"),
        ({"size": -1}, "size must be an integer in 0..2"),
        ({"timestamp_ms": 2**64}, "timestamp_ms must be an integer in"),
        ({"root": "not base64!"}, "root is not valid base64"),
        ({"root": "AAAA"}, "root must decode to 32 bytes, got 3"),
        ({"signature": 7}, "signature must be a base64 string"),
        ({"signature": "AAAA"}, "signature must decode to 64 bytes"),
        ({"key_id": "ABCDEF0123456789"}, "key_id must be 16 lowercase hex"),
        ({"key_id": None}, "key_id must be a string"),
    ],
)
def test_head_from_dict_names_the_bad_field(
    signer: LogSigner, change: dict[str, object], message: str
) -> None:
    data: dict[str, object] = {**signer.sign_head(7, b"\x07" * 32, T0_MS).to_dict(), **change}
    with pytest.raises(InvalidInputError, match=message):
        SignedTreeHead.from_dict(data)


def test_head_from_dict_refuses_missing_fields_and_non_objects(signer: LogSigner) -> None:
    data = dict(signer.sign_head(7, b"\x07" * 32, T0_MS).to_dict())
    del data["root"]
    with pytest.raises(InvalidInputError, match="missing the field 'root'"):
        SignedTreeHead.from_dict(data)
    with pytest.raises(InvalidInputError, match="JSON object"):
        SignedTreeHead.from_dict([])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="32 raw bytes"):
        LogSigner.from_private_bytes(b"short")


# --- the ledger ---


def test_empty_ledger_has_no_head(ledger: Ledger) -> None:
    with pytest.raises(EmptyLogError):
        ledger.latest_head()
    with pytest.raises(EmptyLogError):
        ledger.receipt(0)
    assert ledger.consistency_proof(0, 0) == []


def test_append_returns_a_verifiable_receipt(ledger: Ledger, signer: LogSigner) -> None:
    receipts = fill(ledger, 5)
    assert [r.index for r in receipts] == list(range(5))
    for receipt in receipts:
        receipt.verify(signer.public_key)
        assert receipt.head.timestamp_ms == T0_MS
        assert receipt.leaf_hash == leaf_hash(receipt.data)
    assert receipts[-1].head == ledger.latest_head()
    assert ledger.size() == 5
    assert [leaf.index for leaf in ledger.entries_for(USCC_A)] == [0, 2, 4]


def test_receipt_json_round_trip(ledger: Ledger, signer: LogSigner) -> None:
    receipt = fill(ledger, 6)[3]
    again = Receipt.from_dict(json.loads(json.dumps(receipt.to_dict())))
    assert again == receipt
    again.verify(signer.public_key)


def test_receipt_from_dict_names_the_bad_field(ledger: Ledger) -> None:
    good = fill(ledger, 3)[1].to_dict()
    cases: list[tuple[dict[str, object], str]] = [
        ({"index": -1}, "must not be negative"),
        ({"leaf_hash": "AAAA"}, "leaf_hash must decode to 32 bytes"),
        ({"inclusion_proof": "AAAA"}, "inclusion_proof must be a list"),
        ({"inclusion_proof": ["AAAA"]}, r"inclusion_proof\[0\] must decode to 32 bytes"),
        ({"head": "x"}, "head must be a JSON object"),
        ({"head": {}}, "tree head is missing the field"),
    ]
    for change, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            Receipt.from_dict({**good, **change})


def test_tampered_or_forged_receipts_fail(ledger: Ledger, signer: LogSigner) -> None:
    receipt = fill(ledger, 6)[2]
    key = signer.public_key
    with pytest.raises(InvalidProofError, match="data does not match"):
        replace(receipt, data=b"query 3").verify(key)
    with pytest.raises(InvalidProofError):
        replace(receipt, index=3).verify(key)
    bad_proof = (receipt.inclusion_proof[0][::-1], *receipt.inclusion_proof[1:])
    with pytest.raises(InvalidProofError):
        replace(receipt, inclusion_proof=bad_proof).verify(key)
    # A head forged by another key over a log that does contain the record.
    forger = LogSigner.generate()
    forged = forger.sign_head(receipt.head.size, receipt.head.root, receipt.head.timestamp_ms)
    with pytest.raises(InvalidSignatureError):
        replace(receipt, head=forged).verify(key)
    with pytest.raises(InvalidSignatureError):
        replace(receipt, head=replace(forged, key_id=signer.key_id)).verify(key)


def test_receipts_reproved_against_older_and_newer_heads(ledger: Ledger, signer: LogSigner) -> None:
    receipts = fill(ledger, 9)
    old_head = receipts[4].head
    for index in range(5):
        ledger.receipt(index, old_head).verify(signer.public_key)
        assert ledger.receipt(index).head.size == 9
        ledger.receipt(index).verify(signer.public_key)
    with pytest.raises(InvalidInputError, match="not in the tree of size 5"):
        ledger.receipt(5, old_head)
    foreign = LogSigner.generate().sign_head(5, old_head.root, old_head.timestamp_ms)
    with pytest.raises(LedgerError, match="not one this log signed"):
        ledger.receipt(0, foreign)
    # By size: the stored head of that size, as a node that trusts it needs.
    assert ledger.receipt_at(2, 5) == ledger.receipt(2, old_head)
    with pytest.raises(LedgerError, match="no signed head of size 10"):
        ledger.receipt_at(2, 10)
    with pytest.raises(InvalidInputError, match="not in the tree of size 5"):
        ledger.receipt_at(5, 5)


def test_proofs_between_heads(ledger: Ledger) -> None:
    receipts = fill(ledger, 12)
    heads = [r.head for r in receipts]
    for old in heads:
        for new in heads[heads.index(old) :]:
            proof = ledger.consistency_proof(old.size, new.size)
            verify_consistency(old.size, new.size, old.root, new.root, proof)
    verify_inclusion(leaf_hash(b"query 3"), 3, 7, ledger.inclusion_proof(3, 7), heads[6].root)
    assert ledger.consistency_proof(0, 12) == []
    with pytest.raises(InvalidInputError, match=r"outside 0\.\.12"):
        ledger.consistency_proof(1, 13)
    with pytest.raises(InvalidInputError):
        ledger.consistency_proof(5, 4)
    with pytest.raises(InvalidInputError):
        ledger.inclusion_proof(7, 7)


class FlakySigner(LogSigner):
    fail = False

    def sign_head(self, size: int, root: bytes, timestamp_ms: int) -> SignedTreeHead:
        if self.fail:
            raise RuntimeError("HSM offline")
        return super().sign_head(size, root, timestamp_ms)


def test_receipts_stay_right_across_failures_and_other_writers(signer: LogSigner) -> None:
    """The ledger caches the tree's right edge between appends; it must notice when
    an append was rolled back or another ledger (process) appended in between."""
    storage = MemoryLedgerStorage()
    clock = Clock()
    first, second = Ledger(storage, signer, clock), Ledger(storage, signer, clock)
    receipts = [first.append(b"a", USCC_A), first.append(b"b", USCC_A)]

    flaky = FlakySigner.from_private_bytes(RFC8032_SECRET)
    broken = Ledger(storage, flaky, clock)
    receipts.append(broken.append(b"c", USCC_A))
    flaky.fail = True
    with pytest.raises(RuntimeError, match="HSM offline"):
        broken.append(b"lost", USCC_A)
    flaky.fail = False
    for i in range(6):
        writer = (first, second, broken)[i % 3]
        receipts.append(writer.append(b"%d" % i, USCC_B))
    receipts.append(first.append(b"last", USCC_A))
    assert [r.index for r in receipts] == list(range(10))
    for receipt in receipts:
        receipt.verify(signer.public_key)
    assert verify_log(storage, signer.public_key).ok


def test_clock_must_be_timezone_aware(signer: LogSigner) -> None:
    ledger = Ledger(MemoryLedgerStorage(), signer, lambda: datetime(2025, 1, 1))
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        ledger.append(b"x", USCC_A)
    assert ledger.size() == 0


# --- audits ---


@pytest.fixture
def sql_engine(database_url: str) -> Iterator[Engine]:
    engine = migrated_engine(database_url)
    yield engine
    engine.dispose()


def sql_ledger(engine: Engine, signer: LogSigner, count: int) -> Ledger:
    ledger = Ledger(SqlLedgerStorage(engine), signer, Clock())
    fill(ledger, count)
    return ledger


def tamper(engine: Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def test_a_database_replaced_underneath_is_never_signed_over(
    sql_engine: Engine, signer: LogSigner
) -> None:
    """A database emptied and refilled with other entries must not be signed on (that
    forks the log), and proofs are not served from it as if it were this log."""
    ledger = sql_ledger(sql_engine, signer, 200)
    ledger.inclusion_proof(150, 200)
    tamper(sql_engine, "DELETE FROM ledger_leaf")
    tamper(sql_engine, "DELETE FROM ledger_head")
    tamper(sql_engine, "DELETE FROM ledger_node")
    other = Ledger(SqlLedgerStorage(sql_engine), signer, Clock())  # a fresh process
    for i in range(201):
        other.append(b"other %d" % i, USCC_A)
    before = ledger.storage.heads()
    with pytest.raises(LedgerIntegrityError, match="entry 199's hash is not the one under"):
        ledger.append(b"fork", USCC_A)
    assert ledger.storage.heads() == before and ledger.storage.size() == 201
    with pytest.raises(LedgerIntegrityError, match="creditshare ledger verify --config FILE"):
        ledger.append(b"fork", USCC_A)  # the state stays until restart
    with pytest.raises(LedgerIntegrityError, match="replaced underneath"):
        ledger.inclusion_proof(150, 200)  # reads answer, but not from another log


def test_intact_log_verifies(sql_engine: Engine, signer: LogSigner) -> None:
    ledger = sql_ledger(sql_engine, signer, 10)
    report = verify_log(ledger.storage, signer.public_key)
    assert report.ok and report.problems == ()
    assert (report.leaves_checked, report.heads_checked) == (10, 10)
    assert verify_subject(ledger.storage, signer.public_key, USCC_A).ok
    assert verify_log(MemoryLedgerStorage(), signer.public_key).ok


def test_audit_names_a_tampered_leaf(sql_engine: Engine, signer: LogSigner) -> None:
    ledger = sql_ledger(sql_engine, signer, 10)
    tamper(sql_engine, "UPDATE ledger_leaf SET data = :v WHERE idx = 3", v=b"\x00")
    report = verify_log(ledger.storage, signer.public_key)
    assert not report.ok
    assert "leaf 3: stored hash does not match the stored data" in report.problems
    # Heads from size 4 on were signed over the original leaf 3.
    assert [p for p in report.problems if p.startswith("head")] == [
        f"head {size}: root does not match the stored leaves" for size in range(4, 11)
    ]
    subject = verify_subject(ledger.storage, signer.public_key, USCC_B)  # leaf 3 is B's
    assert not subject.ok and any(p.startswith("leaf 3:") for p in subject.problems)
    assert verify_subject(ledger.storage, signer.public_key, USCC_A).ok


def test_audit_names_a_tampered_leaf_hash(sql_engine: Engine, signer: LogSigner) -> None:
    ledger = sql_ledger(sql_engine, signer, 6)
    tamper(sql_engine, "UPDATE ledger_leaf SET leaf_hash = :v WHERE idx = 5", v=bytes(32))
    report = verify_log(ledger.storage, signer.public_key)
    assert report.problems == ("leaf 5: stored hash does not match the stored data",)


def test_audit_names_tampered_heads(sql_engine: Engine, signer: LogSigner) -> None:
    ledger = sql_ledger(sql_engine, signer, 8)
    tamper(sql_engine, "UPDATE ledger_head SET root = :v WHERE size = 5", v=bytes(32))
    tamper(sql_engine, "UPDATE ledger_head SET signature = :v WHERE size = 7", v=bytes(64))
    report = verify_log(ledger.storage, signer.public_key)
    assert report.problems == (
        "head 5: tree head of size 5 has a bad signature",
        "head 7: tree head of size 7 has a bad signature",
        "head 5: root does not match the stored leaves",
    )


def test_audit_reports_missing_rows_and_uncovered_leaves(
    sql_engine: Engine, signer: LogSigner
) -> None:
    ledger = sql_ledger(sql_engine, signer, 8)
    tamper(sql_engine, "DELETE FROM ledger_leaf WHERE idx = 2")
    tamper(sql_engine, "DELETE FROM ledger_head WHERE size >= 7")
    problems = verify_log(ledger.storage, signer.public_key).problems
    assert problems == (
        "leaves 2..2 are missing",
        *(f"head {size}: root not checked, leaf 2 is missing" for size in range(3, 7)),
        "leaves 6..7 are not covered by any signed head",
    )


def test_audit_reports_time_going_backwards(signer: LogSigner) -> None:
    clock = Clock()
    ledger = Ledger(MemoryLedgerStorage(), signer, clock)
    ledger.append(b"a", USCC_A)
    clock.now = T0 - timedelta(seconds=1)
    ledger.append(b"b", USCC_A)
    (problem,) = verify_log(ledger.storage, signer.public_key).problems
    assert problem.startswith("head 2: timestamp") and "earlier than head 1" in problem


def test_audit_with_the_wrong_key_flags_every_head(ledger: Ledger) -> None:
    fill(ledger, 3)
    other = LogSigner.generate().public_key
    assert len(verify_log(ledger.storage, other).problems) == 3
    assert not verify_subject(ledger.storage, other, USCC_A).ok


# --- the node's head tracker ---


def test_tracker_accepts_consistent_extensions(ledger: Ledger, signer: LogSigner) -> None:
    saved: list[SignedTreeHead] = []
    tracker = TrustedHeadTracker(save=saved.append)
    key = signer.public_key
    heads = [r.head for r in fill(ledger, 10)]
    assert tracker.head is None and tracker.trusted_size == 0
    assert tracker.accept(heads[2], [], 0, key) == heads[2]  # from nothing, anything goes
    assert tracker.accept(heads[6], ledger.consistency_proof(3, 7), 3, key) == heads[6]
    assert tracker.accept(heads[6], [], 7, key) == heads[6]  # the same head again
    assert saved == [heads[2], heads[6]]
    restarted = TrustedHeadTracker(load=lambda: saved[-1])
    assert restarted.trusted_size == 7
    restarted.accept(heads[9], ledger.consistency_proof(7, 10), 7, key)
    assert restarted.head == heads[9]


def test_tracker_refuses_forks_and_flags_stale_heads(ledger: Ledger, signer: LogSigner) -> None:
    key = signer.public_key
    heads = [r.head for r in fill(ledger, 8)]
    tracker = TrustedHeadTracker()
    tracker.accept(heads[4], [], 0, key)

    # The operator rewrites entry 2 and re-signs: a fork of the trusted head.
    fork = Ledger(MemoryLedgerStorage(), signer, Clock())
    for i in range(8):
        fork.append(b"rewritten" if i == 2 else b"query %d" % i, USCC_A)
    fork_head_5 = fork.storage.head(5)
    assert fork_head_5 is not None
    with pytest.raises(InconsistentTreeHeadError, match="different root"):
        tracker.accept(fork_head_5, [], 5, key)
    with pytest.raises(InconsistentTreeHeadError, match="does not extend"):
        tracker.accept(fork.latest_head(), fork.consistency_proof(5, 8), 5, key)

    with pytest.raises(StaleTreeHeadError) as older:
        tracker.accept(heads[2], [], 0, key)
    assert older.value.trusted_size == 5
    with pytest.raises(StaleTreeHeadError) as wrong_start:
        tracker.accept(heads[7], ledger.consistency_proof(3, 8), 3, key)
    assert wrong_start.value.trusted_size == 5

    forged = LogSigner.generate().sign_head(8, heads[7].root, heads[7].timestamp_ms)
    with pytest.raises(InvalidSignatureError):
        tracker.accept(forged, ledger.consistency_proof(5, 8), 5, key)
    assert tracker.head == heads[4]
    tracker.accept(heads[7], ledger.consistency_proof(5, 8), 5, key)
    assert tracker.head == heads[7]


def test_tracker_keeps_its_head_when_saving_fails(ledger: Ledger, signer: LogSigner) -> None:
    heads = [r.head for r in fill(ledger, 3)]

    def broken_save(head: SignedTreeHead) -> None:
        raise OSError("disk full")

    tracker = TrustedHeadTracker(load=lambda: heads[0], save=broken_save)
    with pytest.raises(OSError, match="disk full"):
        tracker.accept(heads[2], ledger.consistency_proof(1, 3), 1, signer.public_key)
    assert tracker.head == heads[0]


def test_tracker_size_zero_head_must_have_the_empty_root(signer: LogSigner) -> None:
    tracker = TrustedHeadTracker()
    tracker.accept(signer.sign_head(0, EMPTY_ROOT, T0_MS), [], 0, signer.public_key)
    with pytest.raises(InconsistentTreeHeadError):
        tracker.accept(signer.sign_head(0, b"\x01" * 32, T0_MS), [], 0, signer.public_key)


def test_tracker_is_thread_safe(ledger: Ledger, signer: LogSigner) -> None:
    heads = [r.head for r in fill(ledger, 40)]
    tracker = TrustedHeadTracker()
    outcomes: list[str] = []
    lock = threading.Lock()

    def offer(head: SignedTreeHead) -> None:
        # Like a broker racing several queries: prove from (or, for an older head, to)
        # whatever the node trusts right now. Each refusal means another thread moved
        # the head, so a head cannot be refused more often than there are heads.
        for _ in range(len(heads) + 1):
            start = tracker.trusted_size
            if start <= head.size:
                proof = ledger.consistency_proof(start, head.size)
            else:
                proof = ledger.consistency_proof(head.size, start)
            try:
                tracker.accept(head, proof, start, signer.public_key)
                result = "ok"
            except StaleTreeHeadError:
                # Another thread moved the head between our read and our offer: prove
                # again from (or to) the size it trusts now. Older heads are taken too.
                with lock:
                    outcomes.append("stale")
                continue
            with lock:
                outcomes.append(result)
            return

    threads = [threading.Thread(target=offer, args=(head,)) for head in reversed(heads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tracker.head == heads[-1]
    assert outcomes.count("ok") == len(heads)  # every query's head was taken in the end


def test_tracker_takes_older_heads_proven_to_be_prefixes(ledger: Ledger, signer: LogSigner) -> None:
    """Query A is recorded under head 4, query B under head 7, and B reaches the node first:
    A's receipt must still be accepted, by proving head 4 a prefix of an accepted head."""
    key = signer.public_key
    heads = [r.head for r in fill(ledger, 10)]
    tracker = TrustedHeadTracker()
    tracker.accept(heads[5], [], 0, key)
    tracker.accept(heads[8], ledger.consistency_proof(6, 9), 6, key)
    assert tracker.accept(heads[3], ledger.consistency_proof(4, 9), 9, key) == heads[8]
    # To a head accepted earlier (6), not only the trusted one (9).
    assert tracker.accept(heads[1], ledger.consistency_proof(2, 6), 6, key) == heads[8]
    # A head of a size accepted before needs no proof, if the root is the same.
    assert tracker.accept(heads[5], [], 0, key) == heads[8]
    assert tracker.head == heads[8] and tracker.trusted_size == 9  # older heads never trusted

    # A proof to a size the node never accepted: a race, not an attack.
    with pytest.raises(StaleTreeHeadError) as unknown:
        tracker.accept(heads[2], ledger.consistency_proof(3, 8), 8, key)
    assert unknown.value.trusted_size == 9

    # A rewritten log's older head cannot pass as a prefix of the trusted one.
    fork = Ledger(MemoryLedgerStorage(), signer, Clock())
    for i in range(10):
        fork.append(b"rewritten" if i == 1 else b"query %d" % i, USCC_A)
    fork_head_4 = fork.storage.head(4)
    fork_head_6 = fork.storage.head(6)
    assert fork_head_4 is not None and fork_head_6 is not None
    with pytest.raises(InconsistentTreeHeadError, match="not a prefix"):
        tracker.accept(fork_head_4, fork.consistency_proof(4, 9), 9, key)
    with pytest.raises(InconsistentTreeHeadError, match="not a prefix"):
        tracker.accept(fork_head_4, ledger.consistency_proof(4, 9), 9, key)
    with pytest.raises(InconsistentTreeHeadError, match="different root"):
        tracker.accept(fork_head_6, [], 0, key)
    assert tracker.head == heads[8]
