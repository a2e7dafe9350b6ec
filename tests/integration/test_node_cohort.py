"""A real data node's CohortStatistics over gRPC (SQLite and PostgreSQL).

A certified regulator's signed cohort query, recorded in the ledger, is answered with
exactly ``Layout.ciphertexts`` ciphertexts under the regulator's key that decrypt to
figures near the plaintext ones computed from the raw file; anything else is refused
before a figure is computed and spends nothing: a bank's or bureau's signature, a record
that does not say what the regulator signed, a query for another department or
catalogue, a query past the budget (RESOURCE_EXHAUSTED, logged), a replayed receipt.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from creditshare.cli import app
from creditshare.crypto import Ciphertext, PrivateKey, PublicKey, SigningKey
from creditshare.ledger import Ledger, LogSigner, MemoryLedgerStorage, QueryRecord
from creditshare.node import NodeSettings, build_server
from creditshare.node._authority_store import RefusalLog
from creditshare.node._privacy_budget import PrivacyBudget
from creditshare.node._records import RECORDS
from creditshare.node._stats_tables import CUBES
from creditshare.node._storage import make_engine
from creditshare.node._trust import AccessLog
from creditshare.proto import node_pb2, node_pb2_grpc, statistics_pb2, statistics_pb2_grpc
from creditshare.signed import SignedCohortQuery
from creditshare.statistics import (
    REGION_LEVELS,
    Catalogue,
    CohortQuery,
    Layout,
    noise_scales,
)

from .._authority import authority
from .._databases import fresh_postgres_database
from .._pki import make_credential
from .conftest import receipt_message, tax_node

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.node_pb2_grpc import DataNodeAsyncStub
    from creditshare.proto.creditshare.v1.statistics_pb2_grpc import CohortStatisticsAsyncStub

LOG = LogSigner.generate()
LEDGER = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))
#: The node's allowance per regulator per month, and its largest ε per query.
ALLOWANCE = 20.0
MAX_EPSILON = 8.0
#: The node's total over all regulators: these tests' many regulators stay within it
#: (``test_fresh_regulators_share_the_nodes_total`` serves the node with a tight one).
TOTAL = 10_000.0


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[NodeSettings]:
    folder = tmp_path_factory.mktemp("cohort-node")
    extra = {
        "stats_epsilon_per_period": ALLOWANCE,
        "stats_epsilon_total_per_period": TOTAL,
        "stats_max_epsilon_per_query": MAX_EPSILON,
        "stats_min_cell": 1,
    }
    if request.param == "sqlite":
        yield tax_node(folder, data_dir, LOG).model_copy(update=extra)
        return
    with fresh_postgres_database() as url:
        yield tax_node(folder, data_dir, LOG, url).model_copy(update=extra)


@dataclass(frozen=True)
class Stubs:
    """One running node: its statistics service, and its data service (Describe)."""

    stats: CohortStatisticsAsyncStub
    node: DataNodeAsyncStub


@contextlib.asynccontextmanager
async def serving(settings: NodeSettings) -> AsyncIterator[Stubs]:
    """A node server on ``settings`` (the module's database, perhaps other stats_*)."""
    server, port = await build_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Stubs(
                statistics_pb2_grpc.CohortStatisticsStub(channel),
                node_pb2_grpc.DataNodeStub(channel),
            )
    finally:
        await server.stop(None)


@pytest.fixture
async def stub(settings: NodeSettings) -> AsyncIterator[Stubs]:
    async with serving(settings) as stubs:
        yield stubs


@dataclass(frozen=True)
class Party:
    """A participant certified by the node's chain CA: its id, signing key, credential."""

    id: str
    key: SigningKey
    credential: bytes


@cache
def party(participant_id: str, role: str) -> Party:
    folder = authority().folder / "cohort-parties"
    folder.mkdir(exist_ok=True)
    key, credential = make_credential(authority().ca_dir, folder, participant_id, role)
    return Party(participant_id, key, credential)


def regulator(name: str) -> Party:
    return party(name, "regulator")


def _query(signer: Party, key: PublicKey, digest: str, **fields: Any) -> CohortQuery:
    base: dict[str, Any] = {
        "department": "tax",
        "chains": ("yrd",),
        "group_by": ("region",),
        "measures": ("count",),
        "dates": (),
        "epsilon": 1.0,
        "min_cell": 1,
        "key_fingerprint": key.fingerprint(),
        "catalogue_digest": digest,
        "request_id": uuid.uuid4().hex,
        "regulator": signer.id,
        "time": datetime.now(UTC).replace(microsecond=0),
    }
    return CohortQuery(**(base | fields))


def _record(query: CohortQuery, signed: dict[str, Any], **overrides: Any) -> QueryRecord:
    """The ledger record an honest coordinator writes for ``signed`` (``overrides``:
    what a dishonest one changes in the record only)."""
    fields: dict[str, Any] = {
        "kind": "statistics",
        "query_id": query.request_id,
        "time": query.time,
        "uscc": "",
        "requester": query.regulator,
        "requester_role": "regulator",
        "purpose": "statistics",
        "consent_id": "",
        "model_id": "",
        "key_fingerprint": query.key_fingerprint,
        "chains": tuple(query.chains),
        "indicators": (),
        "request": signed,
    } | overrides
    return QueryRecord(**fields)


async def _catalogue(stub: Stubs) -> Catalogue:
    reply = await stub.stats.Catalogue(statistics_pb2.CatalogueRequest())
    return Catalogue.from_bytes(reply.catalogue)


async def _request(
    stub: Stubs,
    record: QueryRecord,
    key: PublicKey,
    signer: Party,
    additions: int = 1,
) -> statistics_pb2.CohortRequest:
    logged = LEDGER.append(record.to_bytes(), record.requester)
    trusted = await _trusted_size(stub)
    return statistics_pb2.CohortRequest(
        request_id=record.query_id,
        public_key=node_pb2.PaillierPublicKey(n=key.to_bytes()),
        receipt=receipt_message(logged, trusted, LEDGER),
        credentials=node_pb2.Credentials(
            requester=[signer.credential], revocation_lists=[authority().crl]
        ),
        additions=additions,
    )


async def _trusted_size(stub: Stubs) -> int:
    """The node's trusted tree size, as the coordinator learns it (Describe)."""
    described = await stub.node.Describe(node_pb2.DescribeRequest())
    return int(described.trusted_tree_size)


async def _signed_request(
    stub: Stubs,
    signer: Party,
    key: PublicKey,
    *,
    record_overrides: dict[str, Any] | None = None,
    **fields: Any,
) -> tuple[CohortQuery, statistics_pb2.CohortRequest]:
    catalogue = await _catalogue(stub)
    query = _query(signer, key, catalogue.digest, **fields)
    signed = SignedCohortQuery.sign(query.document(), signer.key).to_json()
    record = _record(query, signed, **(record_overrides or {}))
    return query, await _request(stub, record, key, signer)


def _budget(settings: NodeSettings) -> PrivacyBudget:
    return PrivacyBudget(
        make_engine(settings.database_url), ALLOWANCE, lambda: datetime.now(UTC), total=TOTAL
    )


def _period() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def _renewal() -> str:
    """The first day of the next month (UTC): when this month's allowance renews."""
    now = datetime.now(UTC)
    return f"{now.year + now.month // 12:04d}-{now.month % 12 + 1:02d}-01"


def _refusals(settings: NodeSettings, request_id: str) -> list[tuple[str, str]]:
    log = RefusalLog(make_engine(settings.database_url), lambda: datetime.now(UTC))
    return [(r.status, r.reason) for r in log.entries() if r.request_id == request_id]


def _answered(settings: NodeSettings, request_id: str) -> bool:
    log = AccessLog(make_engine(settings.database_url), lambda: datetime.now(UTC))
    return any(row.query_id == request_id for row in log.entries())


async def _refused(stub: Stubs, request: statistics_pb2.CohortRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.stats.Cohort(request)
    return caught.value


@pytest.fixture(scope="module")
def plaintext(data_dir: Path) -> dict[str, tuple[int, int]]:
    """Per region: (enterprises, their months in arrears clipped to 0..36), from the raw
    file, computed here without the statistics room."""
    figures: dict[str, list[int]] = {level: [0, 0] for level in REGION_LEVELS}
    with (data_dir / "yrd" / "tax.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            province = row["uscc"][2:4]
            region = province if province in REGION_LEVELS else "other"
            months = row["months_in_arrears"].strip()
            figures[region][0] += 1
            figures[region][1] += min(max(round(float(months or 0)), 0), 36)
    return {region: (count, total) for region, (count, total) in figures.items()}


async def test_the_catalogue_is_the_departments_with_its_digest(
    stub: Stubs,
) -> None:
    reply = await stub.stats.Catalogue(statistics_pb2.CatalogueRequest())
    assert (reply.node_id, reply.department, reply.chain) == ("yrd-tax", "tax", "yrd")
    catalogue = Catalogue.from_bytes(reply.catalogue)
    assert reply.digest == catalogue.digest
    assert {"chain", "region", "industry"} <= {d.name for d in catalogue.dimensions}


async def test_a_regulators_query_decrypts_to_figures_near_the_plaintext(
    stub: Stubs,
    settings: NodeSettings,
    bank_key: PrivateKey,
    plaintext: dict[str, tuple[int, int]],
) -> None:
    signer, key = regulator("pboc-sh"), bank_key.public_key
    spent = _budget(settings).spent(signer.id, _period())
    query, request = await _signed_request(
        stub, signer, key, measures=("count", "sum:months_in_arrears"), epsilon=8.0
    )
    reply = await stub.stats.Cohort(request)
    catalogue = await _catalogue(stub)
    layout = Layout.for_query(query, catalogue, key, 1)
    assert reply.node_id == "yrd-tax"
    assert len(reply.ciphertexts) == layout.ciphertexts
    assert {len(c) for c in reply.ciphertexts} == {key.ciphertext_length}
    opened = [
        bank_key.raw_decrypt(Ciphertext.from_bytes(key, blob).value) for blob in reply.ciphertexts
    ]
    values = layout.unpack(opened)
    scales = noise_scales(query, catalogue)
    # e^-40: a figure further than 40 noise scales from the truth is a defect, not noise.
    count_tolerance = 40 * scales["count"]
    sum_tolerance = 40 * scales["sum:months_in_arrears"]
    per = layout.values_per_cell
    assert [cell.group for cell in layout.cells] == [(("region", r),) for r in REGION_LEVELS]
    released = 0
    for i, cell in enumerate(layout.cells):
        count, withheld, total = values[i * per : (i + 1) * per]
        true_count, true_total = plaintext[cell.group[0][1]]
        if withheld:
            assert (count, total) == (0, 0)
            assert true_count < 1 + count_tolerance  # only a near-empty cell is withheld
            continue
        released += 1
        assert abs(count - true_count) <= count_tolerance
        assert abs(total - true_total) <= sum_tolerance
    assert released >= 2  # the file's enterprises sit in the chain's provinces
    assert _answered(settings, query.request_id)
    assert _budget(settings).spent(signer.id, _period()) == spent + 8.0


async def test_a_date_before_the_nodes_first_snapshot_is_withheld_whole(
    stub: Stubs, bank_key: PrivateKey
) -> None:
    """The node imported its only snapshot today: yesterday's cells are all withheld
    (flag 1, every value 0, no noise), today's are released."""
    signer, key = regulator("pboc-xa"), bank_key.public_key
    today = datetime.now(UTC).date()
    dates = ((today - timedelta(days=1)).isoformat(), today.isoformat())
    query, request = await _signed_request(stub, signer, key, dates=dates, epsilon=4.0)
    reply = await stub.stats.Cohort(request)
    layout = Layout.for_query(query, await _catalogue(stub), key, 1)
    assert len(reply.ciphertexts) == layout.ciphertexts
    values = layout.unpack(
        [bank_key.raw_decrypt(Ciphertext.from_bytes(key, c).value) for c in reply.ciphertexts]
    )
    per = layout.values_per_cell
    cells = {
        (cell.date, cell.group): values[i * per : (i + 1) * per]
        for i, cell in enumerate(layout.cells)
    }
    assert {c[0] for c in cells} == set(dates)
    assert all(v == [0, 1] for (day, _), v in cells.items() if day == dates[0])
    assert sum(v[1] == 0 for (day, _), v in cells.items() if day == dates[1]) >= 2


@pytest.mark.parametrize(("participant", "role"), [("bank-9", "bank"), ("bureau-9", "bureau")])
async def test_a_bank_or_bureau_signed_query_is_refused(
    stub: Stubs,
    settings: NodeSettings,
    bank_key: PrivateKey,
    participant: str,
    role: str,
) -> None:
    signer = party(participant, role)
    query, request = await _signed_request(stub, signer, bank_key.public_key)
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"certified as {role}" in (error.details() or "")
    assert not _answered(settings, query.request_id)
    assert _budget(settings).spent(signer.id, _period()) == 0
    assert [s for s, _ in _refusals(settings, query.request_id)] == ["PERMISSION_DENIED"]


def _tamper_document(field: str, value: Any) -> Any:
    def change(signed: dict[str, Any]) -> dict[str, Any]:
        return {**signed, "document": {**signed["document"], field: value}}

    return change


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("epsilon", "not signed by"),
        ("department", "not signed by"),
        ("record key", "public key"),
        ("request key", "public key"),
        ("catalogue digest", "catalogue digest"),
        ("other department", "department"),
        ("too large epsilon", "at most 8 per query"),
        ("record requester role", "requester role"),
        ("record chains", "chains"),
        (
            "record time",
            "time (the record is dated 90 s before the signed time; this node allows at most 60 s)",
        ),
    ],
)
async def test_a_record_that_is_not_what_the_regulator_signed_is_refused(
    stub: Stubs,
    settings: NodeSettings,
    bank_key: PrivateKey,
    case: str,
    expected: str,
) -> None:
    signer, key = regulator("pboc-hz"), bank_key.public_key
    other = PrivateKey.generate(2048).public_key if "key" in case else key
    catalogue = await _catalogue(stub)
    fields: dict[str, Any] = {}
    if case == "catalogue digest":
        fields["catalogue_digest"] = "0" * 64
    if case == "other department":
        fields["department"] = "market"
    if case == "too large epsilon":
        fields["epsilon"] = MAX_EPSILON + 1
    query = _query(signer, key, catalogue.digest, **fields)
    signed = SignedCohortQuery.sign(query.document(), signer.key).to_json()
    overrides: dict[str, Any] = {}
    if case == "epsilon":  # the relay raises the ε after the regulator signed
        signed = _tamper_document("epsilon", "2")(signed)
    if case == "department":
        signed = _tamper_document("department", "market")(signed)
    if case == "record key":  # the relay records (and asks for) its own key
        overrides["key_fingerprint"] = other.fingerprint()
    if case == "record requester role":
        overrides["requester_role"] = "bank"
    if case == "record chains":  # the relay widens the query to another chain
        overrides["chains"] = ("prd", "yrd")
    if case == "record time":  # a record dated 90 s off the signing time (still fresh)
        overrides["time"] = query.time - timedelta(seconds=90)
    record = _record(query, signed, **overrides)
    asked = other if case in ("record key", "request key") else key
    request = await _request(stub, record, asked, signer)
    spent = _budget(settings).spent(signer.id, _period())
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
    assert expected in (error.details() or ""), error.details()
    assert not _answered(settings, query.request_id)
    assert _budget(settings).spent(signer.id, _period()) == spent
    assert [s for s, _ in _refusals(settings, query.request_id)] == ["PERMISSION_DENIED"]


async def test_a_query_past_the_budget_is_refused_spends_nothing_and_is_logged(
    stub: Stubs, settings: NodeSettings, bank_key: PrivateKey
) -> None:
    signer, key = regulator("pboc-gz"), bank_key.public_key
    spent = _budget(settings).spent(signer.id, _period())
    for _ in range(4):
        _, request = await _signed_request(stub, signer, key, epsilon=(ALLOWANCE - spent) / 4)
        await stub.stats.Cohort(request)
    assert _budget(settings).spent(signer.id, _period()) == ALLOWANCE
    query, request = await _signed_request(stub, signer, key, epsilon=0.5)
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    message = (
        f"privacy budget for regulator pboc-gz in {_period()} would be exceeded: "
        f"spent {ALLOWANCE:g} of {ALLOWANCE:g}, asked 0.5; nothing is left in {_period()}; "
        f"the allowance renews on {_renewal()} (UTC)"
    )
    assert error.details() == message
    assert _budget(settings).spent(signer.id, _period()) == ALLOWANCE
    assert not _answered(settings, query.request_id)
    assert _refusals(settings, query.request_id) == [("RESOURCE_EXHAUSTED", message)]
    # Another regulator's allowance is its own.
    _, request = await _signed_request(stub, regulator("pboc-wh"), key, epsilon=0.5)
    assert len((await stub.stats.Cohort(request)).ciphertexts) >= 1
    # The operator sees both.
    budgets = {(b["regulator"], b["period"]): b for b in _operator_view(settings)["budgets"]}
    assert budgets[("pboc-gz", _period())] | {"queries": 4} == {
        "regulator": "pboc-gz",
        "period": _period(),
        "queries": 4,
        "spent": ALLOWANCE,
        "left": 0,
    }
    assert budgets[("pboc-wh", _period())]["left"] == ALLOWANCE - 0.5


def _operator_view(settings: NodeSettings) -> dict[str, Any]:
    """``creditshare node privacy-budget --json`` on this node's database."""
    config = authority().folder / f"cohort-{settings.database_url.split(':')[0]}.toml"
    config.write_text(
        "\n".join(
            f"{name} = {json.dumps(str(getattr(settings, name)))}"
            for name in ("node_id", "department", "chain", "database_url", "log_public_key")
        )
        + f"\nallow_insecure = true\ncredential_ca = {json.dumps(str(settings.credential_ca))}"
        + f"\nstats_epsilon_per_period = {settings.stats_epsilon_per_period}"
        + f"\nstats_epsilon_total_per_period = {settings.stats_epsilon_total_per_period}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["node", "privacy-budget", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    view: dict[str, Any] = json.loads(result.stdout)
    return view


async def test_a_replayed_receipt_is_refused_and_spends_once(
    stub: Stubs, settings: NodeSettings, bank_key: PrivateKey
) -> None:
    signer, key = regulator("pboc-nj"), bank_key.public_key
    _, request = await _signed_request(stub, signer, key, epsilon=0.25)
    await stub.stats.Cohort(request)
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "already used" in (error.details() or "")
    assert _budget(settings).spent(signer.id, _period()) == 0.25


async def test_bad_input_is_invalid_argument_and_spends_nothing(
    stub: Stubs, settings: NodeSettings, bank_key: PrivateKey
) -> None:
    signer, key = regulator("pboc-cd"), bank_key.public_key
    _, request = await _signed_request(stub, signer, key)
    for bad, message in (
        (replace_request(request, additions=0), "additions"),
        (replace_request(request, additions=65), "additions"),
        (replace_request(request, request_id=""), "request_id"),
    ):
        error = await _refused(stub, bad)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (error.details() or "")
    assert _budget(settings).spent(signer.id, _period()) == 0
    await stub.stats.Cohort(request)  # the receipt was not used by the refusals
    assert _budget(settings).spent(signer.id, _period()) == 1.0


def replace_request(
    request: statistics_pb2.CohortRequest, **fields: Any
) -> statistics_pb2.CohortRequest:
    copy = statistics_pb2.CohortRequest()
    copy.CopyFrom(request)
    for name, value in fields.items():
        setattr(copy, name, value)
    return copy


async def test_fresh_regulators_share_the_nodes_total(
    settings: NodeSettings, bank_key: PrivateKey
) -> None:
    """Whoever runs the chain's CA can certify a new regulator identity at will: each
    has its own allowance, but all of them together spend at most the node's total per
    period, refused with RESOURCE_EXHAUSTED naming the node's cap; the operator's view
    shows the node-wide spend."""
    key = bank_key.public_key
    spent_in_all = _budget(settings).spent_in_all(_period())
    tight = settings.model_copy(
        update={
            "stats_epsilon_per_period": 1.0,
            "stats_epsilon_total_per_period": spent_in_all + 1.5,
        }
    )
    async with serving(tight) as stub:
        _, request = await _signed_request(stub, regulator("regulator-1"), key, epsilon=1.0)
        await stub.stats.Cohort(request)
        query, request = await _signed_request(stub, regulator("regulator-2"), key, epsilon=1.0)
        error = await _refused(stub, request)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        message = (
            f"this node's total privacy budget (all regulators together) in {_period()} "
            f"would be exceeded: spent {spent_in_all + 1:g} of {spent_in_all + 1.5:g}, asked 1"
            f"; at most 0.5 is left in {_period()}; the allowance renews on {_renewal()} (UTC)"
        )
        assert error.details() == message
        assert not _answered(settings, query.request_id)
        assert _refusals(settings, query.request_id) == [("RESOURCE_EXHAUSTED", message)]
        _, request = await _signed_request(stub, regulator("regulator-2"), key, epsilon=0.5)
        await stub.stats.Cohort(request)
        _, request = await _signed_request(stub, regulator("regulator-3"), key, epsilon=0.001)
        error = await _refused(stub, request)
        assert "total privacy budget" in (error.details() or "")
    assert _budget(settings).spent_in_all(_period()) == spent_in_all + 1.5
    view = _operator_view(tight)
    assert view["total_allowance"] == spent_in_all + 1.5
    node = {n["period"]: n for n in view["node"]}[_period()]
    assert (node["spent"], node["left"]) == (spent_in_all + 1.5, 0)
    budgets = {(b["regulator"], b["period"]): b for b in view["budgets"]}
    # regulator-2 has 0.5 of its own allowance left, but nothing is left of the node's.
    assert budgets[("regulator-2", _period())]["left"] == 0


async def test_only_the_listed_regulators_may_ask_when_a_list_is_set(
    settings: NodeSettings, bank_key: PrivateKey
) -> None:
    key = bank_key.public_key
    listed = settings.model_copy(update={"stats_regulators": ["pboc-ls"]})
    async with serving(listed) as stub:
        signer = regulator("pboc-new")
        query, request = await _signed_request(stub, signer, key)
        error = await _refused(stub, request)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (error.details() or "").startswith(
            "regulator 'pboc-new' is not among the regulators this node (yrd-tax) answers "
            "statistics queries for (stats_regulators)"
        )
        assert not _answered(settings, query.request_id)
        assert _budget(settings).spent(signer.id, _period()) == 0
        assert [s for s, _ in _refusals(settings, query.request_id)] == ["PERMISSION_DENIED"]
        _, request = await _signed_request(stub, regulator("pboc-ls"), key)
        await stub.stats.Cohort(request)
        assert _budget(settings).spent("pboc-ls", _period()) == 1.0


async def test_a_snapshot_too_large_to_answer_is_refused_before_the_spend(
    stub: Stubs, settings: NodeSettings, bank_key: PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of the node's own state is found before the spend: FAILED_PRECONDITION
    naming the cause, no ε spent, the receipt left unused (not INTERNAL after a spend)."""
    monkeypatch.setattr("creditshare.statistics._release.MAX_NODE_RECORDS", 1)
    monkeypatch.setattr("creditshare.node._statistics.MAX_NODE_RECORDS", 1, raising=False)
    signer, key = regulator("pboc-big"), bank_key.public_key
    query, request = await _signed_request(stub, signer, key)
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    details = error.details() or ""
    assert "more than the 1 records a statistics answer can hold" in details
    assert not re.search(r"holds \d", details)  # no exact, un-noised record count
    assert _budget(settings).spent(signer.id, _period()) == 0
    assert not _answered(settings, query.request_id)
    monkeypatch.undo()
    await stub.stats.Cohort(request)  # the receipt was not used by the refusal
    assert _budget(settings).spent(signer.id, _period()) == 1.0


async def test_a_stale_record_fails_the_cube_before_the_spend(
    stub: Stubs, settings: NodeSettings, bank_key: PrivateKey
) -> None:
    """The latest snapshot's cube is missing and one stored record holds a value the
    catalogue cannot read (imported under an older schema): the lazy build fails, and
    the query is refused with FAILED_PRECONDITION having spent nothing."""
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        uscc, data = conn.execute(select(RECORDS.c.uscc, RECORDS.c.data).limit(1)).one()
        conn.execute(delete(CUBES))
        stale = {**dict(data), "annual_tax_paid": "not a number"}
        conn.execute(update(RECORDS).where(RECORDS.c.uscc == uscc).values(data=stale))
    signer, key = regulator("pboc-old"), bank_key.public_key
    try:
        query, request = await _signed_request(stub, signer, key)
        error = await _refused(stub, request)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert "annual_tax_paid" in (error.details() or "")
        assert "re-imported" in (error.details() or "")
        assert _budget(settings).spent(signer.id, _period()) == 0
        assert not _answered(settings, query.request_id)
    finally:
        with engine.begin() as conn:
            conn.execute(update(RECORDS).where(RECORDS.c.uscc == uscc).values(data=dict(data)))
        engine.dispose()
    await stub.stats.Cohort(request)  # the record re-imported: the cube is built, answered
    assert _budget(settings).spent(signer.id, _period()) == 1.0
