"""Obfuscators made ahead on other cores: a hot-path encryption is one multiplication.

A Paillier encryption is (1 + n·m)·r mod n² for a fresh obfuscator r; the
obfuscator is the whole cost (``FastEncryptor`` makes one in ~0.7 ms) and it
does not depend on m. ``PooledEncryptor`` therefore runs ``FastEncryptor``s in
worker processes that fill a bounded queue with obfuscators while the caller is
busy elsewhere (decrypting, computing inner products, waiting for the other
party), and encrypts with one taken from the queue: ~5 µs. When the queue is
empty it makes the obfuscator itself, so it is never slower than a plain
``FastEncryptor``; with one worker on a second core, a party that encrypts in
bursts gets up to twice the throughput.

Security: each worker draws its own DJN base from the OS CSPRNG and keeps it (see
``FastEncryptor``); what crosses the process boundary is single-use obfuscators,
over a pipe between processes of the same party on the same machine — the same
trust domain as the encrypting process's own memory. Each obfuscator is taken
from the queue exactly once, so none is ever used for two ciphertexts.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol

import gmpy2

from creditshare.crypto._ciphertext import Ciphertext
from creditshare.crypto._encoding import FixedPointEncoding
from creditshare.crypto._fast import FastEncryptor, ObfuscatedEncryption
from creditshare.crypto._keys import PublicKey
from creditshare.errors import InvalidInputError

__all__ = ["Encryptor", "PooledEncryptor", "stop_workers"]


class Encryptor(Protocol):
    """What ``FastEncryptor`` and ``PooledEncryptor`` both offer: fresh ciphertexts."""

    @property
    def public_key(self) -> PublicKey: ...

    def encrypt_encoded(self, m: int) -> Ciphertext: ...

    def encrypt(self, value: float, encoding: FixedPointEncoding) -> Ciphertext: ...

    def rerandomize(self, ciphertext: Ciphertext) -> Ciphertext: ...

    def zero(self) -> Ciphertext: ...


#: Obfuscators per message from a worker: large enough to amortise the pipe, small
#: enough that the first batch arrives within ~0.2 s.
_BATCH = 256


def stop_workers(stop: Any, out: Any, processes: Sequence[Any]) -> None:
    """Stop obfuscator workers: signal ``stop``, drain ``out`` so that no worker stays
    blocked on a full queue, join each (terminating any that hangs) and close ``out``.
    Shared by every encryptor that keeps a worker pool."""
    stop.set()
    with contextlib.suppress(queue.Empty, OSError, ValueError):
        while True:
            out.get_nowait()
    for process in processes:
        process.join(timeout=2.0)
        if process.is_alive():
            process.terminate()
            process.join(timeout=2.0)
    out.close()
    out.cancel_join_thread()


def _produce(n: int, out: Any, stop: Any, parent: int) -> None:
    """Worker loop: obfuscators for key ``n`` into ``out`` until ``stop`` is set, or
    until process ``parent`` is gone (killed without a chance to stop us).

    The parent check runs between small batches and between 0.2 s waits on a full
    queue, so an orphaned worker exits within one batch (~0.2 s of work) and never
    holds a core for a party that no longer exists.
    """
    # Ctrl-C reaches the whole process group: the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Unsent obfuscators may be dropped at exit: waiting to flush them into a pipe that
    # nobody reads (the parent died; a sibling worker holds the reading end) never ends.
    out.cancel_join_thread()
    encryptor = FastEncryptor(PublicKey(n))

    def orphaned() -> None:
        if os.getppid() != parent:
            os._exit(0)  # nothing here is worth a clean shutdown; never hang in one

    while not stop.is_set():
        orphaned()
        batch = []
        for _ in range(_BATCH):
            batch.append(encryptor.obfuscator())
            if len(batch) % 32 == 0:
                orphaned()
        while not stop.is_set():
            orphaned()
            try:
                out.put(batch, timeout=0.2)
                break
            except queue.Full:
                continue


class PooledEncryptor(ObfuscatedEncryption):
    """``FastEncryptor``'s interface, fed by worker processes making obfuscators ahead.

    ``workers`` defaults to one fewer than the machine's cores (at least one);
    ``buffer`` bounds the obfuscators held ready (512 bytes each at 2048 bits).
    Close it (or use it as a context manager) to stop the workers; workers whose
    parent process dies (SIGKILL, a crash) notice it and exit on their own.
    """

    def __init__(
        self, public_key: PublicKey, *, workers: int | None = None, buffer: int = 8192
    ) -> None:
        if not isinstance(public_key, PublicKey):
            raise InvalidInputError("PooledEncryptor needs a creditshare PublicKey")
        if workers is None:
            workers = max(1, (os.cpu_count() or 2) - 1)
        if not 0 <= workers <= 64:
            raise InvalidInputError("workers must be within 0..64")
        if buffer < _BATCH:
            raise InvalidInputError(f"buffer must hold at least {_BATCH} obfuscators")
        self._public_key = public_key
        self._n = gmpy2.mpz(public_key.n)
        self._n_squared = gmpy2.mpz(public_key.n_squared)
        self._local = FastEncryptor(public_key)
        self._ready: list[int] = []
        self._lock = threading.Lock()
        # spawn, not fork: the caller may hold threads (gRPC, asyncio) that fork would copy.
        context = multiprocessing.get_context("spawn")
        self._queue: Any = context.Queue(maxsize=max(1, buffer // _BATCH))
        self._stop: Any = context.Event()
        self._workers = [
            context.Process(
                target=_produce,
                args=(public_key.n, self._queue, self._stop, os.getpid()),
                daemon=True,
                name=f"creditshare-obfuscators-{k}",
            )
            for k in range(workers)
        ]
        for process in self._workers:
            process.start()
        self.pooled = 0
        self.local = 0

    def _draw(self) -> Any:
        with self._lock:  # threads of one party share the buffer; none may lose a refill
            if not self._ready:
                with contextlib.suppress(queue.Empty, OSError, ValueError):
                    self._ready = self._queue.get_nowait()
            if self._ready:
                self.pooled += 1
                return gmpy2.mpz(self._ready.pop())
            self.local += 1
        return gmpy2.mpz(self._local.obfuscator())

    def close(self) -> None:
        """Stop the workers and drop every obfuscator not yet used."""
        stop_workers(self._stop, self._queue, self._workers)
        with self._lock:
            self._ready = []
        self._workers = []

    def __enter__(self) -> PooledEncryptor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("PooledEncryptor holds secret randomness and cannot be serialised")

    def __repr__(self) -> str:
        return (
            f"PooledEncryptor(key={self._public_key.fingerprint()}, workers={len(self._workers)})"
        )
