"""Sliding-window limits, each keyed so that one party cannot use up another's.

Who spends what: every call counts against its caller (``participant``); a query
counts against the budget of one (enterprise, requester) pair, so one lender
cannot exhaust an enterprise's budget for the others; a recorded refusal counts
against the (requester, enterprise) pair, so nobody can flood an access log;
a failed authentication counts against the key id it named and the client
address it came from. A hit that is followed by a refusal is given back
(``release``), so a refused request spends nothing that belongs to someone else.

``SlidingWindowLimiter`` keeps its windows in this process: exact and free, right
for one coordinator. Behind a load balancer each replica would enforce its own
share, so ``DatabaseWindowLimiter`` keeps the counts in the coordinators' shared
database instead (``rate_limit_store = "database"``): the window is split into 60
buckets, and a hit is one upsert of its bucket plus one sum over the window in one
transaction, so every replica sees every other's hits. The bucket row's lock makes
concurrent hits in one bucket count exactly; the window slides a bucket at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import BigInteger, Column, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, SQLModel

from creditshare.coordinator._settings import CoordinatorSettings
from creditshare.errors import ConfigurationError, RateLimitedError

__all__ = [
    "DatabaseWindowLimiter",
    "Hit",
    "Limiter",
    "Limits",
    "RateLimitBucket",
    "SlidingWindowLimiter",
    "build_limits",
    "hit",
    "pair",
    "peek",
    "release",
]

_BUCKETS = 60
_KEY_LENGTH = 64


@dataclass(frozen=True, slots=True)
class Hit:
    """One counted event, as ``release`` needs it to give the event back."""

    key: str
    at: float  # the event's time (in memory) or its bucket (in the database)


class Limiter(Protocol):
    #: Whether calls do I/O (then async code runs them in a worker thread).
    blocking: bool

    def hit(self, key: str) -> Hit:
        """Count one event for ``key``, or raise RateLimitedError (nothing counted)."""
        ...

    def release(self, hit: Hit) -> None:
        """Give back one event counted by ``hit`` (it was followed by a refusal)."""
        ...

    def peek(self, key: str) -> None:
        """Raise RateLimitedError if ``key`` has reached its limit; counts nothing."""
        ...


async def hit(limiter: Limiter, key: str) -> Hit:
    """``limiter.hit`` without blocking the event loop on a database limiter."""
    if limiter.blocking:
        return await asyncio.to_thread(limiter.hit, key)
    return limiter.hit(key)


async def peek(limiter: Limiter, key: str) -> None:
    if limiter.blocking:
        await asyncio.to_thread(limiter.peek, key)
    else:
        limiter.peek(key)


async def release(limiter: Limiter, *hits: Hit) -> None:
    for one in hits:
        if limiter.blocking:
            await asyncio.to_thread(limiter.release, one)
        else:
            limiter.release(one)


def pair(first: str, second: str) -> str:
    """One limiter key for a pair of parties (ids cannot hold '|')."""
    return f"{first}|{second}"


class RateLimitBucket(SQLModel, table=True):
    """Hits of one key in one slice of a window (``scope`` names the limit)."""

    __tablename__ = "rate_limit_bucket"

    scope: str = Field(primary_key=True, max_length=32)
    key: str = Field(primary_key=True, max_length=64)
    bucket: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hits: int


_TABLE: Any = RateLimitBucket.__table__  # type: ignore[attr-defined]


class SlidingWindowLimiter:
    blocking = False

    def __init__(
        self, limit: int, window_seconds: float, clock: Callable[[], float], what: str
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._what = what
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _current(self, key: str, now: float) -> deque[float]:
        """The key's hits inside the window; RateLimitedError if they reach the limit."""
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self._window:
            hits.popleft()
        if len(hits) >= self._limit:
            retry = max(1, math.ceil(hits[0] + self._window - now))
            raise RateLimitedError(
                f"{self._what}: at most {self._limit} per {self._window:g} s", retry
            )
        return hits

    def hit(self, key: str) -> Hit:
        """Count one event for ``key`` or raise RateLimitedError with a Retry-After."""
        now = self._clock()
        with self._lock:
            self._current(key, now).append(now)
        return Hit(key, now)

    def peek(self, key: str) -> None:
        now = self._clock()
        with self._lock:
            if not self._current(key, now):
                del self._hits[key]

    def release(self, hit: Hit) -> None:
        with self._lock:
            hits = self._hits.get(hit.key)
            if hits is None:
                return
            with contextlib.suppress(ValueError):  # already out of the window
                hits.remove(hit.at)
            if not hits:
                del self._hits[hit.key]


