"""The coordinator's statistics path against hand-written nodes: what it checks, records,
adds and names.

Each fake node is a real gRPC server speaking ``CohortStatistics``; it publishes the tax
catalogue and answers a cohort query the way the contract says a node does (exactly
``Layout.ciphertexts`` ciphertexts under the regulator's key, for the query in the
receipt's record), or misbehaves in one way a test chooses. The regulator's key is real
(2048-bit Paillier), so the sums are decrypted and checked value by value.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient

from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import init_log_key
from creditshare.crypto import Ciphertext, PrivateKey, PublicKey, SigningKey
from creditshare.departments import get_department
from creditshare.ledger import parse_record
from creditshare.proto import privacy_budget_metadata, statistics_pb2, statistics_pb2_grpc
from creditshare.signed import RECORD_TIME_WINDOW, SignedCohortQuery
from creditshare.statistics import Catalogue, CohortQuery, Layout

from .._authority import authority
from .._pki import make_credential

REGULATOR = "pboc-sh"
CHAINS = ("bth", "prd", "yrd")
BUDGET_WORDS = "privacy budget for regulator pboc-sh in 2026-12 would be exceeded: spent 9.5 of 10"
POLICY_WORDS = "the statistics query asks for epsilon 5; this node answers at most 2 per query"


@dataclass
class FakeStatisticsNode(statistics_pb2_grpc.CohortStatisticsServicer):
    """One department node's statistics service; ``mode`` picks how it answers."""

    node_id: str
    chain: str
    mode: str = "honest"
    #: Every value this node releases (so sums are easy to check).
    value: int = 1
    #: The records of the receipts it was handed.
    records: list[Any] = field(default_factory=list)

    def catalogue(self) -> Catalogue:
        catalogue = Catalogue.of(get_department("tax"))
        if self.mode == "other_catalogue":
            first = catalogue.sums[0]
            other = type(first)(first.column, first.lower, first.upper * 2, first.unit)
            catalogue = Catalogue(catalogue.department, catalogue.dimensions, (other,))
        return catalogue

    def Catalogue(  # noqa: N802 - gRPC method name
        self, request: Any, context: grpc.ServicerContext
    ) -> statistics_pb2.CatalogueResponse:
        data = self.catalogue().to_bytes()
        return statistics_pb2.CatalogueResponse(
            node_id=self.node_id,
            department="tax",
            chain=self.chain,
            catalogue=data,
            digest=self.catalogue().digest,
        )

    def Cohort(  # noqa: N802
        self, request: statistics_pb2.CohortRequest, context: grpc.ServicerContext
    ) -> statistics_pb2.CohortResponse:
        record = parse_record(request.receipt.leaf_data)
        self.records.append(record)
        if self.mode == "refuse_budget":  # as node/_service.guarded refuses for budget
            context.set_trailing_metadata(privacy_budget_metadata())
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, BUDGET_WORDS)
        if self.mode == "refuse_budget_tersely":  # the metadata decides, not the words
            context.set_trailing_metadata(privacy_budget_metadata())
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "no")
        if self.mode == "refuse_policy":  # as a node refuses an ε over its per-query cap
            context.abort(grpc.StatusCode.PERMISSION_DENIED, POLICY_WORDS)
        if self.mode == "busy":
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the node is full; try later")
        if self.mode == "busy_saying_budget":  # the words of a refusal, not its metadata
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, BUDGET_WORDS)
        assert record.request is not None
        query = CohortQuery.from_document(record.request["document"])
        key = PublicKey.from_bytes(request.public_key.n)
        layout = Layout.for_query(query, self.catalogue(), key, request.additions)
        plaintexts = layout.pack([self.value] * layout.values)
        ciphertexts = [Ciphertext(key, key.raw_encrypt(p)).to_bytes() for p in plaintexts]
        if self.mode == "short":
            ciphertexts = ciphertexts[:-1]
        if self.mode == "garbage":
            ciphertexts[0] = bytes(len(ciphertexts[0]))
        node_id = "someone-else" if self.mode == "spoofed" else self.node_id
        return statistics_pb2.CohortResponse(node_id=node_id, ciphertexts=ciphertexts)


@contextmanager
def _serving(servicer: FakeStatisticsNode) -> Iterator[int]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    statistics_pb2_grpc.add_CohortStatisticsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


@dataclass
class Setup:
    client: TestClient
    services: Any
    nodes: dict[str, FakeStatisticsNode]
    signing: SigningKey
    key: PrivateKey
    headers: dict[str, str]


