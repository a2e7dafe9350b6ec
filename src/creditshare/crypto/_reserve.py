"""A few obfuscators made ahead, so that answering a query encrypts with one product.

An encryption's cost is its obfuscator (``FastEncryptor``: ~0.6 ms at 2048 bits), and
the obfuscator does not depend on the plaintext. A data node answers each query with
one or two packed encryptions under a key it sees again and again; made while the node
is idle, those obfuscators take nothing from the query's critical path, which then
costs one multiplication per ciphertext. ``PooledEncryptor`` does the same with worker
processes, for training's bursts; this is its in-process, one-thread counterpart for
the query path, filled between queries by whoever owns it (``refill``).

Security: exactly the wrapped encryptor's obfuscators (see ``FastEncryptor``), each
made from fresh CSPRNG draws, kept in this object's memory (the encrypting party's own)
and handed out once: ``deque.popleft`` is atomic, so two threads never take the same
one, and a taken obfuscator is never put back.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from creditshare.crypto._fast import ObfuscatedEncryption
from creditshare.errors import InvalidInputError

__all__ = ["ReservedEncryptor"]


class ReservedEncryptor(ObfuscatedEncryption):
    """``source``'s encryption, drawing from up to ``size`` obfuscators made ahead.

    ``refill`` makes them (on a thread that has the time); when none is left, each
    encryption makes its own from ``source``, so this is never slower than ``source``.
    """

    __slots__ = ("_made", "_n", "_n_squared", "_public_key", "_size", "_source")

    def __init__(self, source: ObfuscatedEncryption, size: int) -> None:
        if size < 1:
            raise InvalidInputError("a reserve holds at least one obfuscator")
        self._source = source
        self._public_key = source.public_key
        self._n = source._n
        self._n_squared = source._n_squared
        self._size = size
        self._made: deque[Any] = deque()

    @property
    def source(self) -> ObfuscatedEncryption:
        return self._source

    @property
    def stock(self) -> int:
        """Obfuscators ready now."""
        return len(self._made)

    @property
    def short(self) -> bool:
        return len(self._made) < self._size

    def _draw(self) -> Any:
        try:
            return self._made.popleft()
        except IndexError:
            return self._source._draw()

    def refill(self, most: int | None = None) -> int:
        """Make obfuscators until the reserve is full, at most ``most`` of them (None: as
        many as it takes); returns how many were made. Blocking: ~0.6 ms each."""
        made = 0
        while len(self._made) < self._size and (most is None or made < most):
            self._made.append(self._source._draw())
            made += 1
        return made

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("ReservedEncryptor holds secret randomness and cannot be serialised")

    def __repr__(self) -> str:
        return f"ReservedEncryptor({self._source!r}, size={self._size}, stock={self.stock})"
