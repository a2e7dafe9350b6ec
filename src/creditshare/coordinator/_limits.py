"""Sliding-window limits: per participant (all calls) and per enterprise (queries).

``SlidingWindowLimiter`` keeps its windows in this process: exact and free, right
for one coordinator. Behind a load balancer each replica would enforce its own
share, so ``DatabaseWindowLimiter`` keeps the counts in the coordinators' shared
database instead (``rate_limit_store = "database"``): the window is split into 60
buckets, and a hit is one upsert of its bucket plus one sum over the window in one
transaction, so every replica sees every other's hits. The bucket row's lock makes
concurrent hits in one bucket count exactly; the window slides a bucket at a time.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import BigInteger, Column, delete, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from creditshare.errors import ConfigurationError, RateLimitedError

__all__ = ["DatabaseWindowLimiter", "Limiter", "RateLimitBucket", "SlidingWindowLimiter"]

_BUCKETS = 60


class Limiter(Protocol):
    def hit(self, key: str) -> None: ...


class RateLimitBucket(SQLModel, table=True):
    """Hits of one key in one slice of a window (``scope`` names the limit)."""

    __tablename__ = "rate_limit_bucket"

    scope: str = Field(primary_key=True, max_length=32)
    key: str = Field(primary_key=True, max_length=64)
    bucket: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hits: int


_TABLE: Any = RateLimitBucket.__table__  # type: ignore[attr-defined]


class SlidingWindowLimiter:
    def __init__(
        self, limit: int, window_seconds: float, clock: Callable[[], float], what: str
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._what = what
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> None:
        """Count one event for ``key`` or raise RateLimitedError with a Retry-After."""
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self._window:
                hits.popleft()
            if len(hits) >= self._limit:
                retry = max(1, math.ceil(hits[0] + self._window - now))
                raise RateLimitedError(
                    f"{self._what}: at most {self._limit} per {self._window:g} s", retry
                )
            hits.append(now)


class DatabaseWindowLimiter:
    """The same limit as ``SlidingWindowLimiter``, counted in the shared database.

    ``clock`` is wall-clock seconds (replicas must agree on it, so not a monotonic
    clock); ``scope`` keeps different limits apart in one table.
    """

    def __init__(
        self,
        engine: Engine,
        scope: str,
        limit: int,
        window_seconds: float,
        clock: Callable[[], float],
        what: str,
    ) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"database rate limits need SQLite or PostgreSQL, not {engine.dialect.name}"
            )
        self._engine = engine
        self._scope = scope
        self._limit = limit
        self._window = window_seconds
        self._width = window_seconds / _BUCKETS
        self._clock = clock
        self._what = what
        self._insert = postgresql_insert if engine.dialect.name == "postgresql" else sqlite_insert

    def hit(self, key: str) -> None:
        """Count one event for ``key`` or raise RateLimitedError (the hit is then not counted)."""
        now = self._clock()
        current = math.floor(now / self._width)
        oldest = current - _BUCKETS + 1
        t = _TABLE
        upsert = (
            self._insert(t)
            .values(scope=self._scope, key=key, bucket=current, hits=1)
            .on_conflict_do_update(
                index_elements=[t.c.scope, t.c.key, t.c.bucket], set_={"hits": t.c.hits + 1}
            )
        )
        mine = (t.c.scope == self._scope) & (t.c.key == key)
        with self._engine.begin() as conn:  # an exception below rolls the hit back
            conn.execute(upsert)
            total = conn.execute(
                select(func.coalesce(func.sum(t.c.hits), 0)).where(mine & (t.c.bucket >= oldest))
            ).scalar_one()
            if total > self._limit:
                first = conn.execute(
                    select(func.min(t.c.bucket)).where(mine & (t.c.bucket >= oldest))
                ).scalar_one()
                retry = max(1, math.ceil((first + _BUCKETS) * self._width - now))
                raise RateLimitedError(
                    f"{self._what}: at most {self._limit} per {self._window:g} s", retry
                )
            if random.random() < 0.01:  # now and then, forget buckets out of every window
                conn.execute(delete(t).where((t.c.scope == self._scope) & (t.c.bucket < oldest)))