@pytest.fixture(scope="module")
def regulator_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture
def setup(tmp_path: Path, regulator_key: PrivateKey) -> Iterator[Setup]:
    nodes = {f"{c}-tax": FakeStatisticsNode(f"{c}-tax", c) for c in CHAINS}
    with ExitStack() as stack:
        ports = {n: stack.enter_context(_serving(s)) for n, s in nodes.items()}
        init_log_key(tmp_path / "log.pem")
        settings = CoordinatorSettings(
            database_url=f"sqlite:///{tmp_path / 'c.db'}",
            log_signing_key_file=tmp_path / "log.pem",
            allow_insecure=True,
            node_deadline_seconds=10,
            node_probe_interval_seconds=0,
            nodes=[
                {
                    "id": n,
                    "chain": s.chain,
                    "department": "tax",
                    "address": f"127.0.0.1:{ports[n]}",
                }
                for n, s in nodes.items()
            ],
        )
        app = create_app(settings)
        client = stack.enter_context(TestClient(app))
        services = app.state.services
        regulator = services.participants.register(REGULATOR, "regulator", "PBoC Shanghai")
        api_key = services.participants.issue_key(REGULATOR).api_key
        signing, credential = make_credential(authority().ca_dir, tmp_path, REGULATOR, "regulator")
        services.credentials.add(regulator, credential, None)
        headers = {"Authorization": f"Bearer {api_key}"}
        registered = client.post(
            "/v1/paillier-keys",
            json={"public_key": regulator_key.public_key.to_text()},
            headers=headers,
        )
        assert registered.status_code == 201, registered.text
        yield Setup(client, services, nodes, signing, regulator_key, headers)


def _digest(setup: Setup) -> str:
    answer = setup.client.get(
        "/v1/statistics/catalogue", params={"department": "tax"}, headers=setup.headers
    )
    assert answer.status_code == 200, answer.text
    digest: str = answer.json()["digest"]
    return digest


def _query(setup: Setup, **changes: Any) -> CohortQuery:
    fields: dict[str, Any] = {
        "department": "tax",
        "chains": CHAINS,
        "group_by": ("chain",),
        "measures": ("count",),
        "dates": (),
        "epsilon": 1.0,
        "min_cell": 10,
        "key_fingerprint": setup.key.public_key.fingerprint(),
        "catalogue_digest": _digest(setup),
        "request_id": secrets.token_hex(16),
        "regulator": REGULATOR,
        "time": datetime.now(UTC).replace(microsecond=0),
    }
    return CohortQuery(**(fields | changes))


def _post(setup: Setup, query: CohortQuery, signing: SigningKey | None = None) -> Any:
    signed = SignedCohortQuery.sign(query.document(), signing or setup.signing)
    return setup.client.post(
        "/v1/statistics", json={"request": signed.to_json()}, headers=setup.headers
    )


def _ledger_size(setup: Setup) -> int:
    return int(setup.services.ledger.size())


def _sums(setup: Setup, query: CohortQuery, body: dict[str, Any]) -> list[int]:
    catalogue = setup.nodes["yrd-tax"].catalogue()
    layout = Layout.for_query(query, catalogue, setup.key.public_key, len(setup.nodes))
    plaintexts = [
        setup.key.raw_decrypt(Ciphertext.from_text(setup.key.public_key, c).value)
        for c in body["ciphertexts"]
    ]
    return layout.unpack(plaintexts)


