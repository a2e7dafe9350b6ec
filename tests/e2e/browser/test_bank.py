"""The bank's console in a real browser against the session's real federation: a query
through the page shows exactly the profile the SDK decrypts, the USCC is checked as it
is typed, a refused consent is shown under its field, and the consents and monitoring
pages list what the coordinator holds for this bank."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from creditshare.client import (
    CreditProfile,
    CreditShareClient,
    Identity,
    load_alert_key,
    load_key,
    load_or_create_alert_key,
)
from creditshare.consent import Purpose
from creditshare.demo import read_enterprises
from creditshare.departments import PRESENCE_INDICATOR
from creditshare.identity import Uscc, check_character

from ..conftest import Trust
from .conftest import Console, Consoles, check_page, open_console, participant_console_settings

pytestmark = pytest.mark.e2e

#: A query decrypts 2048-bit Paillier answers from nine nodes, on two busy cores.
QUERY_TIMEOUT_MS = 180_000


def _bank_console(
    consoles: Consoles, trust: Trust, tmp_path: Path
) -> tuple[str, dict[str, Any], Console]:
    bank_id = f"console-bank-{secrets.token_hex(4)}"
    settings = participant_console_settings(trust, tmp_path, bank_id, "bank", "Console Bank")
    settings["alert_key_file"] = str(tmp_path / bank_id / "alert.key")
    load_or_create_alert_key(Path(settings["alert_key_file"]))
    return bank_id, settings, consoles.start("bank", **settings)


def _sdk(trust: Trust, settings: dict[str, Any]) -> CreditShareClient:
    """The SDK with the very key files the bank's console was started with."""
    return CreditShareClient(
        trust.url,
        api_key=settings["api_key"],
        private_key=load_key(Path(settings["key_file"])),
        identity=Identity.load(Path(settings["identity"])),
        alert_key=load_alert_key(Path(settings["alert_key_file"])),
    )


def _cross_chain_uscc(data_dir: Path) -> str:
    """An enterprise with records on two chains (its profile has two chains' groups)."""
    rows = read_enterprises(data_dir)
    return next(r["uscc"] for r in rows if ";" in r["record_chains"])


def _shown_indicators(page: Any) -> dict[tuple[str, str, str, str], tuple[str, str]]:
    """(chain, department, indicator, node) -> (value, band) of every row the page shows."""
    rows = page.locator("table.indicators tbody tr").evaluate_all(
        """rows => rows.map(r => {
            const table = r.closest('table');
            const cells = r.querySelectorAll('td');
            return [table.dataset.chain, table.dataset.department, r.dataset.indicator,
                    r.dataset.node, cells[2].textContent.trim(), cells[3].textContent.trim()];
        })"""
    )
    return {(c, d, n, node): (value, band) for c, d, n, node, value, band in rows}


def _expected(profile: CreditProfile) -> dict[tuple[str, str, str, str], tuple[float, str]]:
    return {
        (i.chain, i.department, i.name, i.node): (i.value, i.label or "—")
        for i in profile.indicators
        if i.name != PRESENCE_INDICATOR
    }


