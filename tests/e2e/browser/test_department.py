"""The department operator's console against a node of the real session federation: its
imports with the counts the import reported, its access log growing with a query, its
refusals and health; and a database it cannot read said plainly on the page."""

from __future__ import annotations

import csv
import tomllib
from pathlib import Path
from typing import Any

import pytest

from creditshare.demo import Federation, NodeLayout
from creditshare.demo._toml import dumps
from creditshare.node import import_into_node

from ..conftest import Trust
from .conftest import Consoles, check_page, open_console

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 60_000


def _node(federation: Federation, department: str = "market") -> NodeLayout:
    return next(n for n in federation.layout.nodes if n.department == department)


def _cell(row: Any, name: str) -> int:
    return int(row.locator(f'[data-count="{name}"]').inner_text())


def test_a_department_sees_its_imports_as_reported_and_its_access_log_grow(
    consoles: Consoles, federation: Federation, trust: Trust, browser: object, tmp_path: Path
) -> None:
    node = _node(federation)
    settings = federation.layout.node_settings(node)
    # A snapshot that changes one record and leaves out another, then the records as
    # they were again (the federation's data is shared: it is back before the page opens).
    with node.data_file.open(newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    first, last = records[0]["uscc"], records[-1]["uscc"]
    altered = tmp_path / "market-altered.csv"
    with altered.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        older = float(records[0]["years_operating"]) + 1
        changed = dict(records[0], years_operating=f"{older:.1f}")
        writer.writerows([changed, *records[1:-1]])
    summaries = [
        import_into_node(settings, [altered]),
        import_into_node(settings, [node.data_file]),
    ]
    assert (summaries[0].changed, summaries[0].removed) == (1, 1)
    assert (summaries[1].changed, summaries[1].added) == (1, 1)
    console = consoles.start("department", node_config=str(node.config))
    with open_console(browser, console, language="en") as page:
        page.goto(console.url + "/")
        assert page.url.endswith("/department/imports")
        for summary in summaries:
            row = page.locator(f'#snapshots tr[data-snapshot="{summary.batch_id}"]')
            assert _cell(row, "rows") == summary.rows
            assert _cell(row, "added") == summary.added
            assert _cell(row, "changed") == summary.changed
            assert _cell(row, "removed") == summary.removed
            assert _cell(row, "unchanged") == summary.unchanged
        assert node.data_file.name in row.inner_text()
        # The latest snapshot brought the left-out record back and undid the change.
        assert first in page.locator("#change-changed + ul").inner_text()
        assert last in page.locator("#change-added + ul").inner_text()
        # The first snapshot (the federation's own import) added every record.
        oldest = page.locator("#snapshots tbody tr").last
        assert _cell(oldest, "added") == _cell(oldest, "rows") == len(records)
        assert int(page.locator("#records-held").inner_text()) == len(records)
        check_page(page, "department-imports")

        page.get_by_role("link", name="Access log").click()
        page.wait_for_url("**/department/access-log")
        before = page.locator("#access-log tbody tr").count()
        check_page(page, "department-access-log")
        # A bank queries an enterprise this node holds: the node's log gains its entry.
        uscc = last
        consent = trust.consent(uscc)
        index = int(trust.bank.query(uscc, consent).raw["ledger_index"])
        page.reload()
        entry = page.locator(f'#access-log tr[data-index="{index}"]')
        entry.wait_for(timeout=TIMEOUT_MS)
        text = entry.inner_text()
        assert uscc in text and trust.bank_id in text and consent in text
        assert page.locator("#access-log tbody tr").count() >= before + 1

        page.get_by_role("link", name="Refusals").click()
        page.wait_for_url("**/department/refusals")
        check_page(page, "department-refusals")

        page.get_by_role("link", name="Health").click()
        page.wait_for_url("**/department/health")
        assert node.node_id in page.locator("#node-facts").inner_text()
        for check in ("port", "database"):
            assert page.locator(f'#checks tr[data-check="{check}"]').get_attribute("data-ok") == (
                "true"
            ), page.locator("#checks").inner_text()
        check_page(page, "department-health")


def test_a_department_console_says_in_chinese_when_its_database_cannot_be_read(
    consoles: Consoles, federation: Federation, browser: object, tmp_path: Path
) -> None:
    node = _node(federation, "court")
    doc = tomllib.loads(node.config.read_text(encoding="utf-8"))
    doc["database_url"] = f"sqlite:///{tmp_path / 'missing' / 'node.db'}"
    config = tmp_path / "node.toml"
    config.write_text(dumps(doc), encoding="utf-8")
    console = consoles.start("department", node_config=str(config))
    with open_console(browser, console, language="zh") as page:
        page.goto(console.url + "/department/imports")
        problem = page.locator("#node-problem")
        assert "无法读取节点数据库" in problem.inner_text()
        assert "there is no node database" in problem.inner_text()
        check_page(page, "department-imports-zh-problem")
        page.goto(console.url + "/department/health")
        database = page.locator('#checks tr[data-check="database"]')
        assert database.get_attribute("data-ok") == "false"
        assert "失败" in database.inner_text()
        # The node itself still answers on its port: the console says so separately.
        assert page.locator('#checks tr[data-check="port"]').get_attribute("data-ok") == "true"
        check_page(page, "department-health-zh")
    assert not (tmp_path / "missing").exists()  # reading never made a database
