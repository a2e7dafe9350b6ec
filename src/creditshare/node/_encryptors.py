"""Per-requester encryptors for the query path.

A bank queries with the same long-lived Paillier key again and again, so a node
keeps a fixed-base table (``FastEncryptor``, ~14x faster encryption at 2048 bits)
for the few keys it sees most. The table takes ~0.2 s and ~17 MiB to build, which
would cost more than one query saves: the first query under a new key is answered
with stock encryption while the table is built in the background, and later queries
use it. A small LRU bounds memory.

The build is key-dependent work on data an outsider chose, so it is kept away from
everything that must stay responsive:

* it runs on one daemon thread of its own, never on a thread that serves an RPC
  (``get`` and ``warm`` only enqueue, without blocking, and answer with stock
  encryption meanwhile);
* the queue is bounded, and a key whose build failed is remembered (bounded) and
  answered with stock encryption from then on: no retry storm, and the failure is
  logged with the key's fingerprint only;
* a daemon thread is not joined at interpreter exit and ``close`` does not wait for
  a build, so a slow build cannot hold up SIGTERM (``ThreadPoolExecutor`` workers are
  joined at exit, which is why this is not one);
* the thread ends after ``_IDLE_SECONDS`` without work and is started again on demand,
  so caches that are never closed (tests, short-lived servers) leave nothing running.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from creditshare.crypto import Ciphertext, FastEncryptor, FixedPointEncoding, PublicKey
from creditshare.errors import InvalidCiphertextError

__all__ = ["EncryptorCache", "ValueEncryptor"]

log = logging.getLogger("creditshare.node")

#: Seconds the builder thread waits for work before it ends (restarted on demand).
_IDLE_SECONDS = 5.0
#: Keys remembered as failed (answered with stock encryption, never rebuilt meanwhile).
_MAX_FAILED = 256


def _fast_table(key: PublicKey) -> FastEncryptor:
    return FastEncryptor(key)  # its window keeps the table near 20 MiB for any key size


class ValueEncryptor(Protocol):
    """``crypto.Encryptor``: what the query path (and private tree scoring) needs."""

    @property
    def public_key(self) -> PublicKey: ...

    def encrypt(self, value: float, encoding: FixedPointEncoding) -> Ciphertext: ...

    def encrypt_encoded(self, m: int) -> Ciphertext: ...

    def rerandomize(self, ciphertext: Ciphertext) -> Ciphertext: ...

    def zero(self) -> Ciphertext: ...


class _StockEncryptor:
    """phe's encryption: a fresh r^n per value (used until a table is ready)."""

    def __init__(self, key: PublicKey) -> None:
        self._key = key

    @property
    def public_key(self) -> PublicKey:
        return self._key

    def encrypt(self, value: float, encoding: FixedPointEncoding) -> Ciphertext:
        return encoding.encrypt(value, self._key)

    def encrypt_encoded(self, m: int) -> Ciphertext:
        return Ciphertext(self._key, self._key.raw_encrypt(m))

    def rerandomize(self, ciphertext: Ciphertext) -> Ciphertext:
        if ciphertext.public_key != self._key:
            raise InvalidCiphertextError("ciphertext was made under a different public key")
        return ciphertext + self.zero()

    def zero(self) -> Ciphertext:
        return Ciphertext(self._key, self._key.raw_encrypt(0))


class EncryptorCache:
    """Fixed-base encryptors for recent keys, built off the request path.

    ``build`` makes one encryptor for a key (a ``FastEncryptor`` whose window keeps
    the table near 20 MiB whatever the key size, in production; tests
    inject failing or slow builders). ``max_pending`` bounds the keys waiting for a
    build: when the queue is full a key is simply answered with stock encryption and
    asked for again on a later request.
    """

    def __init__(
        self,
        max_keys: int = 4,
        enabled: bool = True,
        *,
        build: Callable[[PublicKey], ValueEncryptor] = _fast_table,
        max_pending: int | None = None,
    ) -> None:
        self._max = max_keys
        self._enabled = enabled
        self._build = build
        self._ready: OrderedDict[PublicKey, ValueEncryptor] = OrderedDict()
        self._pending: set[PublicKey] = set()
        self._failed: OrderedDict[PublicKey, None] = OrderedDict()
        self._queue: queue.Queue[PublicKey] = queue.Queue(maxsize=max_pending or max_keys)
        self._lock = threading.Lock()
        #: Signalled (under ``_lock``) whenever a build ends, for ``get(..., wait=)``.
        self._built = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None

    def get(self, key: PublicKey, wait: float = 0.0) -> ValueEncryptor:
        """The table-backed encryptor if ready, else stock encryption.

        Never blocks by default: a profile is a handful of encryptions, cheaper in stock
        encryption than a table build. With ``wait`` (seconds) the caller waits for the
        build it asked for, up to that long: private tree scoring encrypts hundreds of
        values per query, so the ~0.2 s build pays for itself on the first query (800
        stock encryptions take ~7 s). The build still runs on the builder thread, never
        on the caller's; a failed or slow build falls back to stock encryption.
        """
        if not self._enabled:
            return _StockEncryptor(key)
        deadline = time.monotonic() + wait
        with self._lock:
            while True:
                fast = self._ready.get(key)
                if fast is not None:
                    self._ready.move_to_end(key)
                    return fast
                self._request(key)
                left = deadline - time.monotonic()
                if left <= 0 or self._closed or key in self._failed or key not in self._pending:
                    break
                self._built.wait(left)
        return _StockEncryptor(key)

    def warm(self, keys: Sequence[PublicKey]) -> None:
        """Ask for tables now (e.g. for registered keys at start-up); never blocks."""
        if not self._enabled:
            return
        with self._lock:
            for key in keys:
                if key not in self._ready:
                    self._request(key)

    def failed(self, key: PublicKey) -> bool:
        """True when a build for ``key`` failed and it is answered with stock encryption."""
        with self._lock:
            return key in self._failed

    def _request(self, key: PublicKey) -> None:
        """Queue a build unless one is pending, failed or the queue is full (lock held)."""
        if self._closed or key in self._pending or key in self._failed:
            return
        try:
            self._queue.put_nowait(key)
        except queue.Full:
            return
        self._pending.add(key)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="encryptor-table", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                key = self._queue.get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    # Puts happen under the lock, so an empty queue here stays empty
                    # until the next _request, which will start a new thread.
                    if self._queue.empty() or self._closed:
                        self._thread = None
                        return
                continue
            if self._closed:
                return
            self._build_one(key)

    def _build_one(self, key: PublicKey) -> None:
        try:
            fast = self._build(key)
        except Exception as exc:  # any failure: fall back, never retry in a loop
            log.warning(
                "encryption table for key %s could not be built (%s); "
                "answering that key with stock encryption",
                key.fingerprint(),
                type(exc).__name__,
            )
            with self._lock:
                self._pending.discard(key)
                self._failed[key] = None
                while len(self._failed) > _MAX_FAILED:
                    self._failed.popitem(last=False)
                self._built.notify_all()
            return
        with self._lock:
            self._pending.discard(key)
            self._built.notify_all()
            if self._closed:
                return
            self._ready[key] = fast
            while len(self._ready) > self._max:
                self._ready.popitem(last=False)

    def close(self) -> None:
        """Stop building and drop the tables; returns at once, whatever a build is doing.

        A build under way finishes on its daemon thread and is thrown away; it does not
        hold up the caller, nor the process's exit.
        """
        with self._lock:
            self._closed = True
            self._ready.clear()
            self._pending.clear()
            self._built.notify_all()
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
