"""One bounded memory of checks that passed, for the hot paths that repeat a check.

A node checks the same tree head's signature for every answer of a query, and the same
consent's signature for every query under it; the coordinator re-proves receipts under
the same stored head. A check over fixed bytes that passed once passes forever, so a
repeat becomes a lookup keyed by exactly those bytes. Only passes are remembered: a
failure is checked again every time, and a flood of bad inputs can neither be believed
nor evict what was verified. What can change over time (validity, revocation) must stay
outside the key and be checked by the caller every time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["RecentlyPassed"]

K = TypeVar("K", bound=Hashable)


class RecentlyPassed(Generic[K]):
    """The last ``size`` keys whose check passed, most recently used kept; thread-safe."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._size = size
        self._passed: OrderedDict[K, None] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key: K, check: Callable[[], object]) -> None:
        """Run ``check`` unless ``key`` passed recently; remember ``key`` once it returns.
        Whatever ``check`` raises propagates and nothing is remembered."""
        with self._lock:
            if key in self._passed:
                self._passed.move_to_end(key)
                return
        check()
        with self._lock:
            self._passed[key] = None
            self._passed.move_to_end(key)
            while len(self._passed) > self._size:
                self._passed.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._passed)
