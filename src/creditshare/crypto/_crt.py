"""Bureau-side encryption with the private key: DJN obfuscators modulo p² and q², by CRT.

Why this exists
---------------
Tree training encrypts one packed (g, h) plaintext per fit row per tree (21,000 rows on
default_credit) under the bureau's own key, and the bureau holds that key's factors.
``FastEncryptor``'s obfuscator h_s^α mod n² (see its docstring) is ~|n|/(2w) products
modulo the 4096-bit n²; knowing n = p·q, the same value is the CRT combination of
h_s^α mod p² and h_s^α mod q², each a fixed-base product modulo a 2048-bit number.

What that buys, measured with gmpy2 on this machine: a product modulo a 2048-bit number
costs ~1.6 µs against ~4.6 µs modulo n² (the reduction, a 4096-by-2048-bit division,
is two thirds of it), but there are two of them per digit; entries are half the size, so
a window of 10 bits (103 digits) costs about the memory of ``FastEncryptor``'s 8 (128
digits). 2 × 103 × 1.6 µs ≈ 0.33 ms against 128 × 4.6 µs ≈ 0.59 ms: ~1.8× in theory,
1.4–1.8× measured (``bench/crypto.py`` runs both interleaved and prints the ratio). It is
not more because both halves still need ⌈|n|/2⌉-bit exponents: the order of h_s modulo
p² divides p − 1, which is as long as α, so CRT cannot shorten the exponent, and lifting
a cheaper computation modulo p to the n-th residue modulo p² costs an |n|/2-bit
exponentiation. The rest of the bureau's gain comes from making obfuscators ahead (below):
they do not depend on the plaintext.

Security argument
-----------------
Exactly ``FastEncryptor``'s: the obfuscator is h_s^α · y_s^b mod n² with h = −x² mod n for
a CSPRNG-drawn unit x, h_s = h^n mod n², a fresh α of ⌈|n|/2⌉ bits (shorter exponents are
refused: outside DJN's assumption) and a fresh bit b that makes the Jacobi symbol of every
ciphertext uniform (y of Jacobi symbol −1, y_s = y^n). Only the way the same number is
computed differs: by the Chinese remainder theorem, Z_{n²} ≅ Z_{p²} × Z_{q²}, so
computing h_s^α modulo p² and q² with the SAME α and recombining gives h_s^α mod n²
exactly. The state (x's derivatives, p², q², the tables) never leaves the object; pickling
is refused.

Worker processes (obfuscators made ahead)
-----------------------------------------
An obfuscator does not depend on the plaintext, so with ``workers`` > 0 processes make
them ahead (as ``PooledEncryptor`` does) into a bounded queue while the bureau waits for
the nodes' histograms; the next tree's ``encrypt_many`` then costs one product per row
for every ready obfuscator and makes the rest itself. Each worker receives n, p and q
once, at start, over the spawn pipe — the bureau's own key on the bureau's own machine,
the trust domain the key already lives in — draws its own x and y (as two
``FastEncryptor``s would) and builds its own tables. What comes back is single-use
obfuscators, each taken from the queue exactly once. Workers ignore SIGINT (the parent
decides), stop when ``close`` asks, and exit on their own within one small batch when
the parent process disappears (killed, crashed); so no process holding the key outlives
the bureau.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import secrets
import signal
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, NoReturn

import gmpy2

from creditshare.crypto._ciphertext import Ciphertext
from creditshare.crypto._encoding import FixedPointEncoding
from creditshare.crypto._fast import (
    MAX_WINDOW,
    _random_unit,
    _unit_of_jacobi_minus_one,
    check_exponent_bits,
)
from creditshare.crypto._keys import PrivateKey, PublicKey
from creditshare.crypto._pool import stop_workers
from creditshare.errors import InvalidCiphertextError, InvalidInputError

__all__ = ["PrivateEncryptor", "crt_window"]

#: Obfuscators per message from a worker (as ``PooledEncryptor``'s).
_BATCH = 256


def crt_window(bits: int) -> int:
    """Fixed-base window for a key of ``bits``: two tables of ~30 MiB each at 2048 bits.

    Entries modulo p² are half the size of ``FastEncryptor``'s, so w = 10 holds ~60 MiB
    (two tables) and takes ~0.35 s to build, for 2 × 103 products per obfuscator; w = 11
    doubles both for ~7 % fewer products. Narrower for larger keys, as ``table_window``.
    """
    if bits <= 2048:
        return 10
    if bits <= 3072:
        return 9
    return 8


class _Half:
    """h_s^α · y_s^b modulo one prime square, by a fixed-base windowed table."""

    __slots__ = ("_modulus", "_table", "_ys")

    def __init__(self, hs: Any, ys: Any, modulus: Any, exponent_bits: int, window: int) -> None:
        self._modulus = modulus
        self._ys = ys
        table: list[list[Any]] = []
        base = hs
        for i in range(-(-exponent_bits // window)):
            top_bits = min(window, exponent_bits - window * i)
            row = [base]
            for _ in range((1 << top_bits) - 2):
                row.append(row[-1] * base % modulus)
            table.append(row)
            base = row[-1] * base % modulus
        self._table = table

    def power(self, digits: Sequence[int], flip: int) -> Any:
        """h_s^α · y_s^flip for α given as base-2^w digits, least significant first."""
        mod = self._modulus
        acc: Any = self._ys if flip else None
        for row, digit in zip(self._table, digits, strict=True):
            if digit:
                entry = row[digit - 1]
                acc = entry if acc is None else acc * entry % mod
        return gmpy2.mpz(1) if acc is None else acc

    def entries(self) -> int:
        return sum(len(row) for row in self._table)


class _CrtObfuscators:
    """Fresh DJN obfuscators for one key, computed modulo p² and q² and recombined."""

    __slots__ = (
        "_exponent_bits",
        "_hp",
        "_hq",
        "_mask",
        "_n",
        "_n_squared",
        "_p2",
        "_q2",
        "_q2_inv",
        "_shifts",
    )

    def __init__(self, n: int, p: int, q: int, exponent_bits: int, window: int) -> None:
        self._n = gmpy2.mpz(n)
        self._n_squared = self._n * self._n
        self._p2 = gmpy2.mpz(p) * p
        self._q2 = gmpy2.mpz(q) * q
        self._q2_inv = gmpy2.invert(self._q2, self._p2)
        self._exponent_bits = exponent_bits
        self._mask = (1 << window) - 1
        self._shifts = range(0, exponent_bits, window)
        x = _random_unit(n)
        h = (-x * x) % self._n
        y = _unit_of_jacobi_minus_one(n)
        # h_s = h^n mod n² and y_s = y^n mod n², reduced modulo each prime square.
        self._hp = _Half(
            gmpy2.powmod(h, self._n, self._p2),
            gmpy2.powmod(y, self._n, self._p2),
            self._p2,
            exponent_bits,
            window,
        )
        self._hq = _Half(
            gmpy2.powmod(h, self._n, self._q2),
            gmpy2.powmod(y, self._n, self._q2),
            self._q2,
            exponent_bits,
            window,
        )

    def draw(self) -> Any:
        """h_s^α · y_s^b mod n² for a fresh α and b: the SAME α modulo both prime squares."""
        alpha = secrets.randbits(self._exponent_bits)
        flip = secrets.randbits(1)
        mask = self._mask
        digits = [(alpha >> shift) & mask for shift in self._shifts]
        rp = self._hp.power(digits, flip)
        rq = self._hq.power(digits, flip)
        # Garner: the r < n² with r ≡ rp (mod p²) and r ≡ rq (mod q²).
        return rq + self._q2 * ((rp - rq) * self._q2_inv % self._p2)

    def encrypt(self, m: int) -> Any:
        """(1 + n·m)·r mod n² = r + n·(m·r mod n) mod n²."""
        r = self.draw()
        return (r + self._n * (m * r % self._n)) % self._n_squared

    def entries(self) -> int:
        return self._hp.entries() + self._hq.entries()

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("obfuscator tables hold secret randomness and cannot be serialised")


def _produce(
    n: int, p: int, q: int, exponent_bits: int, window: int, out: Any, stop: Any, parent: int
) -> None:
    """Worker loop: obfuscators into ``out`` until ``stop`` is set or process ``parent`` is
    gone (checked every 32 obfuscators and every 0.2 s of waiting on a full queue).

    The same loop as ``PooledEncryptor``'s workers, with CRT obfuscators.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out.cancel_join_thread()  # unsent obfuscators may be dropped at exit
    obfuscators = _CrtObfuscators(n, p, q, exponent_bits, window)
    # No secret is dropped here: the Process object's args (in this child, and in the
    # parent until the worker is joined) still hold p and q, and the tables hold values
    # equivalent to them (p², q², CRT coefficients). What bounds exposure is the
    # process: a worker is the bureau's own spawned process under its own user, holds
    # nothing the bureau's process does not already hold, and ends with ``close()`` or
    # as soon as its parent is gone (``orphaned`` below).

    def orphaned() -> None:
        if os.getppid() != parent:
            os._exit(0)  # the bureau is gone: never hold its key or a core any longer

    while not stop.is_set():
        orphaned()
        batch = []
        for k in range(_BATCH):
            batch.append(int(obfuscators.draw()))
            if k % 32 == 31:
                orphaned()
                if stop.is_set():
                    return
        while not stop.is_set():
            orphaned()
            try:
                out.put(batch, timeout=0.2)
                break
            except queue.Full:
                continue


