"""``creditshare stats ...`` as a regulator runs it, against real servers and real data.

Three tax nodes (one per chain, real gRPC with mutual TLS, real OpenDP noise, real
2048-bit Paillier) and the coordinator (real HTTP on loopback) serve a synthetic data
set of their own. The regulator's figures are compared with the same figures computed
in plaintext from the raw synthetic files (``demo.PlaintextCohort``, code of its own):
every released figure lies within its stated bound (asked at confidence 1 − 10⁻⁶, so a
miss is a defect, not chance), every node whose plaintext count of a cell is far below
the minimum withheld its part, and a cell no node released is suppressed, shown as
such in the table, the CSV and the JSON. ``stats budget`` then shows the ε spent.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from creditshare.cli import app
from creditshare.client import CreditShareClient, save_key
from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, FederationLayout, PlaintextCohort, check_rows
from creditshare.statistics import Catalogue, CohortQuery
from creditshare.synth import generate

runner = CliRunner()
#: Enough enterprises that some region cells at a node are far above the minimum.
ENTERPRISES = 600
#: The chance a stated bound misses (per figure).
CONFIDENCE = "0.999999"
NODE_MIN_CELL = 10  # the nodes' stats_min_cell (default)


@dataclass
class Regulator:
    url: str
    api_key: str
    identity: Path
    key_file: Path
    layout: FederationLayout

    def cli(self, *args: str) -> str:
        """``creditshare *args`` in-process, as the regulator (must succeed)."""
        result = runner.invoke(
            app,
            [*args, "--coordinator", self.url],
            env={
                "CREDITSHARE_API_KEY": self.api_key,
                "CREDITSHARE_IDENTITY": str(self.identity),
                "COLUMNS": "200",
            },
        )
        assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
        return result.stdout

    def query(self, *args: str) -> list[str]:
        return [
            "stats",
            "query",
            "--department",
            "tax",
            "--key-file",
            str(self.key_file),
            "--confidence",
            CONFIDENCE,
            *args,
        ]

    def plaintext(self, document: dict[str, Any]) -> PlaintextCohort:
        query = CohortQuery.from_document(document)
        with CreditShareClient(self.url, api_key=self.api_key) as client:
            catalogue = client.statistics_catalogue("tax")
        return PlaintextCohort(self.layout.nodes, catalogue, query)


@pytest.fixture(scope="module")
def regulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Regulator]:
    root = tmp_path_factory.mktemp("stats")
    generate(ENTERPRISES, 5, root / "data")
    layout = FederationLayout.write(root / "federation", root / "data", departments=("tax",))
    layout.import_data()
    with Federation(layout):
        operator_key = layout.bootstrap_operator()
        layout.publish_revocation_lists(operator_key)
        with CreditShareClient(layout.coordinator_url, api_key=operator_key) as operator:
            issued = operator.register_participant("regulator-1", "regulator", "PBoC branch")
        key_file = root / "regulator-paillier.json"
        save_key(PrivateKey.generate(), key_file)
        yield Regulator(
            layout.coordinator_url,
            issued["api_key"],
            layout.identity_dir("regulator-1", "regulator"),
            key_file,
            layout,
        )


def _csv_rows(text: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for row in csv.DictReader(io.StringIO(text)):
        suppressed = row["suppressed"] == "True"
        rows.append(
            row
            | {
                "suppressed": suppressed,
                "withheld_at": int(row["withheld_at"]),
                "value": None if suppressed else float(row["value"]),
                "bound": None if suppressed else float(row["bound"]),
            }
        )
    return rows


def test_grouped_figures_lie_within_their_bounds_of_the_plaintext(regulator: Regulator) -> None:
    args = regulator.query(
        "--group-by",
        "chain",
        "--measure",
        "count",
        "--measure",
        "mean:annual_tax_paid",
        "--measure",
        "distribution:tax_credit_grade",
        "--epsilon",
        "2",
        "--json",
    )
    doc = json.loads(regulator.cli(*args))
    assert doc["query"]["epsilon"] == "2" and doc["confidence"] == float(CONFIDENCE)
    assert sorted(n["node_id"] for n in doc["nodes"] if n["status"] == "ok") == [
        "bth-tax",
        "prd-tax",
        "yrd-tax",
    ]
    plain = regulator.plaintext(doc["query"])
    answered = [n["node_id"] for n in doc["nodes"] if n["status"] == "ok"]
    assert check_rows(doc["rows"], plain, answered, NODE_MIN_CELL) == []
    # Each chain's cell: its own node's part only (the others withhold another chain's).
    for chain in ("yrd", "prd", "bth"):
        count = next(r for r in doc["rows"] if r["chain"] == chain and r["measure"] == "count")
        assert count["withheld_at"] == 2 and not count["suppressed"]
        truth = plain.part(f"{chain}-tax", {"chain": chain}).count
        assert truth > 100 and abs(count["value"] - truth) <= count["bound"]


def test_cells_below_the_minimum_are_suppressed(regulator: Regulator) -> None:
    args = ("--group-by", "region", "--measure", "count", "--epsilon", "2", "--min-cell", "30")
    rows = _csv_rows(regulator.cli(*regulator.query(*args, "--csv")))
    # The query the CSV answers: rebuilt from what the options say, for the plaintext.
    with CreditShareClient(regulator.url, api_key=regulator.api_key) as client:
        catalogue: Catalogue = client.statistics_catalogue("tax")
    nodes = ["yrd-tax", "prd-tax", "bth-tax"]
    document = {
        "v": 1,
        "type": "cohort",
        "department": "tax",
        "chains": ["bth", "prd", "yrd"],
        "group_by": ["region"],
        "measures": ["count"],
        "dates": [],
        "epsilon": "2",
        "min_cell": 30,
        "key_fingerprint": "ab" * 16,
        "catalogue_digest": catalogue.digest,
        "request_id": "cd" * 16,
        "regulator": "regulator-1",
        "time": "2026-12-01T00:00:00Z",
    }
    plain = regulator.plaintext(document)
    assert check_rows(rows, plain, nodes, NODE_MIN_CELL) == []
    by_region = {r["region"]: r for r in rows}
    # Far below the minimum at every node (noise scale 0.5 here): suppressed, no figure.
    empty = [
        region
        for region in catalogue.dimension("region").levels
        if all(plain.part(n, {"region": region}).count <= 10 for n in nodes)
    ]
    assert "other" in empty
    for region in empty:
        assert by_region[region]["suppressed"] and by_region[region]["value"] is None, region
        assert by_region[region]["withheld_at"] == 3
    # Far above it at one node: released, within its bound of that node's plaintext count.
    full = next(
        (region, node)
        for region in catalogue.dimension("region").levels
        for node in nodes
        if plain.part(node, {"region": region}).count >= 60
    )
    row = by_region[full[0]]
    assert not row["suppressed"] and row["value"] is not None
    # The table says the same: the empty regions as "suppressed", never a number.
    table = regulator.cli(*regulator.query(*args[:-4], "--epsilon", "1", "--min-cell", "30"))
    for region in empty:
        line = next(x for x in table.splitlines() if f" {region} " in x)
        assert "suppressed" in line and "±" not in line
    assert "±" in table


def test_the_budget_shows_what_the_queries_spent(regulator: Regulator) -> None:
    before = json.loads(regulator.cli("stats", "budget", "--json"))
    spent = sum(p["epsilon"] for p in before["periods"])
    regulator.cli(*regulator.query("--group-by", "chain", "--epsilon", "0.5", "--json"))
    after = json.loads(regulator.cli("stats", "budget", "--json"))
    assert after["regulator"] == "regulator-1"
    assert sum(p["epsilon"] for p in after["periods"]) == pytest.approx(spent + 0.5)
    assert sum(p["queries"] for p in after["periods"]) == (
        sum(p["queries"] for p in before["periods"]) + 1
    )
    table = regulator.cli("stats", "budget")
    assert "epsilon" in table and "regulator: regulator-1" in table


def test_the_catalogue_lists_what_a_query_may_use(regulator: Regulator) -> None:
    table = regulator.cli("stats", "catalogue", "--department", "tax")
    for name in ("chain", "region", "industry", "tax_credit_grade", "annual_tax_paid"):
        assert name in table
    assert "yrd-tax" in table and "prd-tax" in table and "bth-tax" in table
