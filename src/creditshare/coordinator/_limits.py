"""Sliding-window limits: per participant (all calls) and per enterprise (queries).

Windows are kept in this process. With several coordinator replicas each
replica enforces its own share; a shared limit belongs in the database and
comes with the replica work.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable

from creditshare.errors import RateLimitedError

__all__ = ["SlidingWindowLimiter"]


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
