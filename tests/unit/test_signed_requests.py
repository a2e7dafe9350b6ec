"""Signed queries, training jobs and consent revocations: what each signature covers."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from creditshare._canonical import canonical_json
from creditshare.consent import ConsentRevocation
from creditshare.crypto import SigningKey
from creditshare.errors import InvalidInputError, InvalidSignatureError
from creditshare.federated import TrainingConfig
from creditshare.federated._psi import MAX_PSI_ITEMS
from creditshare.signed import (
    SignedPsiTranscript,
    SignedQuery,
    SignedTrainingJob,
    psi_transcript_document,
    query_document,
    training_document,
)

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


def _job(config: TrainingConfig | None = None) -> dict[str, Any]:
    return training_document(
        job_id="e" * 32,
        requester="bureau-1",
        key_fingerprint="0123456789abcdef",
        nodes=["yrd-tax", "yrd-court", "yrd-tax"],
        config_sha256=(config or TrainingConfig()).digest(),
        time=NOW,
    )


def test_training_job_names_key_and_nodes() -> None:
    key = SigningKey.generate()
    document = _job()
    signed = SignedTrainingJob.sign(document, key)
    assert signed.nodes == ("yrd-court", "yrd-tax") and signed.job_id == "e" * 32
    assert signed.config_sha256 == TrainingConfig().digest()
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


def test_the_config_hash_is_sha256_of_the_canonical_document_whatever_its_order() -> None:
    config = TrainingConfig(seed=7, feature_clip=2.0)
    document = config.to_document()
    reordered = dict(reversed(list(document.items())))
    assert list(reordered) != list(document)
    assert TrainingConfig.from_document(reordered).digest() == config.digest()
    expected = hashlib.sha256(canonical_json(document)).hexdigest()
    assert config.digest() == expected and len(expected) == 64
    # Integral floats as JSON numbers decode to the same config, hence the same hash.
    assert TrainingConfig.from_document({"feature_clip": 2, "seed": 7}).digest() == expected


def _changed(value: Any) -> Any:
    """A different value of the same type, inside every field's bounds."""
    if isinstance(value, bool):
        return not value
    return value + 1 if isinstance(value, int) else value / 2 or 0.5


@pytest.mark.parametrize("field", sorted(TrainingConfig.model_fields))
def test_every_setting_changes_the_config_hash(field: str) -> None:
    config = TrainingConfig()
    other = config.replace(**{field: _changed(getattr(config, field))})
    assert getattr(other, field) != getattr(config, field)
    assert other.digest() != config.digest()


def test_a_training_job_signs_its_config_hash() -> None:
    key = SigningKey.generate()
    signed = SignedTrainingJob.sign(_job(), key)
    altered = SignedTrainingJob(_job(TrainingConfig(feature_clip=0.0)), signed.signature)
    with pytest.raises(InvalidSignatureError):
        altered.verify(key.verify_key)
    for bad in ("", "A" * 64, "0" * 63, 64):
        with pytest.raises(InvalidInputError, match="config_sha256"):
            SignedTrainingJob.checked(_job() | {"config_sha256": bad})


def test_a_version_1_training_job_is_refused_with_what_to_do() -> None:
    old = {k: v for k, v in _job().items() if k != "config_sha256"} | {"v": 1}
    with pytest.raises(InvalidInputError, match=r"version 1 is not supported.*re-sign"):
        SignedTrainingJob.checked(old)
    with pytest.raises(InvalidInputError, match=r"missing \['config_sha256'\]"):
        SignedTrainingJob.checked(old | {"v": 2})


def _transcript(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "job_id": "ab" * 16,
        "requester": "bureau-1",
        "node": "yrd-tax",
        "domain": b"creditshare/training/x",
        "points": 25,
        "transcript_sha256": hashlib.sha256(b"points").digest(),
    }
    return psi_transcript_document(**(fields | changes))


@pytest.mark.parametrize(
    "change",
    [
        {"job_id": "cd" * 16},
        {"requester": "bureau-2"},
        {"node": "yrd-registry"},
        {"domain": b"creditshare/training/y"},
        {"points": 26},
        {"transcript_sha256": hashlib.sha256(b"other points").digest()},
    ],
)
def test_a_psi_transcript_signature_covers_every_field(change: dict[str, Any]) -> None:
    key = SigningKey.generate()
    signed = SignedPsiTranscript.sign(_transcript(), key)
    signed.verify(key.verify_key)
    with pytest.raises(InvalidSignatureError):
        SignedPsiTranscript(_transcript(**change), signed.signature).verify(key.verify_key)
    # Nor is it any other statement's signature (its own domain prefix).
    with pytest.raises(InvalidSignatureError):
        SignedTrainingJob(signed.document, signed.signature).verify(key.verify_key)


def test_a_psi_transcript_is_bounded_as_a_run_is() -> None:
    _transcript(points=MAX_PSI_ITEMS)
    for points in (MAX_PSI_ITEMS + 1, -1, True):
        with pytest.raises(InvalidInputError, match="points"):
            _transcript(points=points)
