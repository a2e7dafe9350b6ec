"""The bank's and enterprise's pages without a browser: what the shared federation of
the browser tests cannot show (a node that failed, a score the model could not give),
and where each kind of refusal lands on a form."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi.testclient import TestClient

from creditshare.client import CreditProfile, Indicator
from creditshare.console import ConsoleSettings, create_console_app
from creditshare.console._profile_view import check_uscc, errors_for, profile_view
from creditshare.departments import PRESENCE_INDICATOR
from creditshare.errors import ProblemError, ScoreUnavailableError
from creditshare.identity import make_uscc

USCC = str(make_uscc("9", "1", "310000", "MA1K4L7X"))
CSRF_HEADER = "X-CSRF-Token"


def _indicator(node: str, name: str, value: float, label: str | None) -> Indicator:
    chain, department = node.split("-")
    return Indicator(node, chain, department, name, f"{name} described", value, label)


def _profile() -> CreditProfile:
    return CreditProfile(
        query_id="q1",
        uscc=USCC,
        model_id="sme-scorecard-v1",
        linear_score=-0.5,
        probability_of_default=0.3775,
        score=612,
        nodes_with_records=["yrd-tax", "prd-market"],
        indicators=[
            _indicator("yrd-tax", PRESENCE_INDICATOR, 1, None),
            _indicator("yrd-tax", "tax_credit_grade", 2, "M"),
            _indicator("prd-market", "years_operating_band", 3, "over 10"),
            _indicator("yrd-tax", "tax_paid_band", 0.5, None),
        ],
        answered=["yrd-tax", "prd-market"],
        failed=[{"node": "bth-court", "chain": "bth", "reason": "deadline exceeded"}],
        raw={},
    )


def test_a_profile_is_grouped_by_chain_and_department_with_bands_and_failed_nodes() -> None:
    view = profile_view(_profile())
    assert list(view.groups) == ["prd", "yrd"]
    tax = view.groups["yrd"]["tax"]
    assert [(r.name, r.value, r.band) for r in tax] == [
        ("tax_credit_grade", "2", "M"),
        ("tax_paid_band", "0.5", ""),
    ]  # the presence flag is coverage, not an indicator
    assert view.groups["prd"]["market"][0].band == "over 10"
    assert view.failed == [("bth-court", "deadline exceeded")]
    assert view.probability_of_default == "37.75%"


def test_refusals_without_a_field_land_where_the_form_says() -> None:
    refused = ProblemError(403, "Consent refused", "no consent with id 'x'", {"recorded": True})
    placements = [(lambda e: bool(e.body.get("recorded")), "consent_id")]
    errors = errors_for(refused, ["uscc", "consent_id"], placements)
    assert errors.fields == {"consent_id": "no consent with id 'x'"} and not errors.form
    named = ProblemError(422, "Invalid USCC", "position 18", {"field": "uscc"})
    assert errors_for(named, ["uscc", "consent_id"], placements).fields == {"uscc": "position 18"}
    other = ProblemError(503, "No node answered", "every node failed", {})
    assert errors_for(other, ["uscc", "consent_id"], placements).form == ["every node failed"]


def test_the_uscc_check_names_the_position_and_waits_for_input() -> None:
    assert check_uscc("") == (None, "")
    wrong = USCC[:17] + ("0" if USCC[17] != "0" else "1")
    code, problem = check_uscc(wrong)
    assert code is None and "position 18" in problem
    code, problem = check_uscc(USCC)
    assert code is not None and problem == ""


class _FakeBank:
    """The SDK calls the bank's query page makes, answering as told."""

    identity = SimpleNamespace(participant_id="bank-1")

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def models(self) -> list[dict[str, Any]]:
        return [{"id": "sme-scorecard-v1", "description": "published"}]

    def query(self, *args: Any) -> CreditProfile:
        if isinstance(self.answer, Exception):
            raise self.answer
        result: CreditProfile = self.answer
        return result

    def close(self) -> None:
        pass


def _bank_page(tmp_path: Path, answer: Any, form: dict[str, str]) -> tuple[int, str]:
    settings = ConsoleSettings(
        role="bank",
        coordinator_url="http://127.0.0.1:1",
        api_key="k",
        identity=tmp_path,
        key_file=tmp_path / "key.json",
        work_dir=tmp_path,
        language="en",
    )
    app = create_console_app(settings, client=_FakeBank(answer))  # type: ignore[arg-type]
    with TestClient(app, base_url="http://console") as client:
        sessions = app.state.console.sessions
        client.get(f"/login?token={sessions.login_token}", follow_redirects=False)
        csrf = sessions.csrf_token(client.cookies.get(app.state.console.cookie))
        response = client.post(
            "/bank/query",
            data=form,
            headers={CSRF_HEADER: csrf, "Origin": "http://console"},
        )
    return response.status_code, response.text


