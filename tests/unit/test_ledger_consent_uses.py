"""``verify_log`` counts each consent's uses from the ledger itself and names any consent
used more often than the limit its enterprise signed, whoever did the counting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from creditshare.consent import ConsentGrant, Purpose
from creditshare.crypto import SigningKey
from creditshare.ledger import Ledger, LogSigner, MemoryLedgerStorage, QueryRecord, verify_log

USCC = "91350100M000100Y43"


def _record(consent: dict[str, object], consent_id: str, kind: str = "query") -> QueryRecord:
    return QueryRecord(
        kind=kind,  # type: ignore[arg-type]
        query_id="q",
        time=datetime.now(UTC),
        uscc=USCC,
        requester="bank-1",
        requester_role="bank",
        purpose="pre_loan_review",
        consent_id=consent_id,
        model_id="m",
        key_fingerprint="k",
        chains=("yrd",),
        indicators=("*",),
        reason="refused" if kind == "refusal" else "",
        consent=consent if kind == "query" else None,
    )


def test_a_consent_used_beyond_its_signed_limit_is_reported() -> None:
    now = datetime.now(UTC)
    grant = ConsentGrant.create(
        USCC, "bank-1", Purpose.PRE_LOAN_REVIEW, now, now + timedelta(days=1), max_uses=2
    )
    signed = grant.sign(SigningKey.generate()).to_json()
    signer = LogSigner.generate()
    ledger = Ledger(MemoryLedgerStorage(), signer, lambda: datetime.now(UTC))
    for _ in range(2):
        ledger.append(_record(signed, grant.consent_id).to_bytes(), USCC)
    ledger.append(_record(signed, grant.consent_id, kind="refusal").to_bytes(), USCC)
    assert verify_log(ledger.storage, signer.public_key).ok  # refusals are not uses
    ledger.append(_record(signed, grant.consent_id).to_bytes(), USCC)
    problems = verify_log(ledger.storage, signer.public_key).problems
    assert problems == (
        f"consent {grant.consent_id}: used 3 times, its limit is 2 (entries beyond it: 3)",
    )


def test_a_consent_without_a_limit_is_never_over_it() -> None:
    now = datetime.now(UTC)
    grant = ConsentGrant.create(USCC, "bank-1", Purpose.PRE_LOAN_REVIEW, now, now + timedelta(1))
    signed = grant.sign(SigningKey.generate()).to_json()
    signer = LogSigner.generate()
    ledger = Ledger(MemoryLedgerStorage(), signer, lambda: datetime.now(UTC))
    for _ in range(5):
        ledger.append(_record(signed, grant.consent_id).to_bytes(), USCC)
    assert verify_log(ledger.storage, signer.public_key).ok


def test_the_largest_consent_scope_makes_a_record_within_the_bound() -> None:
    """32 indicator names of 48 characters (the most a consent may name, whatever the
    schemas publish), the longest ids, the signed request and consent verbatim: the query's
    ledger record still fits MAX_RECORD_BYTES, which nodes enforce on every receipt."""
    from creditshare.consent import MAX_INDICATOR_NAME, MAX_INDICATORS
    from creditshare.ledger import MAX_RECORD_BYTES
    from creditshare.signed import SignedQuery, query_document

    names = tuple(f"{k:02d}" + "i" * (MAX_INDICATOR_NAME - 2) for k in range(MAX_INDICATORS))
    now = datetime.now(UTC)
    requester = "b" * 64
    grant = ConsentGrant.create(
        USCC, requester, Purpose.PRE_LOAN_REVIEW, now, now + timedelta(days=1), indicators=names
    )
    consent = grant.sign(SigningKey.generate()).to_json()
    document = query_document(
        query_id="f" * 32,
        requester=requester,
        uscc=USCC,
        purpose=Purpose.PRE_LOAN_REVIEW.value,
        consent_id=grant.consent_id,
        chains=("bth", "prd", "yrd"),
        model_id="m" * 64,
        key_fingerprint="a" * 64,
        time=now,
    )
    request = SignedQuery.sign(document, SigningKey.generate()).to_json()
    record = QueryRecord(
        kind="query",
        query_id="f" * 32,
        time=now,
        uscc=USCC,
        requester=requester,
        requester_role="bureau",
        purpose=Purpose.PRE_LOAN_REVIEW.value,
        consent_id=grant.consent_id,
        model_id="m" * 64,
        key_fingerprint="a" * 64,
        chains=("bth", "prd", "yrd"),
        indicators=tuple(sorted(names)),
        request=request,
        consent=consent,
    )
    assert len(record.to_bytes()) <= MAX_RECORD_BYTES
