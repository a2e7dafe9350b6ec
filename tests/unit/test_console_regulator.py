"""The regulator's statistics page without a browser: the form offers the department's
catalogue, a query's figures are shown as value ± bound with error bars, suppressed
cells carry no number, every bad field is refused next to itself before anything is
sent, and a budget refusal lands on ε."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from creditshare.console import ConsoleSettings, create_console_app
from creditshare.console._regulator import budget_rows, parse_dates, result_tables
from creditshare.errors import InvalidInputError, ProblemError

CSRF_HEADER = "X-CSRF-Token"


def _figure(value: float, bound: float) -> SimpleNamespace:
    return SimpleNamespace(value=value, bound=bound)


CATALOGUE = SimpleNamespace(
    department="tax",
    dimensions=(
        SimpleNamespace(name="chain", levels=("yrd", "prd", "bth")),
        SimpleNamespace(name="region", levels=("31", "32", "other")),
        SimpleNamespace(name="tax_credit_grade", levels=("A", "B", "M")),
    ),
    sums=(SimpleNamespace(column="annual_tax_paid", lower=0, upper=1_000_000, unit=1000),),
    digest="ab" * 32,
)


def _result() -> SimpleNamespace:
    cells = (
        SimpleNamespace(
            date="2026-11-30",
            group={"region": "31"},
            count=_figure(412.0, 9.5),
            measures={
                "mean:annual_tax_paid": _figure(123.456, 4.25),
                "distribution:tax_credit_grade": {
                    "A": _figure(200.0, 9.5),
                    "B": _figure(150.0, 9.5),
                    "M": _figure(62.0, 9.5),
                },
            },
            withheld_at=0,
            suppressed=False,
        ),
        SimpleNamespace(
            date="2026-11-30",
            group={"region": "other"},
            count=_figure(3.0, 9.5),
            measures={
                "mean:annual_tax_paid": _figure(0.0, 0.0),
                "distribution:tax_credit_grade": {
                    "A": _figure(0.0, 0.0),
                    "B": _figure(0.0, 0.0),
                    "M": _figure(0.0, 0.0),
                },
            },
            withheld_at=2,
            suppressed=True,
        ),
    )
    return SimpleNamespace(cells=cells, query_id="q" * 32, ledger_index=17)


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
        return SimpleNamespace(catalogue=CATALOGUE, digest="ab" * 32, nodes=["yrd-tax"])

    def privacy_budget(self) -> dict[str, Any]:
        return {
            "regulator": "pbc-branch",
            "period": "month",
            "periods": [{"period": "2026-12", "queries": 3, "epsilon": 2.5, "refused": 0}],
        }

    def cohort_statistics(self, *args: Any, **kwargs: Any) -> Any:
        self.asked.append((args, kwargs))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

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
    for option in ("chain", "region", "tax_credit_grade"):
        assert f'<option value="{option}"' in text
    for measure in ("count", "sum:annual_tax_paid", "mean:annual_tax_paid"):
        assert f'<option value="{measure}"' in text
    assert '<option value="distribution:tax_credit_grade"' in text
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
    shown = count.split('data-group="31"')[1].split("</tr>")[0]
    assert ">412<" in shown and "± 9.5" in shown and 'class="errorbar"' in shown
    hidden = count.split('data-group="other"')[1].split("</tr>")[0]
    assert 'data-suppressed="true"' in hidden and "suppressed" in hidden
    assert "errorbar" not in hidden and ">3<" not in hidden  # no number of a suppressed cell
    assert ">2<" in hidden  # two nodes held their part back
    mean = text.split('data-measure="mean:annual_tax_paid"')[1].split("</table>")[0]
    assert "123.46" in mean and "± 4.25" in mean
    distribution = text.split('data-measure="distribution:tax_credit_grade"')[1]
    assert distribution.count('data-level="') == 6  # three levels for each of two cells


def test_error_bars_share_one_scale_per_table() -> None:
    (count, mean) = result_tables(_result(), ["region"], ["count", "mean:annual_tax_paid"])
    bar = count.rows[0].bar
    assert bar is not None and count.rows[1].bar is None
    # The only shown interval spans from zero to 412 + 9.5: its high end is the bar's end.
    assert bar.zero == 2.0 and bar.high == 158.0 and bar.low < bar.value < bar.high
    assert mean.rows[0].bar is not None


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