def test_the_catalogue_is_the_departments_with_its_digest_and_nodes(setup: Setup) -> None:
    answer = setup.client.get(
        "/v1/statistics/catalogue", params={"department": "tax"}, headers=setup.headers
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = Catalogue.of(get_department("tax"))
    assert body["digest"] == expected.digest
    assert Catalogue.from_document(body["catalogue"]) == expected
    assert body["nodes"] == ["bth-tax", "prd-tax", "yrd-tax"]
    unknown = setup.client.get(
        "/v1/statistics/catalogue", params={"department": "weather"}, headers=setup.headers
    )
    assert unknown.status_code == 404
    assert "weather" in unknown.json()["detail"]


def test_nodes_publishing_different_catalogues_are_a_502_naming_them(setup: Setup) -> None:
    setup.nodes["prd-tax"].mode = "other_catalogue"
    answer = setup.client.get(
        "/v1/statistics/catalogue", params={"department": "tax"}, headers=setup.headers
    )
    assert answer.status_code == 502, answer.text
    assert answer.json()["node"] == "prd-tax"
    assert "different statistics catalogues" in answer.json()["detail"]


def test_a_query_is_recorded_then_every_node_asked_and_the_sums_add_up(setup: Setup) -> None:
    setup.nodes["yrd-tax"].value = 5
    query = _query(setup)
    before = _ledger_size(setup)
    answer = _post(setup, query)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["query_id"] == query.request_id
    assert body["additions"] == 3
    assert [(n["node_id"], n["status"]) for n in body["nodes"]] == [
        ("bth-tax", "ok"),
        ("prd-tax", "ok"),
        ("yrd-tax", "ok"),
    ]
    # Every value is the three nodes' values added: 1 + 1 + 5.
    values = _sums(setup, query, body)
    assert values and set(values) == {7}
    # The record came first, and is what every node was handed: kind statistics, the
    # regulator's signed query verbatim, no enterprise.
    assert body["ledger_index"] == before
    record = body["receipt"]["record"]
    assert record["kind"] == "statistics"
    assert record["purpose"] == "statistics"
    assert record["requester_role"] == "regulator"
    assert record["uscc"] == "" and record["consent_id"] == ""
    assert record["request"]["document"] == query.document()
    for node in setup.nodes.values():
        assert [r.query_id for r in node.records] == [query.request_id]
        assert node.records[0].kind == "statistics"
    assert _ledger_size(setup) == before + 1


def test_a_query_sent_again_is_a_409_and_asks_no_node_twice(setup: Setup) -> None:
    query = _query(setup)
    assert _post(setup, query).status_code == 200
    size = _ledger_size(setup)
    again = _post(setup, query)
    assert again.status_code == 409, again.text
    assert again.json()["field"] == "request_id"
    assert _ledger_size(setup) == size
    for node in setup.nodes.values():
        assert len(node.records) == 1


def test_a_node_refusing_for_budget_is_named_recorded_and_left_out(setup: Setup) -> None:
    setup.nodes["prd-tax"].mode = "refuse_budget"
    query = _query(setup)
    before = _ledger_size(setup)
    answer = _post(setup, query)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["additions"] == 2
    statuses = {n["node_id"]: (n["status"], n["reason"]) for n in body["nodes"]}
    assert statuses["prd-tax"] == ("refused", BUDGET_WORDS)
    assert statuses["yrd-tax"][0] == statuses["bth-tax"][0] == "ok"
    assert set(_sums(setup, query, body)) == {2}
    # The statistics record, then a refusal naming the node.
    assert _ledger_size(setup) == before + 2
    refusal = parse_record(setup.services.ledger.receipt(before + 1).data)
    assert refusal.kind == "refusal" and refusal.query_id == query.request_id
    assert refusal.purpose == "statistics"
    assert refusal.reason == f"privacy budget: 1 of 3 nodes asked refused (prd-tax): {BUDGET_WORDS}"


def test_the_refusal_metadata_not_the_words_makes_a_budget_refusal(setup: Setup) -> None:
    setup.nodes["prd-tax"].mode = "refuse_budget_tersely"
    answer = _post(setup, _query(setup))
    assert answer.status_code == 200, answer.text
    statuses = {n["node_id"]: (n["status"], n["reason"]) for n in answer.json()["nodes"]}
    assert statuses["prd-tax"] == ("refused", "no")


def test_every_node_refusing_for_budget_is_a_403_after_the_refusal_record(setup: Setup) -> None:
    for node in setup.nodes.values():
        node.mode = "refuse_budget"
    query = _query(setup)
    before = _ledger_size(setup)
    answer = _post(setup, query)
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["title"] == "Privacy budget exhausted"
    assert answer.json()["recorded"] is True
    detail = answer.json()["detail"]
    assert "privacy budget exhausted at every node asked" in detail
    assert all(n in detail for n in setup.nodes)
    assert _ledger_size(setup) == before + 2
    refusal = parse_record(setup.services.ledger.receipt(before + 1).data)
    assert refusal.kind == "refusal" and refusal.query_id == query.request_id
    assert refusal.reason.startswith("privacy budget: 3 of 3 nodes asked refused (")
    # The budget read-out counts the query as refused: no node spent anything on it.
    budget = setup.client.get("/v1/statistics/budget", headers=setup.headers).json()
    month = query.time.strftime("%Y-%m")
    assert budget["periods"] == [{"period": month, "queries": 1, "epsilon": 0.0, "refused": 1}]


def test_every_node_refusing_by_its_rules_is_a_403_recorded_and_spends_nothing(
    setup: Setup,
) -> None:
    """Not a 503 "no node answered": the nodes are up and said no (an ε over their cap);
    the refusal is recorded and the budget read-out counts nothing spent."""
    for node in setup.nodes.values():
        node.mode = "refuse_policy"
    query = _query(setup)
    before = _ledger_size(setup)
    answer = _post(setup, query)
    assert answer.status_code == 403, answer.text
    assert answer.json()["title"] == "Forbidden"
    detail = answer.json()["detail"]
    assert "every node asked refused the query" in detail and POLICY_WORDS in detail
    assert _ledger_size(setup) == before + 2
    refusal = parse_record(setup.services.ledger.receipt(before + 1).data)
    assert refusal.kind == "refusal" and refusal.reason.startswith("refused: 3 of 3 nodes")
    budget = setup.client.get("/v1/statistics/budget", headers=setup.headers).json()
    month = query.time.strftime("%Y-%m")
    assert budget["periods"] == [{"period": month, "queries": 1, "epsilon": 0.0, "refused": 1}]


def test_a_budget_refusal_beside_policy_refusals_is_the_budgets_403(setup: Setup) -> None:
    modes = iter(["refuse_policy", "refuse_budget", "refuse_policy"])
    for node in setup.nodes.values():
        node.mode = next(modes)
    answer = _post(setup, _query(setup))
    assert answer.status_code == 403, answer.text
    assert answer.json()["title"] == "Privacy budget exhausted"
    assert BUDGET_WORDS in answer.json()["detail"]  # the words saying what is left


@pytest.mark.parametrize("mode", ["busy", "busy_saying_budget"])
def test_a_busy_node_is_a_failure_not_a_budget_refusal(setup: Setup, mode: str) -> None:
    setup.nodes["bth-tax"].mode = mode
    before = _ledger_size(setup)
    answer = _post(setup, _query(setup))
    assert answer.status_code == 200, answer.text
    statuses = {n["node_id"]: n["status"] for n in answer.json()["nodes"]}
    assert statuses["bth-tax"] == "failed"
    assert _ledger_size(setup) == before + 1  # no refusal record


def test_every_node_busy_is_a_503_not_a_budget_refusal(setup: Setup) -> None:
    for node in setup.nodes.values():
        node.mode = "busy_saying_budget"
    before = _ledger_size(setup)
    answer = _post(setup, _query(setup))
    assert answer.status_code == 503, answer.text
    assert _ledger_size(setup) == before + 1  # the statistics record; no refusal


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("short", "ciphertexts, but the query's layout has"),
        ("garbage", "ciphertext 0"),
        ("spoofed", "claims to come from node"),
    ],
)
def test_an_answer_that_does_not_check_is_named_and_not_added(
    setup: Setup, mode: str, words: str
) -> None:
    setup.nodes["yrd-tax"].mode = mode
    query = _query(setup)
    answer = _post(setup, query)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    failed = [n for n in body["nodes"] if n["status"] == "failed"]
    assert [n["node_id"] for n in failed] == ["yrd-tax"]
    assert words in failed[0]["reason"]
    assert body["additions"] == 2
    assert set(_sums(setup, query, body)) == {2}


