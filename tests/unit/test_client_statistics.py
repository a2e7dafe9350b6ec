"""The SDK's and CLI's regulator calls against a fake coordinator (httpx.MockTransport).

The fake does what the real route does with the answers of two nodes: it checks the
regulator's signature over the query, packs each node's values with the query's layout,
encrypts them under the regulator's real 2048-bit key and adds the ciphertexts. What is
tested is the client: what it signs and sends, when it registers its key, that it
decrypts and decodes exactly the summed values (``statistics.decode`` of the plaintext
sum), and that it refuses an answer or a catalogue that is not what it asked for.
tests/e2e/test_stats_cli.py runs the same commands against real servers and real data.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import creditshare.client
from creditshare.cli import app
from creditshare.client import CreditShareClient, Identity
from creditshare.crypto import Ciphertext, PrivateKey, VerifyKey
from creditshare.departments import get_department
from creditshare.errors import ClientError, InvalidInputError
from creditshare.pki import init_ca
from creditshare.signed import SignedCohortQuery
from creditshare.statistics import Catalogue, CohortQuery, Layout, decode, withheld_cell

from .._pki import make_credential

REGULATOR = "regulator-1"
MEASURES = ("count", "mean:annual_tax_paid", "distribution:tax_credit_grade")
#: A node's values for one cell, given the query: (count, withheld, values...).
Values = Callable[[CohortQuery, Catalogue, int], list[int]]


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    folder = tmp_path_factory.mktemp("regulator-ca")
    init_ca("yrd", folder / "ca")
    key, credential = make_credential(folder / "ca", folder, REGULATOR, "regulator")
    return Identity.of(key, (credential,))


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.of(get_department("tax"))


def node_values(query: CohortQuery, catalogue: Catalogue, node: int) -> list[int]:
    """Node 0 holds 20 enterprises in every cell, 1000 units of tax each, 4 per grade;
    node 1 holds 3 per cell except ``other``, which it withholds."""
    layout = Layout.for_query(query, catalogue, _any_key(), 1)
    grades = len(catalogue.dimension("tax_credit_grade").levels)
    out: list[int] = []
    for cell in layout.cells:
        group = dict(cell.group)
        if node == 1 and group.get("region") == "other":
            out.extend(withheld_cell(query, catalogue))
            continue
        count = 20 if node == 0 else 3
        sums = [count * 1000] * len(query.summed_columns)
        # Per grade its count and withheld flag: every grade but the first holds too few
        # enterprises to release (withheld at this node).
        levels = [count, 0, *([0, 1] * (grades - 1))] * len(query.distributions)
        out.extend([count, 0, *sums, *levels])
    assert len(out) == layout.values
    return out


@functools.cache
def _any_key() -> Any:
    return PrivateKey.generate(2048).public_key


class FakeCoordinator:
    """The statistics routes as the coordinator serves them, for two nodes."""

    def __init__(
        self,
        catalogue: Catalogue,
        key: PrivateKey,
        verify_key: VerifyKey,
        *,
        known: bool = True,
        values: Values = node_values,
    ) -> None:
        self.catalogue = catalogue
        self.public = key.public_key
        self.verify_key = verify_key
        self.known = known
        self.values = values
        self.calls: list[str] = []
        self.queries: list[CohortQuery] = []
        #: Applied to each answer before it is sent (to break it).
        self.tamper: Callable[[dict[str, Any]], None] = lambda body: None
        self.catalogue_body: dict[str, Any] = {
            "department": catalogue.department,
            "catalogue": catalogue.document(),
            "digest": catalogue.digest,
            "nodes": ["yrd-tax", "prd-tax"],
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        path = request.url.path
        if path == "/v1/statistics/catalogue":
            assert request.url.params["department"] == "tax"
            return httpx.Response(200, json=self.catalogue_body)
        if path == "/v1/paillier-keys":
            self.known = True
            return httpx.Response(201, json={"fingerprint": self.public.fingerprint()})
        if path == "/v1/statistics/budget":
            period = {"period": "2026-12", "queries": 2, "epsilon": 1.5, "refused": 0}
            body = {"regulator": REGULATOR, "period": "month", "periods": [period]}
            return httpx.Response(200, json=body)
        assert path == "/v1/statistics" and request.method == "POST"
        body = json.loads(request.content)
        assert set(body) == {"request"}
        signed = SignedCohortQuery.from_json(body["request"])
        signed.verify(self.verify_key)  # InvalidSignatureError fails the test
        query = CohortQuery.from_document(signed.document)
        self.queries.append(query)
        if not self.known:
            return httpx.Response(
                422, json={"status": 422, "title": "Invalid input", "field": "key_fingerprint"}
            )
        answer = self.answer(query)
        self.tamper(answer)
        return httpx.Response(200, json=answer)

    def sum_of_values(self, query: CohortQuery) -> list[int]:
        parts = [self.values(query, self.catalogue, node) for node in (0, 1)]
        return [a + b for a, b in zip(*parts, strict=True)]

    def answer(self, query: CohortQuery) -> dict[str, Any]:
        layout = Layout.for_query(query, self.catalogue, self.public, 2)
        totals: list[Ciphertext] | None = None
        for node in (0, 1):
            plaintexts = layout.pack(self.values(query, self.catalogue, node))
            encrypted = [Ciphertext(self.public, self.public.raw_encrypt(p)) for p in plaintexts]
            totals = (
                encrypted
                if totals is None
                else [a + b for a, b in zip(totals, encrypted, strict=True)]
            )
        assert totals is not None
        return {
            "query_id": query.request_id,
            "ledger_index": 7,
            "receipt": {},
            "additions": 2,
            "ciphertexts": [base64.b64encode(c.to_bytes()).decode("ascii") for c in totals],
            "nodes": [
                {"node_id": "yrd-tax", "chain": "yrd", "status": "ok", "reason": ""},
                {"node_id": "prd-tax", "chain": "prd", "status": "ok", "reason": ""},
                {"node_id": "bth-tax", "chain": "bth", "status": "refused", "reason": "budget"},
            ],
        }


@pytest.fixture
def fake(catalogue: Catalogue, bank_key: PrivateKey, identity: Identity) -> FakeCoordinator:
    return FakeCoordinator(catalogue, bank_key, identity.signing_key.verify_key)


def _client(fake: FakeCoordinator, key: PrivateKey, identity: Identity) -> CreditShareClient:
    return CreditShareClient(
        "http://coordinator",
        api_key="cs_test",
        private_key=key,
        identity=identity,
        transport=httpx.MockTransport(fake),
    )


def test_the_query_is_signed_by_the_regulator_and_the_sums_decoded(
    fake: FakeCoordinator, bank_key: PrivateKey, identity: Identity, catalogue: Catalogue
) -> None:
    with _client(fake, bank_key, identity) as client:
        answer = client.run_cohort_query(
            "tax", group_by="region", measures=MEASURES, epsilon=0.5, min_cell=10
        )
    assert fake.calls == ["GET /v1/statistics/catalogue", "POST /v1/statistics"]
    (query,) = fake.queries
    assert query.document()["epsilon"] == "0.5"
    assert (query.department, query.group_by, query.measures) == ("tax", ("region",), MEASURES)
    assert query.chains == ("bth", "prd", "yrd") and query.dates == ()
    assert query.min_cell == 10 and query.regulator == REGULATOR
    assert query.key_fingerprint == bank_key.public_key.fingerprint()
    assert query.catalogue_digest == catalogue.digest
    # Exactly the plaintext sum of the two nodes' values, decoded by the statistics room.
    total = fake.sum_of_values(query)
    assert list(answer.values) == total
    assert answer.result == decode(total, query, catalogue, nodes=2, confidence=0.95)
    assert answer.ledger_index == 7 and answer.additions == 2
    assert answer.answered == ["yrd-tax", "prd-tax"]
    assert [(n.node_id, n.reason) for n in answer.left_out] == [("bth-tax", "budget")]
    cells = {dict(c.group)["region"]: c for c in answer.result.cells}
    assert cells["31"].count.value == 23 and cells["31"].withheld_at == 0
    assert cells["other"].count.value == 20 and cells["other"].withheld_at == 1
    mean = cells["31"].measures["mean:annual_tax_paid"]
    assert not isinstance(mean, dict) and mean.value == pytest.approx(1000 * 1000)


def test_cohort_statistics_returns_the_figures(
    fake: FakeCoordinator, bank_key: PrivateKey, identity: Identity
) -> None:
    with _client(fake, bank_key, identity) as client:
        result = client.cohort_statistics("tax", group_by=["region"], measures=["count"])
    assert len(result.cells) == len(Catalogue.of(get_department("tax")).dimension("region").levels)


def test_an_unknown_key_is_registered_and_a_fresh_query_signed(
    fake: FakeCoordinator, bank_key: PrivateKey, identity: Identity
) -> None:
    fake.known = False
    with _client(fake, bank_key, identity) as client:
        answer = client.run_cohort_query("tax", group_by="region")
    assert fake.calls == [
        "GET /v1/statistics/catalogue",
        "POST /v1/statistics",
        "POST /v1/paillier-keys",
        "POST /v1/statistics",
    ]
    first, second = fake.queries
    assert first.request_id != second.request_id == answer.query_id


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"group_by": "regoin"}, "no dimension 'regoin'"),
        ({"measures": ["mean:headcount"]}, "no summable column 'headcount'"),
        ({"measures": ["distribution:region"], "group_by": "region"}, "not grouped by"),
        ({"epsilon": 0}, "epsilon"),
        ({"epsilon": 0.0001}, "three decimals"),
        ({"min_cell": 0}, "min_cell"),
        ({"dates": ["2026-02-30"]}, "2026-02-30"),
        ({"chains": ["xyz"]}, "xyz"),
    ],
)
def test_a_bad_query_fails_before_anything_is_recorded(
    fake: FakeCoordinator,
    bank_key: PrivateKey,
    identity: Identity,
    options: dict[str, Any],
    message: str,
) -> None:
    with (
        _client(fake, bank_key, identity) as client,
        pytest.raises((ClientError, InvalidInputError)) as caught,
    ):
        client.run_cohort_query("tax", **options)
    assert message in str(caught.value)
    assert fake.calls == ["GET /v1/statistics/catalogue"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.update(ciphertexts=b["ciphertexts"][:-1]), "ciphertexts"),
        (lambda b: b.update(query_id="ab" * 16), "is for query"),
        (lambda b: b.update(additions=3), "3 nodes' parts"),
        (lambda b: b.update(ciphertexts=["not base64!"] * len(b["ciphertexts"])), "base64"),
        (lambda b: b.pop("ledger_index"), "malformed"),
        (
            lambda b: b.update(
                additions=0, nodes=[{"node_id": "yrd-tax", "status": "failed", "reason": "down"}]
            ),
            "yrd-tax: failed (down)",
        ),
    ],
)
def test_an_answer_that_is_not_for_this_query_is_refused(
    fake: FakeCoordinator,
    bank_key: PrivateKey,
    identity: Identity,
    change: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    fake.tamper = change
    with _client(fake, bank_key, identity) as client, pytest.raises(ClientError) as caught:
        client.run_cohort_query("tax", group_by="region")
    assert message in str(caught.value)


def test_a_catalogue_that_does_not_match_its_digest_is_refused(
    fake: FakeCoordinator, bank_key: PrivateKey, identity: Identity
) -> None:
    fake.catalogue_body["catalogue"]["sums"][0]["upper"] = 20_000_000  # other bounds
    with _client(fake, bank_key, identity) as client, pytest.raises(ClientError) as caught:
        client.statistics_catalogue("tax")
    assert "digest" in str(caught.value)
    assert fake.calls == ["GET /v1/statistics/catalogue"]


def test_another_departments_catalogue_is_refused(
    fake: FakeCoordinator, bank_key: PrivateKey, identity: Identity
) -> None:
    social = Catalogue.of(get_department("social"))
    fake.catalogue_body.update(catalogue=social.document(), digest=social.digest)
    with _client(fake, bank_key, identity) as client, pytest.raises(ClientError) as caught:
        client.statistics_catalogue("tax")
    assert "'social'" in str(caught.value)


def test_a_suppressed_cell_has_no_figure_in_the_rows(
    fake: FakeCoordinator, bank_key: PrivateKey, identity: Identity
) -> None:
    with _client(fake, bank_key, identity) as client:
        answer = client.run_cohort_query("tax", group_by="region", measures=MEASURES, min_cell=21)
    # Every cell but "other" holds 23 by the noisy counts; "other" 20, below 21.
    cells = {dict(c.group)["region"]: c for c in answer.result.cells}
    assert cells["other"].suppressed and not cells["31"].suppressed
    rows = answer.rows()
    hidden = [r for r in rows if r["region"] == "other"]
    assert hidden and all(r["value"] is None and r["bound"] is None for r in hidden)
    assert all(r["suppressed"] for r in hidden)
    shown = [r for r in rows if r["region"] == "31"]
    assert {r["measure"] for r in shown} == set(MEASURES)
    # A grade no node released is suppressed on its own (no figure), the cell's other
    # figures are shown.
    thin = [r for r in shown if r["level"] not in ("", "A")]
    assert thin and all(r["suppressed"] and r["value"] is None for r in thin)
    assert all(
        isinstance(r["value"], float | int) and r["bound"] > 0 for r in shown if r not in thin
    )
    assert json.loads(json.dumps(answer.to_json()))["rows"] == rows


# -- the CLI ------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def cli(
    fake: FakeCoordinator,
    bank_key: PrivateKey,
    identity: Identity,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Callable[..., str]]:
    patched = functools.partial(
        creditshare.client.CreditShareClient, transport=httpx.MockTransport(fake)
    )
    monkeypatch.setattr(creditshare.client, "CreditShareClient", patched)
    monkeypatch.setattr(creditshare.client.Identity, "load", staticmethod(lambda _: identity))
    monkeypatch.setattr("creditshare.cli._stats.paillier_key", lambda _: bank_key)
    monkeypatch.setenv("CREDITSHARE_API_KEY", "cs_test")
    monkeypatch.setenv("CREDITSHARE_IDENTITY", str(tmp_path))

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(
            app, [*args, "--coordinator", "http://coordinator"], env={"COLUMNS": "200"}
        )
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return result.stdout

    yield run


QUERY = (
    "stats",
    "query",
    "--department",
    "tax",
    "--group-by",
    "region",
    "--measure",
    "count",
    "--measure",
    "mean:annual_tax_paid",
    "--min-cell",
    "21",
)


def test_the_table_shows_value_and_bound_and_suppressed_cells(cli: Callable[..., str]) -> None:
    table = cli(*QUERY)
    line = next(x for x in table.splitlines() if " 31 " in x and "count" in x)
    assert "23 ± " in line
    other = [x for x in table.splitlines() if " other " in x]
    assert other and all("suppressed" in x for x in other)
    assert "ledger entry 7" in table and "left out: bth-tax (bth) refused: budget" in table
    assert "spent at each of 2 nodes that answered" in table
    assert "suppressed: 1 cell" in table and "cannot tell these two causes" in table


def test_csv_has_a_row_per_cell_and_figure(cli: Callable[..., str]) -> None:
    rows = list(csv.DictReader(io.StringIO(cli(*QUERY, "--csv"))))
    assert list(rows[0]) == [
        "date",
        "region",
        "measure",
        "level",
        "value",
        "bound",
        "suppressed",
        "withheld_at",
    ]
    regions = Catalogue.of(get_department("tax")).dimension("region").levels
    assert len(rows) == 2 * len(regions)
    other = [r for r in rows if r["region"] == "other"]
    assert all(r["suppressed"] == "true" and r["value"] == "" for r in other)
    count = next(r for r in rows if r["region"] == "31" and r["measure"] == "count")
    assert count["value"] == "23" and float(count["bound"]) > 0  # an integer, not 23.0
    assert count["suppressed"] == "false"


def test_json_is_one_document(cli: Callable[..., str]) -> None:
    doc = json.loads(cli(*QUERY, "--json"))
    assert doc["query"]["epsilon"] == "1" and doc["ledger_index"] == 7
    assert doc["confidence"] == 0.95 and doc["additions"] == 2
    assert {r["region"] for r in doc["rows"] if r["suppressed"]} == {"other"}


def test_json_and_csv_together_are_refused(cli: Callable[..., str]) -> None:
    cli(*QUERY, "--json", "--csv", code=2)


def test_catalogue_and_budget(cli: Callable[..., str], catalogue: Catalogue) -> None:
    table = cli("stats", "catalogue", "--department", "tax")
    assert "tax_credit_grade" in table and "annual_tax_paid" in table
    assert catalogue.digest in table and "yrd-tax, prd-tax" in table
    # No blank where the bounds are named, and the unit named where the schema has one.
    assert "clipped to lower..upper" in table and "1000 CNY" in table
    assert json.loads(cli("stats", "catalogue", "--department", "tax", "--json"))["digest"] == (
        catalogue.digest
    )
    budget = cli("stats", "budget")
    header = next(line for line in budget.splitlines() if "period" in line and "epsilon" in line)
    assert "queries" in header and "refused" in header
    assert "2026-12" in budget and "1.5" in budget and "regulator: regulator-1" in budget
    assert json.loads(cli("stats", "budget", "--json"))["periods"][0]["epsilon"] == 1.5


def test_dates_are_sent_sorted_and_each_gets_its_cells(
    fake: FakeCoordinator, bank_key: PrivateKey, identity: Identity
) -> None:
    with _client(fake, bank_key, identity) as client:
        result = client.cohort_statistics(
            "tax", group_by="chain", dates=["2026-11-30", "2026-10-31", "2026-11-30"]
        )
    assert fake.queries[0].dates == ("2026-10-31", "2026-11-30")
    assert [(c.date, c.group["chain"]) for c in result.cells] == [
        (day, chain) for day in ("2026-10-31", "2026-11-30") for chain in ("yrd", "prd", "bth")
    ]
