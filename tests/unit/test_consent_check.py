"""The consent rules as one pure function: each rule refuses on its own, saying which."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from creditshare.consent import MAX_USES, ConsentGrant, ConsentState, Purpose, check
from creditshare.errors import ConsentRefusedError, InvalidInputError
from creditshare.identity import Chain

USCC = "91100000100003962T"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _grant(**changes: object) -> ConsentGrant:
    grant = ConsentGrant.create(
        USCC,
        "bank-a",
        Purpose.PRE_LOAN_REVIEW,
        NOW - timedelta(days=1),
        NOW + timedelta(days=1),
        chains=(Chain.YRD,),
        max_uses=2,
    )
    return replace(grant, **changes)  # type: ignore[arg-type]


def _check(state: ConsentState, **changes: object) -> ConsentGrant:
    query: dict[str, object] = {
        "requester": "bank-a",
        "uscc": USCC,
        "purpose": Purpose.PRE_LOAN_REVIEW,
        "chains": None,
        "now": NOW,
    }
    return check(state, **(query | changes))  # type: ignore[arg-type]


def test_a_covered_query_passes() -> None:
    grant = _grant()
    assert _check(ConsentState(grant, revoked=False, uses=1)) == grant
    assert _check(ConsentState(grant, revoked=False, uses=0), chains=[Chain.YRD]) == grant


@pytest.mark.parametrize(
    ("state", "query", "reason"),
    [
        (ConsentState(_grant(), False, 0), {"requester": "bank-b"}, "another participant"),
        (ConsentState(_grant(), False, 0), {"uscc": "91110000600037341L"}, "another enterprise"),
        (
            ConsentState(_grant(), False, 0),
            {"purpose": Purpose.MODEL_TRAINING},
            "purpose model_training",
        ),
        (ConsentState(_grant(), True, 0), {}, "revoked"),
        (ConsentState(_grant(), False, 0), {"now": NOW - timedelta(days=2)}, "not valid yet"),
        (ConsentState(_grant(), False, 0), {"now": NOW + timedelta(days=1)}, "expired"),
        (ConsentState(_grant(), False, 0), {"chains": [Chain.YRD, Chain.PRD]}, "prd"),
        (ConsentState(_grant(), False, 2), {}, "use limit is exhausted (2 of 2"),
    ],
)
def test_each_rule_refuses_saying_why(
    state: ConsentState, query: dict[str, object], reason: str
) -> None:
    with pytest.raises(ConsentRefusedError) as refused:
        _check(state, **query)
    assert reason in str(refused.value)


def test_no_use_limit_means_unlimited() -> None:
    state = ConsentState(_grant(max_uses=None), revoked=False, uses=10**9)
    assert _check(state).max_uses is None


@pytest.mark.parametrize("max_uses", [0, -1, MAX_USES + 1, 2**63, True, 1.5])
def test_use_limits_outside_the_column_are_refused(max_uses: object) -> None:
    document = _grant().to_document() | {"max_uses": max_uses}
    with pytest.raises(InvalidInputError, match="max_uses must be an integer from 1 to"):
        ConsentGrant.from_document(document)


def test_times_live_in_canonical() -> None:
    from creditshare import _canonical, consent

    assert consent.format_time is _canonical.format_time
    assert _canonical.parse_time(_canonical.format_time(NOW), "t") == NOW
    with pytest.raises(InvalidInputError, match="valid_from must look like"):
        _canonical.parse_time("yesterday", "valid_from")
