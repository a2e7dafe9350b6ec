"""One codec per wire form: tree heads and receipts as protobuf (``creditshare.proto``)
and ledger entries and proofs as JSON (``creditshare.ledger``). Each round-trips, and
each reader refuses what no honest writer sends (wrong sizes, too many hashes, bad
base64, wrong types), naming the field, before anything is hashed or verified."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from creditshare.client import verify_access_log
from creditshare.crypto import VerifyKey
from creditshare.errors import ClientError, InvalidInputError
from creditshare.ledger import (
    MAX_PROOF_HASHES,
    MAX_RECORD_BYTES,
    Ledger,
    LogSigner,
    MemoryLedgerStorage,
    QueryRecord,
    Receipt,
    entry_document,
    parse_entry,
    parse_proof,
    proof_document,
    verify_consistency,
)
from creditshare.proto import (
    TRUSTED_SIZE_METADATA,
    head_from_pb,
    head_to_pb,
    node_pb2,
    receipt_from_pb,
    receipt_to_pb,
    trusted_size_from,
    trusted_size_metadata,
)

USCC = "91350100M000100Y43"


def _record(index: int) -> bytes:
    return QueryRecord(
        kind="refusal",
        query_id=f"q-{index}",
        time=datetime(2025, 3, 1, tzinfo=UTC),
        uscc=USCC,
        requester="bank-1",
        requester_role="bank",
        purpose="pre_loan_review",
        consent_id="c",
        model_id="m",
        key_fingerprint="k",
        chains=("yrd",),
        indicators=(),
        reason="no consent",
    ).to_bytes()


@pytest.fixture(scope="module")
def signer() -> LogSigner:
    return LogSigner.generate()


@pytest.fixture(scope="module")
def ledger(signer: LogSigner) -> Ledger:
    ledger = Ledger(MemoryLedgerStorage(), signer, lambda: datetime(2025, 3, 1, tzinfo=UTC))
    for i in range(7):
        ledger.append(_record(i), USCC)
    return ledger


# --- protobuf ---------------------------------------------------------------------


def test_head_and_receipt_round_trip_through_protobuf(ledger: Ledger, signer: LogSigner) -> None:
    receipt = ledger.receipt(2, ledger.latest_head())
    assert head_from_pb(head_to_pb(receipt.head)) == receipt.head
    consistency = ledger.consistency_proof(3, receipt.head.size)
    wire = node_pb2.QueryReceipt.FromString(
        receipt_to_pb(receipt, 3, consistency).SerializeToString()
    )
    proven = receipt_from_pb(wire)
    assert proven.receipt == receipt
    assert (proven.consistency_from, list(proven.consistency_proof)) == (3, consistency)
    proven.receipt.verify(signer.public_key)


def _tampered(receipt: Receipt, **change: Any) -> node_pb2.QueryReceipt:
    pb = receipt_to_pb(receipt)
    for name, value in change.items():
        if name.startswith("head_"):
            setattr(pb.tree_head, name.removeprefix("head_"), value)
        elif isinstance(value, list):
            del getattr(pb, name)[:]
            getattr(pb, name).extend(value)
        else:
            setattr(pb, name, value)
    return pb


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"leaf_data": b""}, "leaf_data must be 1 to"),
        ({"leaf_data": b"x" * (MAX_RECORD_BYTES + 1)}, "leaf_data must be 1 to"),
        ({"inclusion_proof": [b"\x00" * 31]}, "inclusion_proof must be at most"),
        (
            {"consistency_proof": [b"\x00" * 32] * (MAX_PROOF_HASHES + 1)},
            "consistency_proof must be at most",
        ),
        ({"head_root": b"\x00" * 31}, "tree_head must have a 32-byte root"),
        ({"head_signature": b"\x00" * 63}, "64-byte signature"),
        ({"head_key_id": "x" * 65}, "tree_head must have"),
        ({"head_size": 1 << 63}, "size is over 2"),
        ({"leaf_index": 7}, "leaf_index must lie inside"),
        ({"consistency_from": 1 << 63}, "leaf_index must lie inside"),
        ({"head_key_id": "NOT-HEX-AT-ALL!!"}, "key_id must be 16 lowercase hex"),
    ],
)
def test_receipt_from_protobuf_refuses_bad_shapes(
    ledger: Ledger, change: dict[str, Any], message: str
) -> None:
    receipt = ledger.receipt(2, ledger.latest_head())
    with pytest.raises(InvalidInputError, match=message):
        receipt_from_pb(_tampered(receipt, **change))


def test_trusted_size_travels_as_metadata() -> None:
    assert trusted_size_from(trusted_size_metadata(42)) == 42
    assert trusted_size_from([("other", "1"), (TRUSTED_SIZE_METADATA, "x")]) is None
    assert trusted_size_from(None) is None


# --- JSON -------------------------------------------------------------------------


def test_entry_round_trips_through_json(ledger: Ledger, signer: LogSigner) -> None:
    receipt = ledger.receipt(4, ledger.latest_head())
    document = json.loads(json.dumps(entry_document(receipt)))
    assert document["record"]["query_id"] == "q-4"
    assert set(document) == {"index", "record", "leaf_data", "inclusion_proof", "tree_head"}
    again = parse_entry(document)
    assert again == receipt
    again.verify(signer.public_key)


def test_proof_round_trips_through_json(ledger: Ledger) -> None:
    new = ledger.latest_head()
    hashes = ledger.consistency_proof(3, new.size)
    assert parse_proof(json.loads(json.dumps(proof_document(hashes)))) == hashes
    with pytest.raises(InvalidInputError, match=r"consistency proof.hashes\[0\] is not valid"):
        parse_proof({"hashes": ["***"]})
    with pytest.raises(InvalidInputError, match="at most 128 items"):
        parse_proof({"hashes": [base64.b64encode(b"\x00" * 32).decode()] * 129})
    with pytest.raises(InvalidInputError, match="must be a JSON object"):
        parse_proof(["AAAA"])
    verify_consistency(3, new.size, ledger.receipt_at(0, 3).head.root, new.root, hashes)


def _bad_entries(good: dict[str, Any]) -> list[tuple[object, str]]:
    huge = base64.b64encode(b"x" * (MAX_RECORD_BYTES + 1)).decode()
    return [
        ([], "ledger entry must be a JSON object"),
        ({**good, "index": "2"}, "ledger entry.index must be an integer"),
        ({**good, "index": -1}, "must not be negative"),
        ({**good, "index": 7}, "lies outside its tree head of size 7"),
        ({**good, "leaf_data": "not base64!"}, "ledger entry.leaf_data is not valid base64"),
        ({**good, "leaf_data": huge}, f"leaf_data must decode to at most {MAX_RECORD_BYTES}"),
        ({**good, "leaf_data": ""}, "leaf_data must not be empty"),
        ({**good, "inclusion_proof": "AAAA"}, "inclusion_proof must be a list"),
        ({**good, "inclusion_proof": ["AAAA"]}, r"inclusion_proof\[0\] must decode to 32"),
        ({**good, "inclusion_proof": [good["inclusion_proof"][0]] * 65}, "at most 64 items"),
        ({**good, "tree_head": None}, "tree_head must be a JSON object"),
        ({**good, "tree_head": {**good["tree_head"], "root": "AAAA"}}, "root must decode"),
        ({k: v for k, v in good.items() if k != "tree_head"}, "missing the field 'tree_head'"),
    ]


def test_entry_from_json_names_the_bad_field(ledger: Ledger) -> None:
    good = entry_document(ledger.receipt(2, ledger.latest_head()))
    for document, message in _bad_entries(good):
        with pytest.raises(InvalidInputError, match=message):
            parse_entry(document)


def test_the_client_reads_entries_with_the_same_parser(ledger: Ledger, signer: LogSigner) -> None:
    """The enterprise's access-log check refuses what the server's form refuses, with the
    field named, and accepts what the server sends."""
    key = VerifyKey.from_cryptography(signer.public_key)
    head = ledger.latest_head()
    entries = [entry_document(ledger.receipt(i, head)) for i in range(3)]
    checked = verify_access_log(json.loads(json.dumps(entries)), USCC, key)
    assert [(e.index, e.verified) for e in checked] == [(0, True), (1, True), (2, True)]
    for document, message in _bad_entries(entries[1]):
        with pytest.raises(ClientError, match="malformed access-log entry") as caught:
            verify_access_log([entries[0], document], USCC, key)  # type: ignore[list-item]
        assert caught.match(message)
