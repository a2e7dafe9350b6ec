"""Catalogue and query validation: every refusal names the field and what is wrong."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from creditshare.departments import get_department
from creditshare.errors import InvalidInputError
from creditshare.signed import SignedCohortQuery
from creditshare.statistics import Catalogue, CohortQuery, format_epsilon

TAX = get_department("tax")
CATALOGUE = Catalogue.of(TAX)


def _document(**changes: Any) -> dict[str, Any]:
    doc = CohortQuery(
        department="tax",
        chains=("bth", "yrd"),
        group_by=("region",),
        measures=("count", "sum:annual_tax_paid"),
        dates=("2026-10-31", "2026-11-30"),
        epsilon=0.5,
        min_cell=10,
        key_fingerprint="ab" * 16,
        catalogue_digest=CATALOGUE.digest,
        request_id="cd" * 16,
        regulator="pboc",
        time=datetime(2026, 12, 1, tzinfo=UTC),
    ).document()
    return doc | changes


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epsilon": 0.5}, "'epsilon' must be a decimal string"),
        ({"epsilon": "0"}, "'epsilon' must be above 0"),
        ({"epsilon": "10.5"}, "'epsilon' must be above 0 and at most 10"),
        ({"epsilon": "0.1234"}, "'epsilon' must be a decimal string"),
        ({"epsilon": "0.50"}, "'epsilon' must be written without trailing zeros"),
        ({"min_cell": 0}, "'min_cell' must be within 1..1000"),
        ({"min_cell": True}, "'min_cell' must be a whole number"),
        ({"chains": []}, "'chains' must be a sorted, non-empty list"),
        ({"chains": ["yrd", "bth"]}, "'chains' must be a sorted, non-empty list"),
        ({"chains": ["mars"]}, "'chains' must be a list of at most 3 distinct chains"),
        ({"group_by": ["a", "b", "c", "d", "e"]}, "'group_by' must be a list of at most 4"),
        ({"group_by": ["region", "region"]}, "'group_by' must be a list of at most 4 distinct"),
        ({"measures": []}, "'measures' must be a non-empty list"),
        ({"measures": ["median:x"]}, "'measures' must be a list of at most 8 distinct measures"),
        (
            {"measures": ["distribution:region"]},
            "'measures' must be distributions over dimensions not grouped by",
        ),
        ({"dates": ["2026-11-30", "2026-10-31"]}, "'dates' must be sorted"),
        ({"dates": ["2026-02-30"]}, "'dates' must be ISO dates that exist"),
        ({"dates": [f"2026-01-{d:02d}" for d in range(1, 14)]}, "at most 12 distinct ISO dates"),
        ({"dates": ["1999-12-31"]}, "'dates' must be on or after 2000-01-01, not '1999-12-31'"),
        ({"dates": ["2026-12-02"]}, "'dates' must be on or before the query's time (2026-12-01)"),
        ({"dates": ["2026-11-30", "9999-12-31"]}, "on or before the query's time (2026-12-01)"),
        # The bound is the time's own (UTC) day, not the day after.
        (
            {"dates": ["2026-12-01"], "time": "2026-11-30T23:00:00Z"},
            "on or before the query's time (2026-11-30)",
        ),
        ({"catalogue_digest": "AB" * 32}, "'catalogue_digest' must be 64 lowercase hex"),
        ({"request_id": "x"}, "'request_id' must be 32 lowercase hex digits"),
        ({"regulator": "Not An Id"}, "'regulator' must be a participant id"),
        (
            {"dates": ["9999-12-31"], "time": "9999-12-31T12:00:00Z"},
            "'dates' must be on or before 9999-12-30",
        ),
        ({"time": "yesterday"}, "'time' must look like 2026-01-31T12:00:00Z"),
        ({"type": "query"}, "not a version 1 cohort query"),
        ({"extra": 1}, "unexpected ['extra']"),
    ],
)
def test_query_document_refusals_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        CohortQuery.from_document(_document(**changes))
    assert message in str(error.value)


def test_a_signed_document_must_be_canonical() -> None:
    doc = _document()
    doc.pop("time")
    with pytest.raises(InvalidInputError, match=r"missing \['time'\]"):
        SignedCohortQuery.checked(doc)
    with pytest.raises(InvalidInputError, match="cohort query"):
        SignedCohortQuery.from_json({"document": _document(), "signature": ""} | {"x": 1})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"group_by": ["sector"]}, "no dimension 'sector' (dimensions: chain, region, industry"),
        ({"measures": ["sum:industry"]}, "no summable column 'industry'"),
        ({"measures": ["mean:nothing"]}, "no summable column 'nothing'"),
        ({"measures": ["distribution:colour"]}, "no dimension 'colour'"),
        ({"catalogue_digest": "0" * 64}, "signed against another catalogue"),
        ({"department": "market"}, "query is for department market"),
    ],
)
def test_check_against_the_catalogue(changes: dict[str, Any], message: str) -> None:
    query = CohortQuery.from_document(_document(**changes))
    with pytest.raises(InvalidInputError) as error:
        query.check_against(CATALOGUE)
    assert message in str(error.value)


def test_epsilon_text() -> None:
    assert format_epsilon(1.0) == "1"
    assert format_epsilon("0.250") == "0.25"
    assert format_epsilon(10) == "10"
    with pytest.raises(InvalidInputError, match="three decimals"):
        format_epsilon(0.1 + 0.2)  # 0.30000000000000004: not what anyone meant to sign


def _catalogue_doc() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(CATALOGUE.to_bytes())
    return document


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("sums"), "catalogue must be {v, department, dimensions, sums}"),
        (lambda d: d.update(v=2), "not version 1"),
        (lambda d: d["dimensions"].reverse(), "first dimensions are chain and region"),
        (lambda d: d["dimensions"][0].update(levels=["yrd"]), "chain dimension's levels"),
        (lambda d: d["dimensions"][2].update(levels=[]), "needs 1 to 1000 distinct levels"),
        (lambda d: d["dimensions"][2].update(name="Bad Name"), "is not a name"),
        (lambda d: d["sums"][0].update(unit=0), "needs unit > 0"),
        (lambda d: d["sums"][0].update(lower="0"), "sums[0].lower must be a number"),
        (lambda d: d["sums"][0].update(upper=1500), "whole numbers of units"),
        (lambda d: d["sums"].append(d["sums"][0]), "at most 8 distinct columns"),
    ],
)
def test_catalogue_refusals(change: Any, message: str) -> None:
    document = _catalogue_doc()
    change(document)
    with pytest.raises(InvalidInputError) as error:
        Catalogue.from_bytes(json.dumps(document).encode())
    assert message in str(error.value)


def test_catalogue_bytes_that_are_not_one() -> None:
    with pytest.raises(InvalidInputError, match="not JSON"):
        Catalogue.from_bytes(b"\xff")
    with pytest.raises(InvalidInputError, match="over"):
        Catalogue.from_bytes(b" " * 300_000)


def test_a_query_built_in_code_is_held_to_the_same_date_bounds() -> None:
    doc = CohortQuery.from_document(_document())
    with pytest.raises(InvalidInputError, match="'dates' must be on or before the query's time"):
        CohortQuery(**{**_fields(doc), "dates": ("2026-11-30", "9999-12-31")})


def _fields(query: CohortQuery) -> dict[str, Any]:
    return {name: getattr(query, name) for name in CohortQuery.__dataclass_fields__}