def test_a_query_through_the_page_shows_the_profile_the_sdk_decrypts(
    consoles: Consoles, trust: Trust, browser: Any, data_dir: Path, tmp_path: Path
) -> None:
    bank_id, settings, console = _bank_console(consoles, trust, tmp_path)
    uscc = _cross_chain_uscc(data_dir)
    consent = trust.consent(uscc, grantee=bank_id, max_uses=2)
    wrong = uscc[:17] + next(c for c in "0123456789ABCDEFGHJKLMNPQRTUWXY" if c != uscc[17])
    assert check_character(uscc[:17]) != wrong[17]
    with open_console(browser, console) as page:
        page.goto(console.url + "/")  # the bank's landing page is its query form
        assert page.url.endswith("/bank/query")
        check_page(page, "bank-query")
        # Checked as typed: the wrong check character is named before anything is sent.
        page.locator("#f-uscc").press_sequentially(wrong)
        status = page.locator("#e-uscc")
        status.filter(has_text="position 18").wait_for()
        page.locator("#f-uscc").fill("")
        page.locator("#f-uscc").press_sequentially(uscc)
        status.filter(has_text=f"home chain {Uscc.parse(uscc).chain.value}").wait_for()
        page.locator("#f-consent_id").fill(consent)
        page.get_by_role("button", name="Query", exact=True).click()
        page.locator("#profile").wait_for(timeout=QUERY_TIMEOUT_MS)
        shown_score = page.locator("#profile-score").inner_text().strip()
        shown_pd = page.locator("#profile-pd").inner_text().strip()
        shown = _shown_indicators(page)
        chains_shown = set(
            page.locator("table.indicators").evaluate_all("ts => ts.map(t => t.dataset.chain)")
        )
        check_page(page, "bank-query-profile")
        # The consent was used once: the consents page says so.
        page.get_by_role("link", name="Consents held").click()
        row = page.locator(f"tr[data-consent='{consent}']")
        row.wait_for()
        assert "1 / 2" in row.inner_text()
        check_page(page, "bank-consents")
        # Its link opens the query form filled in for that enterprise and consent.
        row.get_by_role("link").click()
        page.wait_for_url("**/bank/query?*")
        assert page.locator("#f-consent_id").input_value() == consent
        assert page.locator("#f-uscc").input_value() == uscc

    # The same consent's second use, through the SDK with the console's own key files.
    with _sdk(trust, settings) as sdk:
        profile = sdk.query(uscc, consent)
    assert shown_score == str(profile.score)
    assert shown_pd == f"{profile.probability_of_default:.2%}"
    expected = _expected(profile)
    assert expected, "the enterprise has records: its profile has indicators"
    assert set(shown) == set(expected)
    for key, (value, band) in expected.items():
        assert shown[key][1] == band, key
        assert float(shown[key][0]) == pytest.approx(value, abs=1e-4), key
    assert chains_shown == set(profile.chains_with_records) and len(chains_shown) == 2


def test_c_a_refused_consent_is_shown_under_its_field_and_monitoring_lists_in_chinese(
    consoles: Consoles, trust: Trust, browser: Any, data_dir: Path, tmp_path: Path
) -> None:
    bank_id, settings, console = _bank_console(consoles, trust, tmp_path)
    uscc = read_enterprises(data_dir)[0]["uscc"]
    unknown = secrets.token_hex(16)
    # A subscription the bank made with its own keys (the SDK): the monitoring page lists it.
    watched = trust.consent(uscc, grantee=bank_id, purpose=Purpose.POST_LOAN_MONITORING)
    with _sdk(trust, settings) as sdk:
        subscription = sdk.subscribe(uscc, watched, signals=["court_judgment"])
    try:
        with open_console(browser, console, language="zh") as page:
            page.goto(console.url + "/bank/query")
            page.locator("#f-uscc").fill(uscc)
            page.locator("#f-consent_id").fill(unknown)
            page.locator("#main form button[type=submit]").click()
            error = page.locator("#e-consent_id")
            error.wait_for(timeout=QUERY_TIMEOUT_MS)
            assert unknown in error.inner_text()
            assert page.locator("#f-consent_id").get_attribute("aria-invalid") == "true"
            assert page.locator("#f-consent_id").input_value() == unknown  # nothing lost
            assert page.locator("#f-uscc").input_value() == uscc
            check_page(page, "bank-query-refused-zh")
            page.goto(console.url + "/bank/alerts")
            assert page.locator("h1").inner_text() == "贷后监测"
            row = page.locator(
                f"#subscriptions tr[data-subscription='{subscription['subscription_id']}']"
            )
            assert "court_judgment" in row.inner_text() and uscc in row.inner_text()
            assert page.locator("#alerts-none, #alerts").count() == 1  # opened with its alert key
            check_page(page, "bank-alerts-zh")
            page.goto(console.url + "/bank/consents")
            held = page.locator(f"tr[data-consent='{watched}']")
            assert "贷后监测" in held.inner_text() and uscc in held.inner_text()
            check_page(page, "bank-consents-zh")
    finally:  # the federation is shared: leave no subscription running
        with _sdk(trust, settings) as sdk:
            sdk.unsubscribe(subscription["subscription_id"])
