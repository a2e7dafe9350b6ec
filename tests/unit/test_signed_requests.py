"""Signed queries, training jobs and consent revocations: what each signature covers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from creditshare._canonical import canonical_json
from creditshare.consent import ConsentRevocation
from creditshare.crypto import SigningKey
from creditshare.errors import InvalidInputError, InvalidSignatureError
from creditshare.signed import SignedQuery, SignedTrainingJob, query_document, training_document

NOW = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)
USCC = "91350100M000100Y43"


def _query(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "query_id": "a" * 32,
        "requester": "bank-1",
        "uscc": USCC,
        "purpose": "pre_loan_review",
        "consent_id": "c" * 32,
        "chains": ["yrd", "bth"],
        "model_id": "sme-scorecard-v1",
        "key_fingerprint": "0123456789abcdef",
        "time": NOW,
    } | changes
    return query_document(**fields)


def test_a_signed_query_verifies_with_its_key_only() -> None:
    key = SigningKey.generate()
    signed = SignedQuery.sign(_query(), key)
    signed.verify(key.verify_key)
    with pytest.raises(InvalidSignatureError):
        signed.verify(SigningKey.generate().verify_key)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key_fingerprint", "fedcba9876543210"),
        ("uscc", "91110000MA00000000"),
        ("consent_id", "d" * 32),
        ("chains", ["yrd", "bth", "prd"]),
        ("model_id", "other-model"),
        ("purpose", "model_training"),
        ("requester", "bank-2"),
        ("query_id", "b" * 32),
        ("time", "2026-11-30T08:00:01Z"),
    ],
)
def test_changing_any_signed_field_breaks_the_signature(field: str, value: object) -> None:
    key = SigningKey.generate()
    signed = SignedQuery.sign(_query(), key)
    altered = SignedQuery(signed.document | {field: value}, signed.signature)
    with pytest.raises(InvalidSignatureError):
        altered.verify(key.verify_key)


def test_the_chains_are_a_sorted_set_so_one_request_has_one_document() -> None:
    assert _query(chains=["yrd", "bth", "yrd"])["chains"] == ["bth", "yrd"]


def test_a_query_signature_is_no_training_signature() -> None:
    """Each statement type signs under its own domain: bytes signed as one type never
    verify as another, even if their documents were made to look alike."""
    key = SigningKey.generate()
    query = SignedQuery.sign(_query(), key)
    as_job = SignedTrainingJob(query.document, query.signature)
    with pytest.raises(InvalidSignatureError):
        as_job.verify(key.verify_key)


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ({"v": 2}, "fields"),
        ("not an object", "JSON object"),
    ],
)
def test_malformed_documents_are_refused_before_any_signature(document: Any, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says):
        SignedQuery.from_json({"document": document, "signature": "A" * 86 + "=="})


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"query_id": "not-hex"}, "query_id"),
        ({"uscc": "x" * 18}, "uscc"),
        ({"chains": ["mars"]}, "chains"),
        ({"chains": ["yrd", "bth"]}, "sorted"),
        ({"key_fingerprint": "K" * 16}, "key_fingerprint"),
        ({"time": "yesterday"}, "time"),
    ],
)
def test_each_field_is_bounded(change: dict[str, Any], says: str) -> None:
    document = _query() | change
    with pytest.raises(InvalidInputError, match=says):
        SignedQuery.checked(document)


def test_a_signature_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="64 bytes"):
        SignedQuery.from_json({"document": _query(), "signature": "AAAA"})


def test_training_job_names_key_and_nodes() -> None:
    key = SigningKey.generate()
    document = training_document(
        job_id="e" * 32,
        requester="bureau-1",
        key_fingerprint="0123456789abcdef",
        nodes=["yrd-tax", "yrd-court", "yrd-tax"],
        time=NOW,
    )
    signed = SignedTrainingJob.sign(document, key)
    assert signed.nodes == ("yrd-court", "yrd-tax") and signed.job_id == "e" * 32
    round_trip = SignedTrainingJob.from_json(json.loads(canonical_json(signed.to_json())))
    round_trip.verify(key.verify_key)
    with pytest.raises(InvalidInputError, match="at least one node"):
        SignedTrainingJob.checked(document | {"nodes": []})
    with pytest.raises(InvalidInputError, match="model_training"):
        SignedTrainingJob.checked(document | {"purpose": "pre_loan_review"})


def test_a_consent_revocation_is_signed_by_the_enterprise() -> None:
    key = SigningKey.generate()
    revocation = ConsentRevocation.create("c" * 32, USCC, NOW, key)
    parsed = ConsentRevocation.from_json(revocation.to_json())
    parsed.verify(key.verify_key)
    other = ConsentRevocation("d" * 32, USCC, NOW, revocation.signature)
    with pytest.raises(InvalidSignatureError):
        other.verify(key.verify_key)
    with pytest.raises(InvalidInputError, match="consent_id"):
        ConsentRevocation.from_document(revocation.document() | {"consent_id": "zz"})
