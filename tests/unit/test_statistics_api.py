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
    q = query()
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
    result = decode(plain, q, CATALOGUE, nodes=2)
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
