"""Cohort statistics: catalogue, query document, layout, packing, cube, release, decode."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from creditshare.crypto import PrivateKey, SigningKey
from creditshare.departments import Record, get_department
from creditshare.errors import InvalidInputError, InvalidSignatureError
from creditshare.identity import make_uscc
from creditshare.ledger import RECORD_KINDS, QueryRecord, parse_record
from creditshare.signed import SignedCohortQuery, SignedQuery
from creditshare.statistics import (
    LATEST,
    MAX_ADDITIONS,
    Catalogue,
    CohortQuery,
    Cube,
    CubeBuilder,
    Layout,
    decode,
    period_of,
    release,
)

TAX = get_department("tax")
CATALOGUE = Catalogue.of(TAX)
GRADES = ("A", "B", "M", "C", "D")
INDUSTRIES = ("trade", "manufacturing", "services")
PROVINCES = ("31", "32", "44", "11", "50")  # 50 (Chongqing): no chain's, region "other"


def query(**changes: Any) -> CohortQuery:
    fields: dict[str, Any] = {
        "department": "tax",
        "chains": ("bth", "prd", "yrd"),
        "group_by": ("region", "industry"),
        "measures": ("count", "mean:annual_tax_paid", "distribution:tax_credit_grade"),
        "dates": (),
        "epsilon": 1.0,
        "min_cell": 5,
        "key_fingerprint": "ab" * 16,
        "catalogue_digest": CATALOGUE.digest,
        "request_id": "cd" * 16,
        "regulator": "pboc-shanghai",
        "time": datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    }
    return CohortQuery(**(fields | changes))


def records(n: int, seed: int) -> list[tuple[str, Record]]:
    rng = random.Random(seed)
    out: list[tuple[str, Record]] = []
    for i in range(n):
        province = rng.choice(PROVINCES)
        uscc = make_uscc("9", "1", f"{province}0101", f"MA{i:06d}").code
        record: dict[str, float | int | str] = {
            "annual_tax_paid": rng.uniform(0, 2e7),
            "tax_credit_grade": rng.choice(GRADES),
            "months_in_arrears": rng.randint(0, 40),
            "industry": rng.choice(INDUSTRIES),
        }
        out.append((uscc, record))
    return out


def cube_of(rows: list[tuple[str, Record]]) -> Cube:
    builder = CubeBuilder(CATALOGUE, TAX)
    for uscc, record in rows:
        builder.add(uscc, record)
    return builder.finish()


def test_catalogue_round_trips_and_names_chain_and_region_first() -> None:
    again = Catalogue.from_bytes(CATALOGUE.to_bytes())
    assert again == CATALOGUE
    assert again.digest == CATALOGUE.digest and len(CATALOGUE.digest) == 64
    names = [d.name for d in CATALOGUE.dimensions]
    assert names[:2] == ["chain", "region"]
    assert {"industry", "tax_credit_grade"} <= set(names)
    assert "unknown" in CATALOGUE.dimension("industry").levels
    assert [s.column for s in CATALOGUE.sums] == ["annual_tax_paid", "months_in_arrears"]
    # Every department's catalogue is distinct (the digest pins the department too).
    digests = {Catalogue.of(get_department(d)).digest for d in ("tax", "market", "court")}
    assert len(digests) == 3


def test_query_document_round_trips_and_signs_under_its_own_domain() -> None:
    q = query()
    assert CohortQuery.from_document(q.document()) == q
    assert q.document()["epsilon"] == "1"
    key = SigningKey.generate()
    signed = SignedCohortQuery.sign(q.document(), key)
    again = SignedCohortQuery.from_json(signed.to_json())
    again.verify(key.verify_key)
    assert again.query == q and again.requester == "pboc-shanghai"
    # The same signature over the same bytes as another statement type does not verify.
    assert SignedCohortQuery.DOMAIN != SignedQuery.DOMAIN
    with pytest.raises(InvalidSignatureError):
        key.verify_key.verify(signed.signature, SignedQuery.message(signed.document))


def test_period_of() -> None:
    moment = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    assert period_of(moment, "month") == "2026-11"
    assert period_of(moment, "quarter") == "2026-Q4"
    assert period_of(moment, "year") == "2026"
    with pytest.raises(InvalidInputError, match="month, quarter, year"):
        period_of(moment, "week")


def test_cube_round_trips_and_refuses_another_catalogue() -> None:
    cube = cube_of(records(300, 1))
    again = Cube.from_bytes(cube.to_bytes(), CATALOGUE)
    assert again.records == 300
    assert (again.counts == cube.counts).all() and (again.sums == cube.sums).all()
    market = Catalogue.of(get_department("market"))
    with pytest.raises(InvalidInputError, match="another catalogue"):
        Cube.from_bytes(cube.to_bytes(), market)
    with pytest.raises(InvalidInputError, match="wrong length"):
        Cube.from_bytes(cube.to_bytes()[:-8], CATALOGUE)


def test_release_pack_decrypt_decode(bank_key: PrivateKey) -> None:
    rows = records(600, 2)
    # ε_r = 1: an empty cell passes a node's threshold of 10 about once in 10^4 queries.
    q = query(epsilon=3.0)
    layout = Layout.for_query(q, CATALOGUE, bank_key.public_key, 2)
    values = [
        release([cube_of(rows[:300])], q, CATALOGUE, min_cell=10),
        release([cube_of(rows[300:])], q, CATALOGUE, min_cell=10),
    ]
    assert len(values[0]) == layout.values
    ciphertexts = [[bank_key.public_key.raw_encrypt(p) for p in layout.pack(v)] for v in values]
    n2 = bank_key.public_key.n_squared
    summed = [a * b % n2 for a, b in zip(*ciphertexts, strict=True)]
    plain = layout.unpack([bank_key.raw_decrypt(c) for c in summed])
    assert plain == [a + b for a, b in zip(*values, strict=True)]
    result = decode(plain, q, CATALOGUE, nodes=2, confidence=0.9999999)
    assert len(result.cells) == len(layout.cells)
    assert [(c.date, tuple(c.group.items())) for c in result.cells] == [
        (k.date, k.group) for k in layout.cells
    ]
    assert all(c.date == LATEST for c in result.cells)
    rows_out = result.rows()
    assert {r["measure"] for r in rows_out} == set(q.measures)
    shanghai_trade = next(
        c for c in result.cells if c.group == {"region": "31", "industry": "trade"}
    )
    truth = sum(1 for u, r in rows if u[2:4] == "31" and r["industry"] == "trade")
    assert not shanghai_trade.suppressed
    assert abs(shanghai_trade.count.value - truth) <= shanghai_trade.count.bound
    unknown = next(c for c in result.cells if c.group == {"region": "31", "industry": "unknown"})
    assert unknown.suppressed and unknown.withheld_at == 2


def test_layout_additions_bounded(bank_key: PrivateKey) -> None:
    with pytest.raises(InvalidInputError, match="additions"):
        Layout.for_query(query(), CATALOGUE, bank_key.public_key, MAX_ADDITIONS + 1)


def test_a_statistics_ledger_record_round_trips() -> None:
    q = query()
    key = SigningKey.generate()
    signed = SignedCohortQuery.sign(q.document(), key)
    record = QueryRecord(
        kind="statistics",
        query_id=q.request_id,
        time=q.time,
        uscc="",
        requester=q.regulator,
        requester_role="regulator",
        purpose="statistics",
        consent_id="",
        model_id="",
        key_fingerprint=q.key_fingerprint,
        chains=q.chains,
        indicators=(),
        request=signed.to_json(),
    )
    again = parse_record(record.to_bytes())
    assert again == record and "statistics" in RECORD_KINDS
    assert again.request is not None
    assert SignedCohortQuery.from_json(again.request).query.epsilon == 1.0


def test_the_statistics_room_knows_no_transport_or_storage() -> None:
    """crypto, identity, departments, _canonical and errors only: no HTTP, gRPC or SQL,
    and none of the services (node, coordinator, client) it serves."""
    import ast
    from pathlib import Path

    import creditshare.statistics as room

    allowed = {
        "creditshare.crypto",
        "creditshare.identity",
        "creditshare.departments",
        "creditshare._canonical",
        "creditshare.errors",
        "creditshare.statistics",
    }
    for path in Path(room.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                if name.startswith("creditshare"):
                    assert any(name == a or name.startswith(a + ".") for a in allowed), (
                        path.name,
                        name,
                    )
                else:
                    top = name.split(".")[0]
                    assert top not in {"grpc", "fastapi", "httpx", "sqlalchemy", "sqlmodel"}


def test_released_cells_are_the_marginals_in_layout_order(bank_key: PrivateKey) -> None:
    """At ε = 10 the noise is almost always 0: each value must be its cell's true total,
    in the layout's order (group_by in the query's order, not the catalogue's)."""
    rows = records(800, 3)
    q = query(
        group_by=("industry", "region"),
        measures=("count", "distribution:tax_credit_grade"),
        epsilon=10.0,
        min_cell=1,
    )
    layout = Layout.for_query(q, CATALOGUE, bank_key.public_key, 1)
    values = release([cube_of(rows)], q, CATALOGUE, min_cell=1)
    per_cell = layout.values_per_cell
    # Count and flag, then per grade its count and its own withheld flag.
    assert per_cell == 2 + 2 * len(GRADES)
    exact = total = 0
    for c, cell in enumerate(layout.cells):
        group = dict(cell.group)
        members = [
            r
            for u, r in rows
            if r["industry"] == group["industry"]
            and (u[2:4] if u[2:4] != "50" else "other") == group["region"]
        ]
        got = values[c * per_cell : (c + 1) * per_cell]
        if got[1]:  # withheld: its noisy count fell below 1
            assert got == [0, 1] + [0, 1] * len(GRADES) and len(members) <= 2
            continue
        truth = [len(members), 0]
        for grade in GRADES:
            n = sum(1 for r in members if r["tax_credit_grade"] == grade)
            truth.extend((n, 0) if n >= 1 else (0, 1))  # an empty level is withheld
        assert all(abs(a - b) <= 3 for a, b in zip(got, truth, strict=True)), (group, got, truth)
        exact += sum(a == b for a, b in zip(got, truth, strict=True))
        total += len(truth)
    assert exact >= 0.9 * total


def test_a_date_a_node_has_no_snapshot_for_is_withheld_there() -> None:
    q = query(dates=("2026-10-31", "2026-11-30"), group_by=("industry",), min_cell=1)
    rows = records(400, 4)
    cube = cube_of(rows)
    first = release([cube, cube], q, CATALOGUE, min_cell=1)
    second = release([None, cube], q, CATALOGUE, min_cell=1)
    summed = [a + b for a, b in zip(first, second, strict=True)]
    # A confidence this high makes the coverage checks below fail about once in 10^7 runs.
    result = decode(summed, q, CATALOGUE, nodes=2, confidence=0.9999999)
    trade = [c for c in result.cells if c.group == {"industry": "trade"}]
    assert [c.date for c in trade] == ["2026-10-31", "2026-11-30"]
    assert trade[0].withheld_at == 1 and trade[1].withheld_at == 0
    # One node's noise in the first date's bound, two nodes' in the second's.
    assert trade[0].count.bound < trade[1].count.bound
    truth = sum(1 for _, r in rows if r["industry"] == "trade")
    assert abs(trade[0].count.value - truth) <= trade[0].count.bound
    assert abs(trade[1].count.value - 2 * truth) <= trade[1].count.bound
