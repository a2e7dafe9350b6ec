"""The regulator's statistics page without a browser: the form offers the department's
catalogue, a query's figures are shown as value ± bound with error bars, suppressed
cells carry no number, every bad field is refused next to itself before anything is
sent, and a budget refusal lands on ε."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from creditshare.console import ConsoleSettings, create_console_app
from creditshare.console._regulator import budget_rows, parse_dates, result_tables
from creditshare.departments import get_department
from creditshare.errors import InvalidInputError, ProblemError
from creditshare.statistics import Catalogue, CohortQuery, CohortResult, decode

CSRF_HEADER = "X-CSRF-Token"


#: The tax department's catalogue, as its nodes publish it.
CATALOGUE = Catalogue.of(get_department("tax"))
GRADES = CATALOGUE.dimension("tax_credit_grade").levels


def _query(measures: tuple[str, ...], group_by: tuple[str, ...] = ("region",)) -> CohortQuery:
    return CohortQuery(
        department="tax",
        chains=("bth", "prd", "yrd"),
        group_by=group_by,
        measures=measures,
        dates=("2026-11-30",),
        epsilon=1.0,
        min_cell=10,
        key_fingerprint="f" * 64,
        catalogue_digest=CATALOGUE.digest,
        request_id="a" * 32,
        regulator="pbc-branch",
        time=datetime(2026, 12, 1, tzinfo=UTC),
    )


def _result(
    measures: tuple[str, ...] = (
        "count",
        "mean:annual_tax_paid",
        "distribution:tax_credit_grade",
    ),
) -> CohortResult:
    """Decoded figures by region from three nodes: Shanghai (31) 412 enterprises with a
    mean of 123 units and grades A 200, B 150, M 62; ``other`` 3 at the one node of
    three that released it (suppressed); every other region 100."""
    query = _query(measures)
    values: list[int] = []
    for region in CATALOGUE.dimension("region").levels:
        count, withheld = {"31": (412, 0), "other": (3, 2)}.get(region, (100, 0))
        grades = [200, 150, 62, 0, 0] if region == "31" else [count, 0, 0, 0, 0]
        values += [count, withheld]
        values += [count * 123] if "mean:annual_tax_paid" in measures else []
        if "distribution:tax_credit_grade" in measures:
            # Each level: its noisy count and the nodes that withheld it (at least the
            # cell's: a withheld cell withholds its levels).
            values += [v for grade in grades for v in (grade, withheld)]
    return decode(values, query, CATALOGUE, nodes=3)


class _FakeRegulator:
    """The SDK calls the statistics page makes, recording the query it was asked."""

    identity = SimpleNamespace(participant_id="pbc-branch")

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer if answer is not None else _result()
        self.asked: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def nodes(self) -> list[dict[str, Any]]:
        return [
            {"id": "yrd-tax", "chain": "yrd", "department": "tax"},
            {"id": "prd-market", "chain": "prd", "department": "market"},
        ]

    def statistics_catalogue(self, department: str) -> Any:
        if department != "tax":
            raise ProblemError(404, "Unknown department", f"no node of {department}", {})
        return CATALOGUE

    def privacy_budget(self) -> dict[str, Any]:
        return {
            "regulator": "pbc-branch",
            "period": "month",
            "periods": [{"period": "2026-12", "queries": 3, "epsilon": 2.5, "refused": 0}],
        }

    def run_cohort_query(self, *args: Any, **kwargs: Any) -> Any:
        self.asked.append((args, kwargs))
        if isinstance(self.answer, Exception):
            raise self.answer
        outcome = SimpleNamespace(node_id="bth-tax", chain="bth", status="failed", reason="gone")
        ok = SimpleNamespace(node_id="yrd-tax", chain="yrd", status="ok", reason="")
        return SimpleNamespace(
            result=self.answer, nodes=(ok, outcome), query_id="a" * 32, ledger_index=17
        )

    def close(self) -> None:
        pass


def _app(tmp_path: Path, sdk: _FakeRegulator, language: Literal["zh", "en"] = "en") -> Any:
    settings = ConsoleSettings(
        role="regulator",
        coordinator_url="http://127.0.0.1:1",
        api_key="k",
        identity=tmp_path,
        key_file=tmp_path / "key.json",
        work_dir=tmp_path,
        language=language,
    )
    return create_console_app(settings, client=sdk)  # type: ignore[arg-type]


def _session(app: Any, client: TestClient) -> dict[str, str]:
    sessions = app.state.console.sessions
    client.get(f"/login?token={sessions.login_token}", follow_redirects=False)
    csrf = sessions.csrf_token(client.cookies.get(app.state.console.cookie))
    return {CSRF_HEADER: csrf, "Origin": "http://console"}


def _post(tmp_path: Path, sdk: _FakeRegulator, form: dict[str, Any]) -> tuple[int, str]:
    app = _app(tmp_path, sdk)
    with TestClient(app, base_url="http://console") as client:
        headers = _session(app, client)
        response = client.post("/regulator/statistics", data=form, headers=headers)
    return response.status_code, response.text


FORM = {
    "department": "tax",
    "group_by": ["region"],
    "measures": ["count", "mean:annual_tax_paid", "distribution:tax_credit_grade"],
    "dates": "2026-11-30",
    "epsilon": "1",
    "min_cell": "10",
}


def test_a_regulator_console_needs_its_signing_identity_and_paillier_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="a regulator console needs identity, key_file"):
        ConsoleSettings(role="regulator", coordinator_url="http://x", api_key="k")


def test_the_form_offers_the_departments_catalogue_and_shows_the_budget_in_chinese(
    tmp_path: Path,
) -> None:
    sdk = _FakeRegulator()
    app = _app(tmp_path, sdk, language="zh")
    with TestClient(app, base_url="http://console") as client:
        _session(app, client)
        assert client.get("/", follow_redirects=False).headers["location"] == (
            "/regulator/statistics"
        )
        text = client.get("/regulator/statistics").text
        other = client.get("/regulator/statistics?department=market")
    assert "群体统计" in text and "监管机构" in text
    for dimension in CATALOGUE.dimensions:  # chain, region and the department's own
        assert f'<option value="{dimension.name}"' in text
        assert f'<option value="distribution:{dimension.name}"' in text
    for column in CATALOGUE.sums:
        assert f'<option value="sum:{column.column}"' in text
        assert f'<option value="mean:{column.column}"' in text
    assert '<option value="count" selected' in text
    assert '<option value="market"' in text  # departments with nodes are offered
    row = text.split('data-period="2026-12"')[1].split("</tr>")[0]
    assert ">2.5<" in row and ">10<" in row and ">7.5<" in row  # spent, allowance, remaining
    # A department whose catalogue cannot be read says why and cannot be queried.
    assert "no node of market" in other.text and 'id="catalogue-problem"' in other.text
    assert "disabled" in other.text.split('id="run-statistics"')[1].split(">")[0]


def test_figures_are_shown_with_their_bounds_and_error_bars_and_suppressed_cells_carry_none(
    tmp_path: Path,
) -> None:
    sdk = _FakeRegulator()
    status, text = _post(tmp_path, sdk, FORM | {"dates": "2026-12-31, 2026-11-30 2026-11-30"})
    assert status == 200, text
    ((args, kwargs),) = sdk.asked
    assert args == ("tax",)
    assert kwargs["group_by"] == ["region"]
    assert kwargs["measures"] == FORM["measures"]
    assert kwargs["dates"] == ["2026-11-30", "2026-12-31"]  # sorted, distinct
    assert kwargs["epsilon"] == 1.0 and kwargs["min_cell"] == 10 and kwargs["chains"] is None
    count = text.split('data-measure="count"')[1].split("</table>")[0]
    shanghai = next(c for c in sdk.answer.cells if c.group["region"] == "31")
    shown = count.split('data-group="31"')[1].split("</tr>")[0]
    assert ">412<" in shown and 'class="errorbar"' in shown
    assert f"± {round(shanghai.count.bound, 2):,.2f}".rstrip("0").rstrip(".") in shown
    hidden = count.split('data-group="other"')[1].split("</tr>")[0]
    assert 'data-suppressed="true"' in hidden and "suppressed" in hidden
    assert "errorbar" not in hidden and ">3<" not in hidden  # no number of a suppressed cell
    assert ">2<" in hidden  # two nodes held their part back
    mean = text.split('data-measure="mean:annual_tax_paid"')[1].split("</table>")[0]
    assert ">123,000<" in mean.split('data-group="31"')[1].split("</tr>")[0]
    distribution = text.split('data-measure="distribution:tax_credit_grade"')[1]
    distribution = distribution.split("</table>")[0]
    assert distribution.count("<tr data-date=") == 9 * len(GRADES)  # every region x grade
    grade_b = distribution.split('data-group="31" data-level="B"')[1].split("</tr>")[0]
    assert ">150<" in grade_b
    # Each node's part: the failed one named with its reason.
    nodes = text.split('id="result-nodes"')[1].split("</table>")[0]
    assert 'data-node="bth-tax" data-status="failed"' in nodes and "gone" in nodes
    assert 'id="ledger-index">17<' in text


def test_error_bars_share_one_scale_per_table() -> None:
    count, mean = result_tables(_result(), ["region"], ["count", "mean:annual_tax_paid"])
    regions = [row.group[0] for row in count.rows]
    shanghai = count.rows[regions.index("31")]
    assert shanghai.bar is not None and count.rows[regions.index("other")].bar is None
    # The widest interval is Shanghai's (412 ± bound): its high end ends the bar's scale,
    # which starts at zero.
    assert shanghai.bar.zero == 2.0 and shanghai.bar.high == 158.0
    assert shanghai.bar.low < shanghai.bar.value < shanghai.bar.high
    assert all(r.bar is not None for r in mean.rows if not r.suppressed)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epsilon", "0", "ε must be a number above 0"),
        ("epsilon", "11", "at most 10"),
        ("epsilon", "0.0001", "at most 3 decimals"),
        ("epsilon", "one", "ε must be"),
        ("min_cell", "0", "from 1 to 1000"),
        ("min_cell", "2.5", "whole number"),
        ("dates", "2026-11-31", "2026-11-31 is not a date"),
        ("measures", [], "at least one measure"),
        ("group_by", ["a", "b", "c", "d", "e"], "at most 4 dimensions"),
    ],
)
def test_a_bad_field_is_refused_next_to_itself_and_nothing_is_sent(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    sdk = _FakeRegulator()
    status, text = _post(tmp_path, sdk, FORM | {field: value})
    assert status == 422
    assert sdk.asked == []
    error = text.split(f'id="e-{field}"')[1].split("</p>")[0]
    assert message in error


def test_a_budget_refusal_lands_on_epsilon_and_an_sdk_check_on_its_field(tmp_path: Path) -> None:
    refused = ProblemError(
        403,
        "Privacy budget exhausted",
        "privacy budget for regulator pbc-branch in 2026-12 would be exceeded: spent 9.5 of "
        "10, asked 1 (nodes yrd-tax, prd-tax)",
        {},
    )
    status, text = _post(tmp_path, _FakeRegulator(refused), FORM)
    assert status == 422
    assert "spent 9.5 of 10" in text.split('id="e-epsilon"')[1].split("</p>")[0]
    unknown = InvalidInputError("group_by: unknown dimension 'size_band'; known: chain, region")
    status, text = _post(tmp_path, _FakeRegulator(unknown), FORM)
    assert status == 422
    assert "unknown dimension" in text.split('id="e-group_by"')[1].split("</p>")[0]


def test_a_post_without_the_pages_token_is_refused(tmp_path: Path) -> None:
    sdk = _FakeRegulator()
    app = _app(tmp_path, sdk)
    with TestClient(app, base_url="http://console") as client:
        headers = _session(app, client)
        forged = client.post(
            "/regulator/statistics", data=FORM, headers={"Origin": headers["Origin"]}
        )
        cross = client.post(
            "/regulator/statistics", data=FORM, headers=headers | {"Origin": "http://evil"}
        )
    assert forged.status_code == 403 and cross.status_code == 403 and sdk.asked == []


def test_dates_and_budget_answers_are_read_as_given() -> None:
    assert parse_dates("") == ([], "")
    assert parse_dates("2026-12-31，2026-11-30") == (["2026-11-30", "2026-12-31"], "")
    assert parse_dates("2026-13-01")[1] == "2026-13-01"
    rows = budget_rows({"periods": [{"period": "2026-Q4", "epsilon": 1, "queries": 1}]})
    assert [(r.period, r.spent, r.remaining) for r in rows] == [("2026-Q4", "1", "")]
    rows = budget_rows({"periods": [{"period": "2026-12", "epsilon": 12.5}]}, 10.0)
    assert rows[0].remaining == "0"  # never below nothing


def test_a_decoded_result_is_shown_cell_by_cell_as_the_sdk_returns_it(tmp_path: Path) -> None:
    query = dataclasses.replace(_query(("count", "mean:annual_tax_paid")), dates=())
    regions = CATALOGUE.dimension("region").levels
    # Per cell: the noisy count, the nodes that withheld it, the noisy sum in units.
    values: list[int] = []
    for region in regions:
        count = {"11": 400, "other": 3}.get(region, 100)
        values += [count, 0, count * 50]  # a mean of 50 units (50,000 CNY)
    result = decode(values, query, CATALOGUE, nodes=1)
    status, text = _post(
        tmp_path, _FakeRegulator(result), FORM | {"measures": list(query.measures)}
    )
    assert status == 200, text
    counts = text.split('data-measure="count"')[1].split("</table>")[0]
    assert counts.count("<tr data-date=") == len(regions)  # every cell, in the layout's order
    beijing = counts.split('data-group="11"')[1].split("</tr>")[0]
    assert ">400<" in beijing and 'class="errorbar"' in beijing
    assert 'data-suppressed="true"' in counts.split('data-group="other"')[1].split("</tr>")[0]
    mean = text.split('data-measure="mean:annual_tax_paid"')[1].split("</table>")[0]
    assert ">50,000<" in mean.split('data-group="11"')[1].split("</tr>")[0]
    assert ">latest<" in counts  # no dates: each node's latest snapshot
