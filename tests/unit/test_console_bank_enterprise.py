"""The bank's and enterprise's pages without a browser: what the shared federation of
the browser tests cannot show (a node that failed, a score the model could not give),
and where each kind of refusal lands on a form."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from creditshare.client import Alert, AlertInbox, CreditProfile, Indicator, WitnessPolicy
from creditshare.console import ConsoleSettings, _bank, _profile_view, create_console_app
from creditshare.console._profile_view import check_uscc, errors_for, profile_view
from creditshare.crypto import SigningKey
from creditshare.departments import PRESENCE_INDICATOR
from creditshare.errors import ProblemError, ScoreUnavailableError
from creditshare.identity import make_uscc
from creditshare.ledger import WitnessKey
from creditshare.monitoring import Severity, Signal

USCC = str(make_uscc("9", "1", "310000", "MA1K4L7X"))
LOG_KEY = SigningKey.generate().verify_key.to_text()
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

    def held_consents(self, limit: int = 100, before: str | None = None) -> list[dict[str, Any]]:
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
        log_key=LOG_KEY,
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


# alerts: gaps shown, the inbox kept in work_dir, memory capped ------------------------------


def _alert(seq: int) -> Alert:
    return Alert(
        id=f"ev-{seq}",
        seq=seq,
        signal=Signal.COURT_JUDGMENT,
        severity=Severity.HIGH,
        observed_at=date(2026, 11, 30),
        snapshot=1,
        indicator="judgments",
        before="0",
        after="1",
        subscription_id="sub-1",
        uscc=USCC,
        node="yrd-court",
        chain="yrd",
        department="court",
        cycle=1,
        cursor=str(seq),
        stored_at="",
    )


class _FakeAlerts:
    """A coordinator that hands out the seqs it is told to (withholding the rest)."""

    identity = SimpleNamespace(participant_id="bank-1")

    def __init__(self, seqs: list[int]) -> None:
        self.seqs = seqs
        self.cursors: list[str | None] = []

    def subscriptions(self) -> list[dict[str, Any]]:
        return []

    def alerts(self, inbox: AlertInbox) -> Iterator[Alert]:
        self.cursors.append(inbox.cursor)
        if inbox.cursor is None:
            inbox.from_start = True
        for seq in self.seqs:
            alert = _alert(seq)
            if inbox.accept(alert):
                inbox.advance(alert.cursor)
                yield alert
        inbox.save()
        self.seqs = []

    def close(self) -> None:
        pass


def _alerts_page(tmp_path: Path, sdk: _FakeAlerts) -> str:
    settings = ConsoleSettings(
        role="bank",
        coordinator_url="http://127.0.0.1:1",
        api_key="k",
        identity=tmp_path,
        key_file=tmp_path / "key.json",
        alert_key_file=tmp_path / "alert.key",
        work_dir=tmp_path / "console",
        language="en",
    )
    app = create_console_app(settings, client=sdk)  # type: ignore[arg-type]
    with TestClient(app, base_url="http://console") as client:
        sessions = app.state.console.sessions
        client.get(f"/login?token={sessions.login_token}", follow_redirects=False)
        text: str = client.get("/bank/alerts").text
        return text


def test_withheld_alerts_are_shown_as_gaps_and_a_restart_resumes_from_the_inbox_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bank, "ALERTS_KEPT", 2)
    first = _FakeAlerts([1, 4, 5])  # 2 and 3 never came
    text = _alerts_page(tmp_path, first)
    assert first.cursors == [None]
    assert 'id="alert-gaps"' in text
    assert "Subscription sub-1 on node yrd-court: events 2–3 missing" in text
    # Only the newest ALERTS_KEPT are kept: 5 and 4, not 1.
    assert text.count("<tr><td>2026-11-30</td>") == 2
    # A restarted console reads on from the cursor it saved, and still knows the gap.
    again = _FakeAlerts([6])
    text = _alerts_page(tmp_path, again)
    assert again.cursors == ["5"]
    assert "events 2–3 missing" in text
    assert (tmp_path / "console" / _bank.INBOX_FILE).is_file()


def test_no_gaps_no_gap_notice(tmp_path: Path) -> None:
    text = _alerts_page(tmp_path, _FakeAlerts([1, 2]))
    assert 'id="alert-gaps"' not in text


# the access log: a pinned key always, witnesses when configured, and the page says which ---


def _witnesses(tmp_path: Path, count: int) -> Path:
    keys = [
        WitnessKey.from_public_key(f"yrd-node-{i}", Ed25519PrivateKey.generate().public_key())
        for i in range(count)
    ]
    path = tmp_path / "witnesses.txt"
    path.write_text("# yrd\n" + "".join(k.vkey() + "\n" for k in keys), encoding="utf-8")
    return path


def _enterprise_settings(tmp_path: Path, **more: Any) -> ConsoleSettings:
    base: dict[str, Any] = {
        "role": "enterprise",
        "coordinator_url": "http://127.0.0.1:1",
        "api_key": "k",
        "identity": tmp_path,
        "log_key": LOG_KEY,
        "work_dir": tmp_path,
        "language": "en",
    }
    return ConsoleSettings(**{**base, **more})


def test_an_enterprise_console_needs_a_pinned_log_key_and_sound_witness_settings(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="needs log_key"):
        _enterprise_settings(tmp_path, log_key=None)
    with pytest.raises(ValueError, match="log_key"):
        _enterprise_settings(tmp_path, log_key="not a key")
    with pytest.raises(ValueError, match="quorum needs witnesses_file"):
        _enterprise_settings(tmp_path, quorum=2)
    with pytest.raises(ValueError, match="witnesses_file"):
        _enterprise_settings(tmp_path, witnesses_file=tmp_path / "missing.txt")
    witnesses = _witnesses(tmp_path, 3)
    with pytest.raises(ValueError, match=r"quorum must be within 1\.\.3"):
        _enterprise_settings(tmp_path, witnesses_file=witnesses, quorum=4)
    every = _enterprise_settings(tmp_path, witnesses_file=witnesses).witness_policy()
    assert every is not None and every.quorum == 3 and len(every.witnesses) == 3
    two = _enterprise_settings(tmp_path, witnesses_file=witnesses, quorum=2).witness_policy()
    assert two is not None and two.quorum == 2
    assert _enterprise_settings(tmp_path).witness_policy() is None


class _FakeLog:
    """The enterprise's access log call, recording the key and policy it was asked with."""

    identity = SimpleNamespace(participant_id="ent-1")

    def __init__(self) -> None:
        self.asked: list[tuple[str, Any]] = []

    def verified_enterprise_queries(
        self, uscc: str, log_key: Any, policy: WitnessPolicy | None = None
    ) -> list[Any]:
        self.asked.append((log_key.to_text(), policy))
        return []

    def close(self) -> None:
        pass