class DatabaseWindowLimiter:
    """The same limit as ``SlidingWindowLimiter``, counted in the shared database.

    ``clock`` is wall-clock seconds (replicas must agree on it, so not a monotonic
    clock); ``scope`` keeps different limits apart in one table. A key longer than
    the column (a pair of ids) is stored as its SHA-256.
    """

    blocking = True

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

    @staticmethod
    def _stored(key: str) -> str:
        if len(key) <= _KEY_LENGTH:
            return key
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    def hit(self, key: str) -> Hit:
        """Count one event for ``key`` or raise RateLimitedError (the hit is then not counted)."""
        stored = self._stored(key)
        now = self._clock()
        current = math.floor(now / self._width)
        oldest = current - _BUCKETS + 1
        t = _TABLE
        upsert = (
            self._insert(t)
            .values(scope=self._scope, key=stored, bucket=current, hits=1)
            .on_conflict_do_update(
                index_elements=[t.c.scope, t.c.key, t.c.bucket], set_={"hits": t.c.hits + 1}
            )
        )
        with self._engine.begin() as conn:  # an exception below rolls the hit back
            conn.execute(upsert)
            self._refuse_over(conn, stored, now, self._limit)
            if random.random() < 0.01:  # now and then, forget buckets out of every window
                conn.execute(delete(t).where((t.c.scope == self._scope) & (t.c.bucket < oldest)))
        return Hit(key, current)

    def peek(self, key: str) -> None:
        with self._engine.connect() as conn:
            self._refuse_over(conn, self._stored(key), self._clock(), self._limit - 1)

    def _refuse_over(self, conn: Connection, stored: str, now: float, allowed: int) -> None:
        """RateLimitedError if the key's hits in the window exceed ``allowed``."""
        t = _TABLE
        oldest = math.floor(now / self._width) - _BUCKETS + 1
        mine = (t.c.scope == self._scope) & (t.c.key == stored) & (t.c.bucket >= oldest)
        total = conn.execute(select(func.coalesce(func.sum(t.c.hits), 0)).where(mine)).scalar_one()
        if total > allowed:
            first = conn.execute(select(func.min(t.c.bucket)).where(mine)).scalar_one()
            retry = max(1, math.ceil((first + _BUCKETS) * self._width - now))
            raise RateLimitedError(
                f"{self._what}: at most {self._limit} per {self._window:g} s", retry
            )

    def release(self, hit: Hit) -> None:
        t = _TABLE
        with self._engine.begin() as conn:
            conn.execute(
                update(t)
                .where(
                    (t.c.scope == self._scope)
                    & (t.c.key == self._stored(hit.key))
                    & (t.c.bucket == int(hit.at))
                    & (t.c.hits > 0)
                )
                .values(hits=t.c.hits - 1)
            )


class KnownAddresses:
    """Client addresses that recently authenticated with each key id (this process).

    A key id over its failure limit is refused to every address except these, so the
    lockout an attacker can aim at a key id stops the attacker, not the key's owner
    (who keeps using it from where it was used before). Bounded, oldest forgotten first.
    """

    def __init__(
        self, clock: Callable[[], float], ttl_seconds: float = 86_400.0, size: int = 10_000
    ) -> None:
        self._clock = clock
        self._ttl = ttl_seconds
        self._size = size
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key_id: str, address: str) -> None:
        with self._lock:
            self._seen[(key_id, address)] = self._clock()
            self._seen.move_to_end((key_id, address))
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)

    def __contains__(self, item: tuple[str, str]) -> bool:
        with self._lock:
            seen = self._seen.get(item)
        return seen is not None and self._clock() - seen < self._ttl


@dataclass(frozen=True, slots=True)
class Limits:
    """Every limit the coordinator enforces, each with its own key (see the module doc)."""

    #: every authenticated call, per participant (training steps aside)
    participant: Limiter
    #: the relayed steps of training jobs, per bureau: a job makes thousands a minute
    training_steps: Limiter
    #: queries, per (enterprise, requester): one lender cannot spend another's budget
    enterprise: Limiter
    #: recorded refusals, per (requester, enterprise): access logs cannot be flooded
    refusals: Limiter
    #: failed authentications, per key id named and per client address
    auth_by_key_id: Limiter
    auth_by_address: Limiter
    #: where each key id was last used successfully (exempt from its key id's lockout)
    known_addresses: KnownAddresses


def build_limits(
    settings: CoordinatorSettings,
    engine: Engine,
    wall_clock: Callable[[], float],
    monotonic: Callable[[], float],
) -> Limits:
    """In this process, or in the database every replica shares (``rate_limit_store``)."""

    def limiter(scope: str, limit: int, window: float, what: str) -> Limiter:
        if settings.rate_limit_store == "database":
            return DatabaseWindowLimiter(engine, scope, limit, window, wall_clock, what)
        return SlidingWindowLimiter(limit, window, monotonic, what)

    return Limits(
        participant=limiter(
            "participant",
            settings.participant_requests_per_minute,
            60.0,
            "participant request rate",
        ),
        training_steps=limiter(
            "training-step",
            settings.training_steps_per_minute,
            60.0,
            "training steps of this bureau",
        ),
        enterprise=limiter(
            "enterprise",
            settings.enterprise_queries_per_day,
            86_400.0,
            "your queries about this enterprise",
        ),
        refusals=limiter(
            "refusal",
            settings.refusals_per_day,
            86_400.0,
            "your refused queries about this enterprise (further ones are not recorded)",
        ),
        auth_by_key_id=limiter(
            "auth-key-id",
            settings.auth_failures_per_key_id_per_minute,
            60.0,
            "failed authentications with this key id",
        ),
        auth_by_address=limiter(
            "auth-address",
            settings.auth_failures_per_address_per_minute,
            60.0,
            "failed authentications from this address",
        ),
        known_addresses=KnownAddresses(monotonic),
    )