def test_refusals_before_anything_is_recorded(setup: Setup, tmp_path: Path) -> None:
    before = _ledger_size(setup)
    stale = _post(setup, _query(setup, catalogue_digest="ab" * 32))
    assert stale.status_code == 422, stale.text
    assert stale.json()["field"] == "catalogue_digest"
    other, _ = make_credential(authority().ca_dir, tmp_path / "x", REGULATOR, "regulator")
    forged = _post(setup, _query(setup), signing=other)
    assert forged.status_code == 403, forged.text
    assert "signature" in forged.json()["detail"]
    someone = _post(setup, _query(setup, regulator="pboc-bj"))
    assert someone.status_code == 403, someone.text
    assert someone.json()["field"] == "regulator"
    unregistered = _post(setup, _query(setup, key_fingerprint="0123456789abcdef"))
    assert unregistered.status_code == 422
    assert unregistered.json()["field"] == "key_fingerprint"
    unknown = _post(setup, _query(setup, group_by=("no_such_dimension",)))
    assert unknown.status_code == 422, unknown.text
    malformed = setup.client.post(
        "/v1/statistics",
        json={"request": {"document": {"type": "cohort"}, "signature": "A" * 86 + "=="}},
        headers=setup.headers,
    )
    assert malformed.status_code == 422, malformed.text
    assert _ledger_size(setup) == before
    for node in setup.nodes.values():
        assert node.records == []


