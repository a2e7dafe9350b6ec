"""The enterprise's console in a real browser against the session's real federation:
grant a consent through the form (signed in the console), revoke it through the list,
and see the bank's refused query in the access log with its inclusion verified."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from creditshare.client import CreditShareClient, Identity
from creditshare.demo import read_enterprises
from creditshare.errors import ProblemError
from creditshare.synth import unknown_uscc

from ..conftest import Trust
from .conftest import Console, Consoles, check_page, open_console

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 120_000


def _enterprise_console(
    consoles: Consoles, trust: Trust, data_dir: Path, seed: int, **settings: Any
) -> tuple[str, Console]:
    """A freshly registered enterprise (a code no other test uses) and its console."""
    known = {r["uscc"] for r in read_enterprises(data_dir)}
    uscc = unknown_uscc(seed, known)
    participant = f"console-ent-{secrets.token_hex(4)}"
    folder = trust.layout.identity_dir(participant, "enterprise", uscc)
    identity = Identity.load(folder)
    issued = trust.operator.register_participant(
        participant,
        "enterprise",
        "Console Enterprise",
        uscc=uscc,
        signing_key=identity.signing_key.verify_key,
    )
    with CreditShareClient(trust.url, api_key=issued["api_key"], identity=identity) as client:
        client.upload_credentials()
    console = consoles.start(
        "enterprise",
        coordinator_url=trust.url,
        api_key=issued["api_key"],
        identity=str(folder),
        **settings,
    )
    return uscc, console


def test_b_grant_and_revoke_through_the_pages_then_the_refusal_is_in_the_verified_log(
    consoles: Consoles, trust: Trust, browser: Any, data_dir: Path, tmp_path: Path
) -> None:
    witnesses = trust.layout.witness_keys()
    assert len(witnesses) >= 2
    witnesses_file = tmp_path / "witnesses.txt"
    witnesses_file.write_text("".join(k.vkey() + "\n" for k in witnesses), encoding="utf-8")
    uscc, console = _enterprise_console(
        consoles,
        trust,
        data_dir,
        1501,
        log_key=trust.layout.log_key().to_text(),
        witnesses_file=str(witnesses_file),
        quorum=2,
    )
    with open_console(browser, console) as page:
        page.goto(console.url + "/")
        assert page.url.endswith("/enterprise/consents")
        check_page(page, "enterprise-consents-empty")
        page.get_by_role("link", name="Grant a consent").first.click()
        page.locator("#f-grantee").wait_for()
        check_page(page, "enterprise-grant")

        # (c) A grantee that does not exist: the coordinator's refusal under the field.
        page.locator("#f-grantee").fill("no-such-bank")
        page.locator("#f-max_uses").fill("3")
        page.get_by_role("button", name="Sign and grant").click()
        error = page.locator("#e-grantee")
        error.wait_for(timeout=TIMEOUT_MS)
        assert "no-such-bank" in error.inner_text()
        assert page.locator("#f-max_uses").input_value() == "3"  # nothing lost
        check_page(page, "enterprise-grant-refused")

        page.locator("#f-grantee").fill(trust.bank_id)
        page.get_by_role("button", name="Sign and grant").click()
        page.locator("#granted-id").wait_for(timeout=TIMEOUT_MS)
        consent = page.locator("#granted-id").inner_text().strip()
        check_page(page, "enterprise-granted")

        page.get_by_role("link", name="Consents", exact=True).click()
        row = page.locator(f"tr[data-consent='{consent}']")
        row.wait_for()
        assert trust.bank_id in row.inner_text() and "0 / 3" in row.inner_text()
        check_page(page, "enterprise-consents")
        row.get_by_role("button", name=f"Revoke consent {consent}").click()
        page.locator("#revoked-notice").wait_for(timeout=TIMEOUT_MS)
        assert "revoked" in page.locator(f"tr[data-consent='{consent}'] td.state").inner_text()
        check_page(page, "enterprise-revoked")

        # The bank's query under the revoked consent is refused, and recorded.
        with pytest.raises(ProblemError) as refused:
            trust.bank.query(uscc, consent)
        assert refused.value.status == 403

        page.get_by_role("link", name="Access log").click()
        entry = page.locator(f"#access-log tr[data-consent='{consent}'][data-kind='refusal']")
        entry.wait_for(timeout=TIMEOUT_MS)
        assert entry.get_attribute("data-verified") == "yes"
        inclusion = entry.locator("td.inclusion").inner_text()
        assert "verified" in inclusion and "witnessed by" in inclusion
        assert "pinned" in page.locator("#log-key").inner_text()
        # The page says which guarantee holds: a pinned key and a quorum of witnesses.
        assert page.locator("#log-witnesses").get_attribute("data-witnessed") == "yes"
        assert (
            f"at least 2 of the {len(witnesses)} witnesses" in page.locator("#log-key").inner_text()
        )
        check_page(page, "enterprise-log")


def test_the_pages_in_chinese_and_a_log_without_witnesses_said_to_be_unwitnessed(
    consoles: Consoles, trust: Trust, browser: Any, data_dir: Path
) -> None:
    _, console = _enterprise_console(
        consoles, trust, data_dir, 1502, log_key=trust.layout.log_key().to_text()
    )
    with open_console(browser, console, language="zh") as page:
        page.goto(console.url + "/enterprise/log")
        assert page.locator("#log-witnesses").get_attribute("data-witnessed") == "no"
        assert "未经见证" in page.locator("#log-key").inner_text()
        check_page(page, "enterprise-log-zh")
        page.goto(console.url + "/enterprise/grant")
        # A local check (no round trip) also lands under its field.
        page.locator("#f-grantee").fill(trust.bank_id)
        page.locator("#f-days").fill("0")
        page.locator("#main form button[type=submit]").click()
        page.locator("#e-days").wait_for(timeout=TIMEOUT_MS)
        check_page(page, "enterprise-grant-zh")