def _log_page(settings: ConsoleSettings, fake: _FakeLog) -> str:
    app = create_console_app(settings, client=fake)  # type: ignore[arg-type]
    app.state.console.extras["enterprise_uscc"] = USCC
    with TestClient(app, base_url="http://console") as client:
        sessions = app.state.console.sessions
        client.get(f"/login?token={sessions.login_token}", follow_redirects=False)
        text: str = client.get("/enterprise/log").text
        return text


def test_the_log_is_checked_with_the_pinned_key_and_says_whether_it_is_witnessed(
    tmp_path: Path,
) -> None:
    fake = _FakeLog()
    text = _log_page(_enterprise_settings(tmp_path), fake)
    assert fake.asked == [(LOG_KEY, None)]
    assert 'data-witnessed="no"' in text and "NOT witnessed" in text
    witnessed = _enterprise_settings(tmp_path, witnesses_file=_witnesses(tmp_path, 3), quorum=2)
    fake = _FakeLog()
    text = _log_page(witnessed, fake)
    ((key, policy),) = fake.asked
    assert key == LOG_KEY and policy is not None and policy.quorum == 2
    assert 'data-witnessed="yes"' in text and "at least 2 of the 3 witnesses" in text


# consents a page at a time ------------------------------------------------------------------


class _FakeConsents:
    """``held_consents`` over consents c9..c1 (newest first), paged as the coordinator does."""

    identity = SimpleNamespace(participant_id="bank-1")

    def __init__(self) -> None:
        self.asked: list[tuple[int, str | None]] = []

    def held_consents(self, limit: int = 100, before: str | None = None) -> list[dict[str, Any]]:
        self.asked.append((limit, before))
        ids = [f"c{i}" for i in range(9, 0, -1)]
        if before is not None:
            ids = ids[ids.index(before) + 1 :]
        document = {"chains": ["yrd"], "valid_until": "2999-01-01T00:00:00Z"}
        return [
            {
                "consent_id": i,
                "uscc": USCC,
                "grantee": "bank-1",
                "purpose": "pre_loan_review",
                "uses": 0,
                "max_uses": None,
                "revoked": False,
                "document": document,
            }
            for i in ids[:limit]
        ]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("role", ["bank", "enterprise"])
