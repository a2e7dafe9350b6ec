"""The layout and packing: data-independent sizes, exact round trips at the slot limits."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from creditshare.crypto import PrivateKey
from creditshare.departments import Record, get_department
from creditshare.errors import InvalidInputError
from creditshare.identity import make_uscc
from creditshare.statistics import (
    MAX_ADDITIONS,
    Catalogue,
    CellKey,
    CohortQuery,
    Cube,
    CubeBuilder,
    Layout,
    release,
)

MARKET = get_department("market")
CATALOGUE = Catalogue.of(MARKET)


def _query(**changes: Any) -> CohortQuery:
    fields: dict[str, Any] = {
        "department": "market",
        "chains": ("prd", "yrd"),
        "group_by": ("chain", "industry"),
        "measures": (
            "count",
            "sum:registered_capital",
            "mean:years_operating",
            "distribution:age_band",
        ),
        "dates": ("2026-10-31", "2026-11-30"),
        "epsilon": 2.0,
        "min_cell": 3,
        "key_fingerprint": "ab" * 16,
        "catalogue_digest": CATALOGUE.digest,
        "request_id": "cd" * 16,
        "regulator": "pboc",
        "time": datetime(2026, 12, 1, tzinfo=UTC),
    }
    return CohortQuery(**(fields | changes))


def _cube(n: int, seed: int) -> Cube:
    rng = random.Random(seed)
    builder = CubeBuilder(CATALOGUE, MARKET)
    for i in range(n):
        record: Record = {
            "registered_capital": rng.uniform(0, 5e8),
            "years_operating": rng.uniform(0, 60),
            "administrative_penalties": rng.randint(0, 9),
            "abnormal_operations": rng.randint(0, 1),
            "industry": rng.choice(["trade", "manufacturing", "agriculture"]),
        }
        builder.add(make_uscc("9", "1", "320101", f"MA{i:06d}").code, record)
    return builder.finish()


def test_cells_come_from_the_query_and_catalogue_alone(bank_key: PrivateKey) -> None:
    layout = Layout.for_query(_query(), CATALOGUE, bank_key.public_key, 3)
    industries = CATALOGUE.dimension("industry").levels
    assert len(layout.cells) == 2 * 3 * len(industries)
    assert layout.cells[0] == CellKey("2026-10-31", (("chain", "yrd"), ("industry", industries[0])))
    assert layout.cells[1] == CellKey("2026-10-31", (("chain", "yrd"), ("industry", industries[1])))
    # count, withheld, one sum per summed column, per age band its count and its flag
    assert layout.values_per_cell == 2 + 2 + 2 * len(CATALOGUE.dimension("age_band").levels)
    # The slot width (hence every size) does not depend on how many nodes answer.
    others = [Layout.for_query(_query(), CATALOGUE, bank_key.public_key, a) for a in (1, 64)]
    assert {(o.slot.slot_bits, o.slot.slots, o.ciphertexts) for o in others} == {
        (layout.slot.slot_bits, layout.slot.slots, layout.ciphertexts)
    }


def test_answer_size_is_independent_of_the_data(bank_key: PrivateKey) -> None:
    query = _query()
    layout = Layout.for_query(query, CATALOGUE, bank_key.public_key, 2)
    answers: dict[str, list[Cube | None]] = {
        "none": [None, None],
        "empty": [_cube(0, 1), _cube(0, 1)],
        "small": [None, _cube(5, 2)],
        "large": [_cube(2000, 3), _cube(1500, 4)],
    }
    sizes = set()
    for cubes in answers.values():
        for chain in ("yrd", "prd"):
            values = release(cubes, query, CATALOGUE, min_cell=3, chain=chain)
            plaintexts = layout.pack(values)
            ciphertexts = [bank_key.public_key.raw_encrypt(p) for p in plaintexts]
            sizes.add(
                (
                    len(values),
                    len(plaintexts),
                    tuple(
                        len(c.to_bytes(bank_key.public_key.ciphertext_length, "big"))
                        for c in ciphertexts
                    ),
                )
            )
    assert len(sizes) == 1
    assert next(iter(sizes))[1] == layout.ciphertexts


def test_cells_of_another_chain_are_withheld_without_noise() -> None:
    query = _query()
    values = release([_cube(300, 5), _cube(300, 6)], query, CATALOGUE, min_cell=3, chain="prd")
    bands = len(CATALOGUE.dimension("age_band").levels)
    per_cell = 2 + 2 + 2 * bands
    industries = len(CATALOGUE.dimension("industry").levels)
    for c in range(len(values) // per_cell):
        cell = values[c * per_cell : (c + 1) * per_cell]
        chain = ("yrd", "prd", "bth")[(c // industries) % 3]
        if chain != "prd":
            assert cell == [0, 1, 0, 0] + [0, 1] * bands
    with pytest.raises(InvalidInputError, match="node's chain"):
        release([None, None], query, CATALOGUE, min_cell=3)


def test_packing_round_trips_at_the_slot_limits_with_64_additions(bank_key: PrivateKey) -> None:
    key = bank_key.public_key
    layout = Layout.for_query(_query(), CATALOGUE, key, MAX_ADDITIONS)
    limit = layout.limit
    extremes = [limit, -limit, 0, 1, -1, limit - 1, -(limit - 1)]
    values = [extremes[i % len(extremes)] for i in range(layout.values)]
    packed = layout.pack(values)
    assert all(0 <= p < key.n for p in packed)
    # 64 nodes' answers added (what adding the ciphertexts does to the plaintexts).
    total = [p * MAX_ADDITIONS % key.n for p in packed]
    assert layout.unpack(total) == [v * MAX_ADDITIONS for v in values]
    # Mixed signs across nodes cancel exactly.
    negated = layout.pack([-v for v in values])
    assert (
        layout.unpack([(a + b) % key.n for a, b in zip(packed, negated, strict=True)])
        == [0] * layout.values
    )
    # Real encryption of the extremes decrypts to them.
    ciphertext = key.raw_encrypt(packed[0])
    assert layout.unpack([bank_key.raw_decrypt(ciphertext), *packed[1:]]) == values
    with pytest.raises(InvalidInputError, match="limit"):
        layout.pack([limit + 1, *values[1:]])
    with pytest.raises(InvalidInputError, match="values"):
        layout.pack(values[:-1])


def test_a_query_too_large_is_refused_with_its_size(bank_key: PrivateKey) -> None:
    dates = tuple(f"2026-{m:02d}-01" for m in range(1, 13))
    query = _query(
        group_by=("region", "industry", "age_band", "penalties_band"),
        measures=(
            "count",
            "sum:registered_capital",
            "sum:years_operating",
            "distribution:abnormal_operations",
        ),
        dates=dates,
    )
    # 9 regions × 10 industries × 5 × 4 bands = 1800 cells, × 12 dates × 6 values
    with pytest.raises(InvalidInputError, match="values per node"):
        Layout.for_query(query, CATALOGUE, bank_key.public_key, 1)
