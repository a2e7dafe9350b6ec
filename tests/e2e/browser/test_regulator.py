"""The regulator's console in a real browser against the session's real federation: a
cohort query through the page shows every figure as value ± bound with its error bar,
within reach of the plaintext figures of the raw synthetic files, cells without
enterprises suppressed; the budget table shows the ε the query spent; a bad ε is
refused under its field before anything is sent; and the page reads in Chinese."""

from __future__ import annotations

import csv
import secrets
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from creditshare.departments import get_department
from creditshare.identity import Chain
from creditshare.statistics import Catalogue

from ..conftest import Trust
from .conftest import Console, Consoles, check_page, open_console, participant_console_settings

pytestmark = pytest.mark.e2e

#: A cohort query: nine nodes' noisy parts, 2048-bit Paillier, on two busy cores.
QUERY_TIMEOUT_MS = 180_000
DEPARTMENT = "tax"
COLUMN = "annual_tax_paid"
#: The catalogue the tax nodes publish (the built-in schema's).
CATALOGUE = Catalogue.of(get_department(DEPARTMENT))
CLIP = CATALOGUE.sum_column(COLUMN)
#: ε 2 (the nodes' most per query) over two releases (count, the column's sum): each
#: node's noise has scale 1, so a cell of this many records is released by its node and
#: a cell of none is suppressed (minimum 10) but with negligible probability (e^-15 and
#: e^-10 per cell): the test does not flake on noise.
EPSILON = "2"
CLEARLY_LARGE = 25
#: Figures are checked against the plaintext within this many times their stated 95%
#: bound (exceeded practically never): the page shows the decoded figures of the right
#: cells, not figures of others.
SLACK = 5.0


def _regulator_console(
    consoles: Consoles, trust: Trust, tmp_path: Path, language: str = "en"
) -> tuple[dict[str, Any], Console]:
    regulator_id = f"console-regulator-{secrets.token_hex(4)}"
    settings = participant_console_settings(
        trust, tmp_path, regulator_id, "regulator", "Console Regulator"
    )
    return settings, consoles.start("regulator", language=language, **settings)


def _plaintext(data_dir: Path, regions: set[str]) -> tuple[Counter[tuple[str, str]], Any]:
    """Count and mean of the column per (chain, region), from the raw tax files (each
    chain's tax node holds its file's rows; a region not listed is ``other``)."""
    counts: Counter[tuple[str, str]] = Counter()
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for chain in Chain:
        path = data_dir / chain.value / f"{DEPARTMENT}.csv"
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                province = row["uscc"][2:4]
                cell = (chain.value, province if province in regions else "other")
                counts[cell] += 1
                if row[COLUMN].strip():  # clipped to the catalogue's public bounds
                    values[cell].append(min(max(float(row[COLUMN]), CLIP.lower), CLIP.upper))
    return counts, values


def _shown(page: Any, measure: str) -> dict[tuple[str, str], dict[str, Any]]:
    rows = page.locator(f"table[data-measure='{measure}'] tbody tr").evaluate_all(
        """rows => rows.map(r => [r.dataset.group, r.dataset.value, r.dataset.bound,
            r.dataset.suppressed, r.querySelector('svg.errorbar') !== null,
            r.textContent])"""
    )
    shown = {}
    for group, value, bound, suppressed, bar, text in rows:
        chain, region = group.split("|")
        shown[(chain, region)] = {
            "value": float(value),
            "bound": float(bound),
            "suppressed": suppressed == "true",
            "bar": bar,
            "text": text,
        }
    return shown


def test_a_cohort_query_through_the_page_shows_figures_with_error_bars_and_suppresses(
    consoles: Consoles, trust: Trust, browser: Any, data_dir: Path, tmp_path: Path
) -> None:
    _, console = _regulator_console(consoles, trust, tmp_path)
    with open_console(browser, console) as page:
        page.goto(console.url + "/")  # the regulator's landing page is its statistics form
        assert page.url.endswith("/regulator/statistics")
        assert page.locator("#f-department").input_value() == DEPARTMENT  # built-ins first
        check_page(page, "regulator-statistics")
        page.locator("#f-group_by").select_option(["chain", "region"])
        page.locator("#f-measures").select_option(["count", f"mean:{COLUMN}"])
        page.locator("#f-epsilon").fill(EPSILON)
        page.locator("#f-min_cell").fill("10")
        page.get_by_role("button", name="Run query", exact=True).click()
        page.locator("#result").wait_for(timeout=QUERY_TIMEOUT_MS)
        counts = _shown(page, "count")
        means = _shown(page, f"mean:{COLUMN}")
        budget = page.locator("#budget-table tbody tr").first.inner_text()
        check_page(page, "regulator-statistics-result")

    regions = set(CATALOGUE.dimension("region").levels)
    truth, values = _plaintext(data_dir, regions - {"other"})
    assert set(counts) == {(c.value, r) for c in Chain for r in regions}  # every cell, in order
    large = [cell for cell, n in truth.items() if n >= CLEARLY_LARGE]
    empty = [cell for cell in counts if truth[cell] == 0]
    assert large and empty
    for cell in large:
        shown = counts[cell]
        assert not shown["suppressed"] and shown["bar"], cell
        assert abs(shown["value"] - truth[cell]) <= SLACK * shown["bound"], (cell, shown)
        mean = means[cell]
        assert abs(mean["value"] - _mean(values[cell])) <= SLACK * mean["bound"] + 1e-9, cell
    for cell in empty:
        shown = counts[cell]
        assert shown["suppressed"] and not shown["bar"], (cell, shown)
        assert "suppressed" in shown["text"]
    assert budget.split()[1] == EPSILON  # the query's ε, as the ledger records it


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_a_bad_epsilon_is_refused_under_its_field_in_chinese_and_nothing_is_spent(
    consoles: Consoles, trust: Trust, browser: Any, tmp_path: Path
) -> None:
    _, console = _regulator_console(consoles, trust, tmp_path, language="zh")
    with open_console(browser, console, language="zh") as page:
        page.goto(console.url + "/regulator/statistics")
        assert page.locator("h1").inner_text() == "群体统计"
        # Another department's catalogue replaces the form's choices (htmx, no reload).
        page.locator("#f-department").select_option("court")
        page.locator("#f-group_by option[value='judgments_band']").wait_for(state="attached")
        assert page.locator("#f-group_by option[value='tax_credit_grade']").count() == 0
        check_page(page, "regulator-statistics-court-zh")
        page.locator("#f-epsilon").fill("20")
        page.locator("#run-statistics").click()
        error = page.locator("#e-epsilon")
        error.wait_for(timeout=QUERY_TIMEOUT_MS)
        assert "不超过 10" in error.inner_text()
        assert page.locator("#f-epsilon").get_attribute("aria-invalid") == "true"
        assert page.locator("#f-epsilon").input_value() == "20"  # nothing lost
        assert page.locator("#result").count() == 0
        assert page.locator("#budget-table").count() == 0  # nothing was spent
        check_page(page, "regulator-statistics-refused-zh")