def test_consents_come_a_page_at_a_time_with_a_link_to_the_older_ones(
    role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_profile_view, "CONSENTS_PAGE", 4)
    fake = _FakeConsents()
    extra: dict[str, Any] = {"key_file": tmp_path / "k.json"} if role == "bank" else {}
    if role == "enterprise":
        extra["log_key"] = LOG_KEY
    settings = ConsoleSettings(
        role=role,
        coordinator_url="http://127.0.0.1:1",
        api_key="k",
        identity=tmp_path,
        work_dir=tmp_path,
        language="en",
        **extra,
    )
    app = create_console_app(settings, client=fake)  # type: ignore[arg-type]
    app.state.console.extras["enterprise_uscc"] = USCC

    def shown(text: str) -> list[str]:
        return re.findall(r'<tr data-consent="(c\d)"', text)

    with TestClient(app, base_url="http://console") as client:
        sessions = app.state.console.sessions
        client.get(f"/login?token={sessions.login_token}", follow_redirects=False)
        first = client.get(f"/{role}/consents").text
        assert shown(first) == ["c9", "c8", "c7", "c6"]
        assert f'href="/{role}/consents?before=c6" id="consents-more"' in first
        assert 'id="consents-first"' not in first
        second = client.get(f"/{role}/consents?before=c6").text
        assert shown(second) == ["c5", "c4", "c3", "c2"]
        assert f'href="/{role}/consents?before=c2"' in second and 'id="consents-first"' in second
        last = client.get(f"/{role}/consents?before=c2").text
        assert shown(last) == ["c1"]
        assert 'id="consents-more"' not in last  # nothing older: no dead-end link
    assert fake.asked == [(5, None), (5, "c6"), (5, "c2")]


def test_a_held_consent_that_cannot_be_used_is_not_shown_as_active() -> None:
    """Revoked, expired and used-up consents each say so (a query would be refused)."""
    from creditshare.console._bank import _consent_state

    later = "2999-01-01T00:00:00Z"
    assert _consent_state({"uses": 1, "max_uses": 3, "document": {"valid_until": later}}) == (
        "active"
    )
    assert _consent_state({"revoked": True, "document": {"valid_until": later}}) == "revoked"
    assert _consent_state({"document": {"valid_until": "2000-01-01T00:00:00Z"}}) == "expired"
    assert _consent_state({"uses": 3, "max_uses": 3, "document": {"valid_until": later}}) == (
        "used_up"
    )


def test_forms_offer_only_the_chains_that_have_nodes() -> None:
    from creditshare.console._profile_view import chain_options
    from creditshare.errors import TransportError

    class OneChain:
        def nodes(self) -> list[dict[str, str]]:
            return [{"id": "yrd-tax", "chain": "yrd"}, {"id": "yrd-court", "chain": "yrd"}]

    class Down:
        def nodes(self) -> list[dict[str, str]]:
            raise TransportError("cannot reach the coordinator")

    assert [value for value, _ in chain_options(OneChain())] == ["yrd"]
    assert [value for value, _ in chain_options(Down())] == ["yrd", "prd", "bth"]
    assert len(chain_options()) == 3
