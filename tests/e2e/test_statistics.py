"""A regulator's cohort statistics on real federations: node processes with their own
data and budgets, the coordinator over HTTP, mutual TLS, 2048-bit Paillier.

Who may ask (a bank and a bureau may not: the coordinator's 403, before anything is
recorded); the nodes' budget (a query past the remaining allowance is refused by every
node, and the refusal is in the ledger); and what the coordinator sees: two federations
whose data differ give it the same traffic, call for call and byte for byte.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI

from creditshare._settings import load_settings
from creditshare.client import CreditShareClient, Identity
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.crypto import Ciphertext, PrivateKey
from creditshare.demo import Federation, FederationLayout
from creditshare.ledger import parse_record
from creditshare.signed import SignedCohortQuery
from creditshare.statistics import Catalogue, CohortQuery, Layout
from creditshare.synth import generate

REGULATOR = "pboc-sh"
CHAINS = ("bth", "prd", "yrd")
#: Each node's allowance in the budget federation: one query of ε = 1 fits, two do not.
ALLOWANCE = 1.5


@dataclass
class Regulator:
    url: str
    api_key: str
    identity: Identity
    key: PrivateKey
    operator_api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def catalogue(self, department: str = "tax") -> dict[str, Any]:
        answer = httpx.get(
            f"{self.url}/v1/statistics/catalogue",
            params={"department": department},
            headers=self.headers,
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def query(self, **changes: Any) -> CohortQuery:
        fields: dict[str, Any] = {
            "department": "tax",
            "chains": CHAINS,
            "group_by": ("chain",),
            "measures": ("count",),
            "dates": (),
            "epsilon": 1.0,
            "min_cell": 5,
            "key_fingerprint": self.key.public_key.fingerprint(),
            "catalogue_digest": self.catalogue()["digest"],
            "request_id": secrets.token_hex(16),
            "regulator": REGULATOR,
            "time": datetime.now(UTC).replace(microsecond=0),
        }
        return CohortQuery(**(fields | changes))

    def post(self, query: CohortQuery, url: str | None = None) -> httpx.Response:
        signed = SignedCohortQuery.sign(query.document(), self.identity.signing_key)
        return httpx.post(
            f"{url or self.url}/v1/statistics",
            json={"request": signed.to_json()},
            headers=self.headers,
            timeout=120,
        )


def _admit_regulator(layout: FederationLayout, key: PrivateKey) -> Regulator:
    """A regulator registered through the public API, its credentials and key on file."""
    url = layout.coordinator_url
    operator_key = layout.bootstrap_operator()
    layout.publish_revocation_lists(operator_key)
    with CreditShareClient(url, api_key=operator_key) as operator:
        issued = operator.register_participant(REGULATOR, "regulator", "PBoC Shanghai")
    identity = layout.identity(REGULATOR, "regulator")
    with CreditShareClient(
        url, api_key=issued["api_key"], identity=identity, private_key=key
    ) as client:
        client.upload_credentials()
        client.register_paillier_key()
    return Regulator(url, str(issued["api_key"]), identity, key, operator_key)


@pytest.fixture(scope="module")
def regulator_key() -> PrivateKey:
    return PrivateKey.generate()


def _tax_federation(root: Path, data_dir: Path, **node_overrides: object) -> FederationLayout:
    """Three chains, one tax node each; no background work that appends to the ledger."""
    layout = FederationLayout.write(
        root,
        data_dir,
        departments=("tax",),
        node_deadline_seconds=30.0,
        coordinator_overrides={"monitoring_interval_seconds": 0},
        node_overrides=node_overrides or None,
    )
    layout.import_data()
    return layout


@pytest.fixture(scope="module")
def budgeted(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, regulator_key: PrivateKey
) -> Iterator[Regulator]:
    layout = _tax_federation(
        tmp_path_factory.mktemp("budgeted"), data_dir, stats_epsilon_per_period=ALLOWANCE
    )
    with Federation(layout):
        yield _admit_regulator(layout, regulator_key)


def test_a_bank_and_a_bureau_cannot_run_a_cohort_query(budgeted: Regulator) -> None:
    size = _ledger_size(budgeted)
    signer = budgeted.identity  # a well-formed, validly signed query
    for participant_id, role in (("bank-9", "bank"), ("bureau-9", "bureau")):
        with CreditShareClient(budgeted.url, api_key=budgeted.operator_api_key) as operator:
            issued = operator.register_participant(participant_id, role, role.title())
        headers = {"Authorization": f"Bearer {issued['api_key']}"}
        # A query in due form, as if the bank had signed it for itself.
        query = budgeted.query(regulator=participant_id)
        signed = SignedCohortQuery.sign(query.document(), signer.signing_key)
        for method, path, body in (
            ("POST", "/v1/statistics", {"request": signed.to_json()}),
            ("GET", "/v1/statistics/catalogue?department=tax", None),
            ("GET", "/v1/statistics/budget", None),
        ):
            answer = httpx.request(
                method, f"{budgeted.url}{path}", json=body, headers=headers, timeout=60
            )
            assert answer.status_code == 403, (role, path, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert "allowed: regulator" in answer.json()["detail"]
    assert _ledger_size(budgeted) == size  # nothing was recorded for them


def _ledger_size(regulator: Regulator) -> int:
    head = httpx.get(f"{regulator.url}/v1/ledger/head", headers=regulator.headers, timeout=30)
    if head.status_code == 404:  # nothing recorded yet
        return 0
    assert head.status_code == 200, head.text
    return int(head.json()["size"])


def _entry(regulator: Regulator, index: int) -> Any:
    answer = httpx.get(
        f"{regulator.url}/v1/ledger/entries/{index}", headers=regulator.headers, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return parse_record(base64.b64decode(answer.json()["leaf_data"]))


def test_a_query_beyond_the_remaining_budget_is_refused_by_the_nodes_and_recorded(
    budgeted: Regulator,
) -> None:
    first = budgeted.query(epsilon=1.0)
    answer = budgeted.post(first)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {n["node_id"]: n["status"] for n in body["nodes"]} == {
        "bth-tax": "ok",
        "prd-tax": "ok",
        "yrd-tax": "ok",
    }
    assert body["additions"] == 3
    # The sums open under the regulator's key, to as many values as the layout has.
    catalogue = Catalogue.from_document(budgeted.catalogue()["catalogue"])
    layout = Layout.for_query(first, catalogue, budgeted.key.public_key, 3)
    plaintexts = [
        budgeted.key.raw_decrypt(Ciphertext.from_text(budgeted.key.public_key, c).value)
        for c in body["ciphertexts"]
    ]
    assert len(layout.unpack(plaintexts)) == layout.values

    # 1 of 1.5 spent at every node: another ε = 1 would exceed it, and every node says so.
    second = budgeted.query(epsilon=1.0)
    refused = budgeted.post(second)
    assert refused.status_code == 403, refused.text
    problem = refused.json()
    assert problem["title"] == "Privacy budget exhausted" and problem["recorded"] is True
    assert "would be exceeded" in problem["detail"]  # the nodes' own words
    for node in ("bth-tax", "prd-tax", "yrd-tax"):
        assert node in problem["detail"]
    # Recorded: the query, then the refusal naming the nodes, both under its id.
    size = _ledger_size(budgeted)
    recorded, refusal = _entry(budgeted, size - 2), _entry(budgeted, size - 1)
    assert (recorded.kind, recorded.query_id) == ("statistics", second.request_id)
    assert (refusal.kind, refusal.query_id) == ("refusal", second.request_id)
    assert refusal.purpose == "statistics" and "yrd-tax" in refusal.reason
    # The ledger's account agrees: two queries, ε = 1 spent, one refused everywhere.
    budget = httpx.get(f"{budgeted.url}/v1/statistics/budget", headers=budgeted.headers)
    month = first.time.strftime("%Y-%m")
    assert budget.json()["periods"] == [
        {"period": month, "queries": 2, "epsilon": 1.0, "refused": 1}
    ]
    # A smaller query still fits what is left (0.5), so the nodes did not spend the refused one.
    assert budgeted.post(budgeted.query(epsilon=0.5)).status_code == 200


class Recorder(grpc.aio.UnaryUnaryClientInterceptor):
    """Every statistics call the coordinator makes: the request it sent, the answer."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: Any,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        response = await call
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        if "CohortStatistics" in name:
            self.calls.append((name.rsplit("/", 1)[-1], request, response))
        return response


