"""The chain operator's console against the real session federation: participants
registered, keys issued and revoked, a participant disabled and enabled through the
pages (and the coordinator holding them to it); nodes, ledger and metrics; each form's
refusal next to its field. Only participants these tests register are ever changed."""

from __future__ import annotations

import csv
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest

from creditshare import __version__
from creditshare.client import CreditShareClient
from creditshare.demo import Federation
from creditshare.errors import ProblemError

from ..conftest import Trust
from .conftest import Console, Consoles, check_page, open_console

pytestmark = pytest.mark.e2e

#: The coordinator probes nodes every 10 s by default; generous for two busy cores.
PROBE_WAIT_SECONDS = 90.0


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _works(trust: Trust, api_key: str) -> bool:
    """Whether a bank's API key is accepted now (its own key list: a bank-only call)."""
    with CreditShareClient(trust.url, api_key=api_key) as client:
        try:
            client.paillier_keys()
        except ProblemError as exc:
            assert exc.status in (401, 403), exc
            return False
    return True


def _operator(consoles: Consoles, trust: Trust) -> Console:
    return consoles.start("operator", coordinator_url=trust.url, api_key=trust.operator_api_key)


def _swapped(page: Any, act: Callable[[], None]) -> None:
    """Do ``act`` (a click that posts a form) and wait until htmx has put the answer's
    page in place: the old ``#main`` is marked, the new one is not."""
    page.locator("#main").evaluate("main => main.setAttribute('data-stale', '')")
    act()
    page.locator("#main:not([data-stale])").wait_for()


def _submit(page: Any, form: str) -> None:
    _swapped(page, page.locator(f"#{form} button[type=submit]").click)


def test_an_operator_disables_a_participant_whose_next_request_fails_then_enables_it(
    consoles: Consoles, trust: Trust, browser: object
) -> None:
    bank = _id("opscon-disabled")
    api_key = str(trust.operator.register_participant(bank, "bank", "Bank to suspend")["api_key"])
    assert _works(trust, api_key)
    console = _operator(consoles, trust)
    with open_console(browser, console) as page:
        page.goto(console.url + "/")
        assert page.url.endswith("/operator/participants")
        row = page.locator(f'#participants tr[data-participant="{bank}"]')
        assert row.get_attribute("data-disabled") == "false"
        check_page(page, "operator-participants")
        confirmations: list[str] = []

        def confirm(dialog: Any) -> None:
            confirmations.append(dialog.message)
            dialog.accept()

        page.on("dialog", confirm)
        _swapped(page, row.get_by_role("button", name=f"Disable {bank}").click)
        assert bank in page.locator("#notice").inner_text()
        assert confirmations and bank in confirmations[0]  # asked before disabling
        row = page.locator(f'#participants tr[data-participant="{bank}"]')
        assert row.get_attribute("data-disabled") == "true"
        assert not _works(trust, api_key)  # its very next request
        _swapped(page, row.get_by_role("button", name=f"Enable {bank}").click)
        assert row.get_attribute("data-disabled") == "false"
        assert _works(trust, api_key)
        # The role filter shows banks only.
        page.locator("#filter-role").select_option("bank")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url("**/operator/participants?role=bank")
        roles = page.locator("#participants tbody tr td:nth-child(2)").all_inner_texts()
        assert roles and set(roles) == {"Bank"}
        assert page.locator(f'#participants tr[data-participant="{bank}"]').count() == 1


def test_an_operator_registers_a_participant_issues_a_key_and_revokes_one(
    consoles: Consoles, trust: Trust, browser: object
) -> None:
    bank = _id("opscon-bank")
    console = _operator(consoles, trust)
    with open_console(browser, console) as page:
        page.goto(console.url + "/operator/participants")
        page.locator("#f-id").fill(bank)
        page.locator("#f-role").select_option("bank")
        page.locator("#f-name").fill("Bank registered in the console")
        _submit(page, "register-form")
        issued = page.locator("#issued-key")
        assert issued.get_attribute("data-participant") == bank
        first = page.locator("#issued-api-key").inner_text().strip()
        first_id = issued.get_attribute("data-key-id")
        assert first.startswith(f"cs_{first_id}.")
        assert _works(trust, first)
        assert page.locator(f'#participants tr[data-participant="{bank}"]').count() == 1
        check_page(page, "operator-key-issued")

        page.locator("#f-participant_id").fill(bank)
        _submit(page, "issue-form")
        second = page.locator("#issued-api-key").inner_text().strip()
        assert second != first and _works(trust, second)

        page.locator("#f-owner").fill(bank)
        page.locator("#f-key_id").fill(first)  # a whole key pasted: only its id is sent
        _submit(page, "revoke-form")
        assert first_id in page.locator("#notice").inner_text()
        assert first not in page.content()  # the pasted secret is not echoed
        assert not _works(trust, first)
        assert _works(trust, second)  # its other key keeps working