def test_the_query_page_shows_failed_nodes_with_their_reasons(tmp_path: Path) -> None:
    status, text = _bank_page(tmp_path, _profile(), {"uscc": USCC, "consent_id": "c1"})
    assert status == 200
    assert 'id="profile-score">612<' in text
    assert "bth-court" in text and "deadline exceeded" in text
    assert 'data-chain="yrd" data-department="tax"' in text


def test_a_score_the_model_could_not_give_is_said_under_the_model(tmp_path: Path) -> None:
    missing = ScoreUnavailableError("q1", "bth-court", "node down", [], {})
    status, text = _bank_page(tmp_path, missing, {"uscc": USCC, "consent_id": "c1"})
    assert status == 422
    assert 'id="e-model_id"' in text and "bth-court" in text


def test_a_bad_uscc_is_refused_here_naming_the_position_and_nothing_is_sent(
    tmp_path: Path,
) -> None:
    sent = AssertionError("the query must not be sent")
    wrong = USCC[:17] + ("0" if USCC[17] != "0" else "1")
    status, text = _bank_page(tmp_path, sent, {"uscc": wrong, "consent_id": "c1"})
    assert status == 422
    assert "position 18" in text and 'value="c1"' in text


class _FakeEnterprise:
    """The SDK calls the enterprise's consents and grant pages make."""

    identity = SimpleNamespace(participant_id="ent-1", signing_key=None)

    def __init__(self, refusal: ProblemError) -> None:
        self.refusal = refusal

    def indicators(self) -> list[dict[str, Any]]:
        return [{"name": "tax_credit_grade", "description": "tax credit grade"}]

    def enterprise_consents(self, uscc: str) -> list[dict[str, Any]]:
        document = {
            "chains": ["yrd"],
            "indicators": ["*"],
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2999-01-01T00:00:00Z",
        }
        row = {"consent_id": "c1", "grantee": "bank-1", "purpose": "pre_loan_review"}
        return [row | {"uses": 0, "max_uses": None, "revoked": False, "document": document}]

    def revoke_consent(self, *args: Any) -> dict[str, Any]:
        raise self.refusal

    def grant_consent(self, *args: Any) -> dict[str, Any]:
        raise self.refusal

    def close(self) -> None:
        pass


def _enterprise_post(
    tmp_path: Path, refusal: ProblemError, path: str, form: dict[str, str]
) -> tuple[int, str]:
    from creditshare.crypto import SigningKey

    settings = ConsoleSettings(
        role="enterprise",
        coordinator_url="http://127.0.0.1:1",
        api_key="k",
        identity=tmp_path,
        work_dir=tmp_path,
        language="en",
    )
    fake = _FakeEnterprise(refusal)
    fake.identity = SimpleNamespace(participant_id="ent-1", signing_key=SigningKey.generate())
    app = create_console_app(settings, client=fake)  # type: ignore[arg-type]
    app.state.console.extras["enterprise_uscc"] = USCC
    with TestClient(app, base_url="http://console") as client:
        sessions = app.state.console.sessions
        client.get(f"/login?token={sessions.login_token}", follow_redirects=False)
        csrf = sessions.csrf_token(client.cookies.get(app.state.console.cookie))
        response = client.post(
            path, data=form, headers={CSRF_HEADER: csrf, "Origin": "http://console"}
        )
    return response.status_code, response.text


def test_a_refused_revocation_is_shown_in_its_consents_row(tmp_path: Path) -> None:
    refusal = ProblemError(403, "Forbidden", "only the enterprise itself signs a revocation", {})
    status, text = _enterprise_post(tmp_path, refusal, "/enterprise/consents/c1/revoke", {})
    assert status == 422
    assert 'aria-describedby="e-revoke-c1"' in text
    assert 'id="e-revoke-c1" role="alert">only the enterprise itself signs' in text


def test_a_grant_naming_an_unpublished_indicator_is_refused_under_indicators(
    tmp_path: Path,
) -> None:
    refusal = ProblemError(
        422, "Invalid input", "the consent names indicator(s) 'x' that no node publishes", {}
    )
    form = {"grantee": "bank-1", "days": "30", "indicators": "tax_credit_grade"}
    status, text = _enterprise_post(tmp_path, refusal, "/enterprise/grant", form)
    assert status == 422
    assert 'id="e-indicators"' in text and "no node publishes" in text
    assert 'value="bank-1"' in text  # nothing the user typed is lost