def _traffic(recorder: Recorder) -> list[tuple[str, str, int, int, int, int]]:
    """Per statistics call: method, node, bytes sent (the regulator's credentials aside:
    its CA's ECDSA signature is a byte longer or shorter per federation), bytes received,
    ciphertexts received and their widths; sorted."""
    out = []
    for method, request, response in recorder.calls:
        sent = type(request)()
        sent.CopyFrom(request)
        if method == "Cohort":
            sent.ClearField("credentials")
        ciphertexts = list(getattr(response, "ciphertexts", ()))
        widths = {len(c) for c in ciphertexts}
        assert len(widths) <= 1  # every ciphertext at the key's fixed width
        out.append(
            (
                method,
                response.node_id,
                sent.ByteSize(),
                response.ByteSize(),
                len(ciphertexts),
                widths.pop() if widths else 0,
            )
        )
    return sorted(out)


def test_the_coordinators_traffic_is_the_same_whatever_the_data(
    tmp_path: Path,
    regulator_key: PrivateKey,
    serve_app: Callable[[FastAPI], AbstractContextManager[str]],
) -> None:
    profiles = []
    answers = []
    for run, (enterprises, seed) in enumerate([(150, 11), (240, 29)]):
        data = tmp_path / f"data-{run}"
        generate(enterprises, seed, data)
        layout = _tax_federation(tmp_path / f"fed-{run}", data)
        with Federation(layout):
            regulator = _admit_regulator(layout, regulator_key)
            assert layout.coordinator_config is not None
            settings = load_settings(CoordinatorSettings, layout.coordinator_config)
            settings = settings.model_copy(update={"node_probe_interval_seconds": 0})
            recorder = Recorder()
            # A second coordinator replica on the same database, recording its node calls.
            with serve_app(create_app(settings, interceptors=[recorder])) as url:
                query = regulator.query(
                    group_by=("region",),
                    measures=("count",),
                    epsilon=0.5,
                    request_id=f"{run:032x}",
                    time=datetime.now(UTC).replace(microsecond=0),
                )
                answer = regulator.post(query, url)
                assert answer.status_code == 200, answer.text
                profiles.append(_traffic(recorder))
                body = answer.json()
                answers.append(
                    (
                        len(answer.content),
                        body["additions"],
                        [len(c) for c in body["ciphertexts"]],
                        [n["status"] for n in body["nodes"]],
                    )
                )
    # The data differ (150 and 240 enterprises, other seeds), yet the coordinator sent
    # and received the same: as many calls, of the same sizes, as many ciphertexts.
    assert sorted(p[0] for p in profiles[0]) == ["Catalogue"] * 3 + ["Cohort"] * 3
    assert profiles[0] == profiles[1]
    # And the regulator's answer is the same size, with the same number of ciphertexts.
    assert answers[0] == answers[1]
