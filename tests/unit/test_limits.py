"""Limiters give back a refused request's hit and can be asked without counting, in
memory and in the database that replicas share (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from creditshare import migrations
from creditshare.coordinator._db import make_engine
from creditshare.coordinator._limits import (
    DatabaseWindowLimiter,
    Limiter,
    SlidingWindowLimiter,
    pair,
)
from creditshare.errors import RateLimitedError


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, migrate=False)
    migrations.upgrade(engine, "coordinator")
    yield engine
    engine.dispose()


def _limiters(engine: Engine | None, now: list[float]) -> list[Limiter]:
    if engine is None:
        return [SlidingWindowLimiter(2, 60.0, lambda: now[0], "calls")]
    # Two replicas on one database count the same hits.
    return [DatabaseWindowLimiter(engine, "test", 2, 60.0, lambda: now[0], "calls")] * 2


def _exercise(limiters: list[Limiter], now: list[float]) -> None:
    a, b = limiters[0], limiters[-1]
    first = a.hit("k")
    b.hit("k")
    with pytest.raises(RateLimitedError):
        a.peek("k")  # at the limit: the next one would be refused
    with pytest.raises(RateLimitedError):
        b.hit("k")
    b.release(first)  # the first was followed by a refusal: given back
    a.peek("k")
    a.hit("k")
    with pytest.raises(RateLimitedError) as refused:
        b.hit("k")
    assert 1 <= refused.value.retry_after <= 60
    for _ in range(5):
        a.peek("other")  # peeking counts nothing
    a.hit("other")
    # A pair of long ids is one key of its own (stored hashed in the database).
    long_pair = pair("x" * 64, "91100000100003962T")
    a.hit(long_pair)
    a.hit(long_pair)
    with pytest.raises(RateLimitedError):
        a.hit(long_pair)
    a.hit(pair("x" * 64, "91110000600037341L"))
    now[0] += 61
    a.hit("k")  # the window slid past everything
    a.release(first)  # giving back a hit already out of the window changes nothing
    a.hit("k")
    with pytest.raises(RateLimitedError):
        a.hit("k")


def test_in_memory() -> None:
    now = [1000.0]
    _exercise(_limiters(None, now), now)


def test_in_the_database(engine: Engine) -> None:
    now = [1_800_000_000.0]
    _exercise(_limiters(engine, now), now)