def test_each_form_shows_the_coordinators_refusal_next_to_its_field(
    consoles: Consoles, trust: Trust, browser: object
) -> None:
    console = _operator(consoles, trust)
    with open_console(browser, console, language="zh") as page:
        page.goto(console.url + "/operator/participants")
        # Register an id that exists: the coordinator's 409, under the id field.
        page.locator("#f-id").fill(trust.bank_id)
        page.locator("#f-name").fill("Duplicate")
        _submit(page, "register-form")
        assert "already exists" in page.locator("#e-id").inner_text()
        assert page.locator("#f-id").get_attribute("aria-invalid") == "true"
        assert page.locator("#f-id").input_value() == trust.bank_id  # nothing typed is lost
        check_page(page, "operator-register-refused-zh")
        # Not a participant id: refused here (it would go into a URL path), under the field.
        page.locator("#f-id").fill("Not An Id!")
        _submit(page, "register-form")
        refused = page.locator("#e-id").inner_text()
        assert refused and "already exists" not in refused
        # An enterprise's USCC is checked as typed, before anything is sent.
        page.locator("#f-id").fill(_id("opscon-ent"))
        page.locator("#f-role").select_option("enterprise")
        page.locator("#f-uscc").fill("91350100M000100Y40")
        page.locator("#f-signing_key").fill("AAAA")
        _submit(page, "register-form")
        assert page.locator("#e-uscc").is_visible()
        # A further key for nobody: 404 under the participant field.
        missing = _id("opscon-nobody")
        page.locator("#f-participant_id").fill(missing)
        _submit(page, "issue-form")
        assert missing in page.locator("#e-participant_id").inner_text()
        # Revoking a key the participant does not have: 404 under the key id.
        page.locator("#f-owner").fill(trust.bank_id)
        page.locator("#f-key_id").fill("0123456789abcdef")
        _submit(page, "revoke-form")
        assert "0123456789abcdef" in page.locator("#e-key_id").inner_text()
        assert page.locator("#e-owner").count() == 0
        check_page(page, "operator-revoke-refused-zh")


def test_nodes_ledger_and_metrics_pages_show_the_federation(
    consoles: Consoles, federation: Federation, trust: Trust, browser: object
) -> None:
    console = _operator(consoles, trust)
    # At least one entry (a consent and a query), so that the ledger has a signed head.
    uscc = _held_uscc(federation)
    trust.bank.query(uscc, trust.consent(uscc))
    size = int(trust.operator.ledger_head()["size"])
    with open_console(browser, console) as page:
        page.goto(console.url + "/operator/nodes")
        shown = page.locator("#nodes tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.node)"
        )
        assert sorted(shown) == sorted(n.node_id for n in federation.layout.nodes)
        for node in federation.layout.nodes:
            row = page.locator(f'#nodes tr[data-node="{node.node_id}"]')
            assert node.address in row.inner_text()
            if row.get_attribute("data-reachable") == "unknown":
                assert "not probed" in row.inner_text()
        # The coordinator probes every node in the background: each is soon reachable,
        # with its version and latency (the page is reloaded until then, as a user would).
        deadline = time.monotonic() + PROBE_WAIT_SECONDS
        while page.locator('#nodes tbody tr:not([data-reachable="true"])').count():
            assert time.monotonic() < deadline, page.locator("#nodes").inner_text()
            page.wait_for_timeout(500)
            page.reload()
        for node in federation.layout.nodes:
            text = page.locator(f'#nodes tr[data-node="{node.node_id}"]').inner_text()
            assert __version__ in text and " ms" in text
        assert "ok" in page.locator('#readiness tr[data-check="status"]').inner_text()
        check_page(page, "operator-nodes")

        page.get_by_role("link", name="Ledger").click()
        page.wait_for_url("**/operator/ledger")
        assert int(page.locator("#ledger-size").inner_text()) >= size >= 1
        check_page(page, "operator-ledger")

        page.get_by_role("link", name="Metrics").click()
        page.wait_for_url("**/operator/metrics")
        needs_key = federation.layout.coordinator_settings().metrics_require_operator_key
        key_note = page.locator("#metrics-key")
        assert key_note.get_attribute("data-needs-key") == ("true" if needs_key else "false")
        assert page.locator("#metrics-url").get_attribute("href") == f"{trust.url}/metrics"
        assert "# TYPE" in page.locator("#metrics-text").inner_text()
        check_page(page, "operator-metrics")


def _held_uscc(federation: Federation) -> str:
    """An enterprise some node holds (the first record of the first node's data)."""
    with federation.layout.nodes[0].data_file.open(newline="", encoding="utf-8") as f:
        return str(next(csv.DictReader(f))["uscc"])