class PrivateEncryptor:
    """Paillier encryption under the key whose factors we hold: ``Encryptor`` plus bulk.

    Same ciphertexts (distribution and all) as ``FastEncryptor``'s, ~1.5× cheaper: see the
    module docstring. ``workers`` > 0 starts that many processes that make obfuscators
    ahead into a queue of at most ``buffer`` (the bureau's CPU is idle while nodes build
    histograms; the next tree's encryptions are then one product each); whatever the
    queue lacks is made here, so it is never slower than ``workers=0``. ``close`` (or the
    context manager) stops them. Thread-safe: the tables are read-only and the ready
    obfuscators are taken under a lock, each exactly once.
    """

    __slots__ = (
        "_exponent_bits",
        "_local",
        "_lock",
        "_n",
        "_n_squared",
        "_processes",
        "_public_key",
        "_queue",
        "_ready",
        "_stop",
        "_window",
        "local",
        "pooled",
    )

    def __init__(
        self,
        key: PrivateKey,
        workers: int = 0,
        *,
        buffer: int = 32768,
        exponent_bits: int | None = None,
        window: int | None = None,
    ) -> None:
        if not isinstance(key, PrivateKey):
            raise InvalidInputError("PrivateEncryptor needs a creditshare PrivateKey")
        if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 64:
            raise InvalidInputError("workers must be an integer within 0..64")
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < _BATCH:
            raise InvalidInputError(f"buffer must hold at least {_BATCH} obfuscators")
        public = key.public_key
        n = public.n
        exponent_bits = check_exponent_bits(n, exponent_bits)
        if window is None:
            window = crt_window(n.bit_length())
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
            raise InvalidInputError(f"window must be an integer within [1, {MAX_WINDOW}]")
        p, q = int(key._phe.p), int(key._phe.q)
        self._public_key = public
        self._n = gmpy2.mpz(n)
        self._n_squared = gmpy2.mpz(public.n_squared)
        self._exponent_bits = exponent_bits
        self._window = window
        self._local = _CrtObfuscators(n, p, q, exponent_bits, window)
        self._lock = threading.Lock()
        self._ready: list[int] = []
        self.pooled = 0
        self.local = 0
        self._processes: list[Any] = []
        # spawn, not fork: the caller may hold threads (gRPC, asyncio) that fork would copy.
        context = multiprocessing.get_context("spawn")
        self._queue: Any = context.Queue(maxsize=max(1, buffer // _BATCH)) if workers else None
        self._stop: Any = context.Event() if workers else None
        for k in range(workers):
            process = context.Process(
                target=_produce,
                args=(n, p, q, exponent_bits, window, self._queue, self._stop, os.getpid()),
                daemon=True,
                name=f"creditshare-crt-obfuscators-{k}",
            )
            process.start()
            self._processes.append(process)

    # ------------------------------------------------------------------ Encryptor

    @property
    def public_key(self) -> PublicKey:
        return self._public_key

    @property
    def exponent_bits(self) -> int:
        return self._exponent_bits

    @property
    def window(self) -> int:
        return self._window

    @property
    def workers(self) -> int:
        return len(self._processes)

    def _draw(self) -> Any:
        """A fresh obfuscator: from the workers' queue when one is ready, else made here."""
        if self._queue is not None:
            with self._lock:
                if not self._ready:
                    with contextlib.suppress(queue.Empty, OSError, ValueError):
                        self._ready = self._queue.get_nowait()
                if self._ready:
                    self.pooled += 1
                    return gmpy2.mpz(self._ready.pop())
        self.local += 1
        return self._local.draw()

    def obfuscator(self) -> int:
        """A fresh Enc(0) (an n-th residue mod n²)."""
        return int(self._draw())

    def encrypt_encoded(self, m: int) -> Ciphertext:
        """Encrypt an encoded integer in [0, n): (1 + n·m)·r = r + n·(m·r mod n) mod n²."""
        self._check_plaintext(m, None)
        return Ciphertext(self._public_key, int(self._encrypt(m)))

    def _encrypt(self, m: int) -> Any:
        r = self._draw()
        return (r + self._n * (m * r % self._n)) % self._n_squared

    def encrypt(self, value: float, encoding: FixedPointEncoding) -> Ciphertext:
        """Encode with the request's fixed-point scale, then encrypt."""
        return self.encrypt_encoded(encoding.encode(value, self._public_key))

    def rerandomize(self, ciphertext: Ciphertext) -> Ciphertext:
        """Same plaintext, fresh randomness (see ``FastEncryptor.rerandomize``)."""
        if ciphertext.public_key != self._public_key:
            raise InvalidCiphertextError("ciphertext was made under a different public key")
        value = gmpy2.mpz(ciphertext.value) * self._draw() % self._n_squared
        return Ciphertext(self._public_key, int(value))

    def zero(self) -> Ciphertext:
        return Ciphertext(self._public_key, int(self._draw()))

    def encrypt_many(self, plaintexts: Sequence[int]) -> list[Ciphertext]:
        """Encrypt encoded integers in [0, n), in order; all are checked before any work."""
        for index, m in enumerate(plaintexts):
            self._check_plaintext(m, index)
        key = self._public_key
        return [Ciphertext(key, int(self._encrypt(m))) for m in plaintexts]

    def _check_plaintext(self, m: int, index: int | None) -> None:
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < self._public_key.n:
            where = "" if index is None else f" (plaintext {index})"
            raise InvalidInputError(f"encoded plaintext must be an integer in [0, n){where}")

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the workers and drop every obfuscator not yet used (idempotent); the
        encryptor keeps working in-process."""
        if self._queue is None:
            return
        stop_workers(self._stop, self._queue, self._processes)
        with self._lock:
            self._ready = []
            self._queue = None
        self._processes = []

    def __enter__(self) -> PrivateEncryptor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("PrivateEncryptor holds the private key's factors and cannot be serialised")

    def __repr__(self) -> str:
        return (
            f"PrivateEncryptor(key={self._public_key.fingerprint()}, "
            f"window={self._window}, workers={len(self._processes)})"
        )