def test_only_a_regulator_may_ask(setup: Setup) -> None:
    services = setup.services
    for role in ("bank", "bureau", "enterprise", "department", "operator"):
        participant_id = f"a-{role}"
        uscc = "91350100M000100Y43" if role == "enterprise" else None
        signing = authority().enterprise(uscc)[0].verify_key.to_text() if uscc else None
        services.participants.register(
            participant_id, role, role.title(), uscc=uscc, signing_key=signing
        )
        key = services.participants.issue_key(participant_id).api_key
        headers = {"Authorization": f"Bearer {key}"}
        for method, path in (
            ("GET", "/v1/statistics/catalogue?department=tax"),
            ("GET", "/v1/statistics/budget"),
            ("POST", "/v1/statistics"),
        ):
            answer = setup.client.request(method, path, json={}, headers=headers)
            assert answer.status_code == 403, (role, path, answer.text)
            assert "allowed: regulator" in answer.json()["detail"]


def test_the_budget_adds_the_recorded_epsilons_per_period(setup: Setup) -> None:
    setup.nodes["prd-tax"].mode = "refuse_budget"  # some refused: the query still counts
    for epsilon in (0.25, 1.5):
        assert _post(setup, _query(setup, epsilon=epsilon)).status_code == 200
    month = datetime.now(UTC).strftime("%Y-%m")
    budget = setup.client.get("/v1/statistics/budget", headers=setup.headers)
    assert budget.status_code == 200, budget.text
    body = budget.json()
    assert body["regulator"] == REGULATOR and body["period"] == "month"
    assert body["periods"] == [{"period": month, "queries": 2, "epsilon": 1.75, "refused": 0}]
    yearly = setup.client.get("/v1/statistics/budget?period=year", headers=setup.headers)
    assert yearly.json()["periods"][0]["period"] == month[:4]
    wrong = setup.client.get("/v1/statistics/budget?period=week", headers=setup.headers)
    assert wrong.status_code == 422


@pytest.mark.parametrize("seconds", [-90, 90])
def test_a_query_signed_outside_the_nodes_window_is_refused_before_recording(
    setup: Setup, seconds: int
) -> None:
    # Within the coordinator's request_max_skew_seconds (120), outside the nodes' 60 s:
    # recorded, every node would refuse the record. Refused here instead, nothing spent.
    before = _ledger_size(setup)
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
    answer = _post(setup, _query(setup, time=when))
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["field"] == "time"
    assert "at most 60 s" in problem["detail"]
    assert _ledger_size(setup) == before
    assert all(node.records == [] for node in setup.nodes.values())
    # The same query signed now goes through.
    assert _post(setup, _query(setup)).status_code == 200


def test_the_record_time_window_is_the_nodes(setup: Setup) -> None:
    # One window: the node's check and the coordinator's refusal must not drift apart.
    from creditshare.node import _authority

    assert RECORD_TIME_WINDOW == _authority._SKEW


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # as Prometheus writes
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} in /metrics")


def test_statistics_queries_are_counted_by_outcome(setup: Setup) -> None:
    assert _post(setup, _query(setup)).status_code == 200
    setup.nodes["prd-tax"].mode = "refuse_budget"
    assert _post(setup, _query(setup)).status_code == 200
    for node in setup.nodes.values():
        node.mode = "refuse_budget"
    assert _post(setup, _query(setup)).status_code == 403
    for node in setup.nodes.values():
        node.mode = "busy"
    assert _post(setup, _query(setup)).status_code == 503
    assert _post(setup, _query(setup, catalogue_digest="ab" * 32)).status_code == 422
    text = setup.client.get("/metrics").text
    name = "creditshare_statistics_queries_total"
    counts = {
        outcome: _metric(text, name, outcome=outcome)
        for outcome in ("answered", "partial", "refused", "unanswered", "rejected", "error")
    }
    assert counts == {
        "answered": 1,
        "partial": 1,
        "refused": 1,
        "unanswered": 1,
        "rejected": 1,
        "error": 0,
    }
    left_out = "creditshare_node_failures_total"
    assert _metric(text, left_out, node="prd-tax", reason="privacy_budget") == 2
    assert _metric(text, left_out, node="yrd-tax", reason="privacy_budget") == 1
    assert _metric(text, left_out, node="yrd-tax", reason="resource_exhausted") == 1
    calls = "creditshare_node_calls_total"
    assert _metric(text, calls, node="yrd-tax", method="Cohort", code="ok") == 2
