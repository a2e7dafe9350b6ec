"""Paillier throughput on one fresh 2048-bit key: stock phe vs ``FastEncryptor``.

Usage::

    python bench/crypto.py [--quick] [--json PATH]

Everything is measured in the same process on the same key, so the ratios are
meaningful even where absolute numbers are not (they depend on the CPU and the GMP
build). ``--quick`` trades precision for a run of well under 30 s; without it each
operation runs for a few seconds. Timings belong here and never in the test suite,
where a slow CI machine would make them flaky.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import gmpy2
from phe import paillier

from creditshare.crypto import (
    FastEncryptor,
    FixedPointEncoding,
    PooledEncryptor,
    PrivateKey,
    dot,
    powmod_many,
)

KEY_BITS = 2048
DOT_LENGTH = 100
WEIGHT_BITS = 20


@dataclass(frozen=True, slots=True)
class Timing:
    name: str
    ops: int
    seconds: float

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.seconds

    @property
    def microseconds(self) -> float:
        return 1e6 * self.seconds / self.ops


def measure(name: str, operation: Callable[[int], object], budget: float, min_ops: int) -> Timing:
    """Call ``operation(i)`` for i = 0, 1, ... until both the time budget and min_ops are met.

    Batches grow geometrically so the clock is read rarely for fast operations.
    """
    operation(0)  # warm-up: first-call effects are not throughput
    ops = 0
    batch = 1
    start = time.perf_counter()
    while True:
        for i in range(ops, ops + batch):
            operation(i)
        ops += batch
        elapsed = time.perf_counter() - start
        if elapsed >= budget and ops >= min_ops:
            return Timing(name, ops, elapsed)
        batch = min(batch * 2, 4096)


def pool_ready(pool: PooledEncryptor) -> int:
    """Obfuscators waiting in the pool's queue (Linux: the queue knows its size)."""
    try:
        return int(pool._queue.qsize()) * 256
    except NotImplementedError:
        return 0


def timed_run(name: str, pool: PooledEncryptor, encoded: list[int], count: int) -> Timing:
    started = time.perf_counter()
    for i in range(count):
        pool.encrypt_encoded(encoded[i % len(encoded)])
    return Timing(name, count, time.perf_counter() - started)


def resident_bytes() -> int | None:
    """Current RSS from /proc (Linux); None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    import resource

    return pages * resource.getpagesize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (< ~30 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    budget = 0.4 if args.quick else 3.0
    builds = 1 if args.quick else 3

    # Benchmark inputs only (not key material): reproducible data is what we want here.
    rng = random.Random(20240601)

    t0 = time.perf_counter()
    key = PrivateKey.generate(KEY_BITS)
    keygen_seconds = time.perf_counter() - t0
    pub = key.public_key
    phe_pub = paillier.PaillierPublicKey(pub.n)
    encoding = FixedPointEncoding(10**6)
    print(f"key: {pub.bits} bits, generated in {keygen_seconds:.2f} s")

    rss_before = resident_bytes()
    build_times = []
    fast = None
    for _ in range(builds):
        fast = None  # drop the previous table before timing the next build
        t0 = time.perf_counter()
        fast = FastEncryptor(pub)
        build_times.append(time.perf_counter() - t0)
    assert fast is not None
    rss_after = resident_bytes()
    build_seconds = min(build_times)
    rss_delta = None if rss_before is None or rss_after is None else rss_after - rss_before
    print(
        f"FastEncryptor table: window {fast.window}, exponent {fast.exponent_bits} bits, "
        f"built in {build_seconds:.3f} s, {fast.table_bytes / 2**20:.1f} MiB"
        + ("" if rss_delta is None else f" (RSS +{rss_delta / 2**20:.1f} MiB)")
    )

    values = [rng.uniform(-1e4, 1e4) for _ in range(256)]
    encoded = [encoding.encode(v, pub) for v in values]
    integers = [rng.randrange(-(2**40), 2**40) for _ in range(256)]

    # Sanity before timing: the fast path must decrypt to what went in.
    for m in encoded[:4]:
        assert key.raw_decrypt(fast.encrypt_encoded(m).value) == m
    ciphertexts = fast.encrypt_many(values[:DOT_LENGTH], encoding)
    factors = [rng.randrange(1 << (WEIGHT_BITS - 1), 1 << WEIGHT_BITS) for _ in range(256)]
    weights = [
        rng.choice((-1, 1)) * rng.randrange(1 << (WEIGHT_BITS - 1), 1 << WEIGHT_BITS)
        for _ in range(DOT_LENGTH)
    ]
    expected = sum(encoding.to_integer(v) * w for v, w in zip(values, weights, strict=False))
    got = FixedPointEncoding.decode_integer(key.raw_decrypt(dot(ciphertexts, weights).value), pub)
    assert got == expected, "dot disagrees with the plaintext inner product"

    a = ciphertexts[0]
    b = ciphertexts[1]
    stock_min = 5 if args.quick else 50
    fast_min = 50 if args.quick else 500
    timings = [
        measure(
            "phe PaillierPublicKey.encrypt",
            lambda i: phe_pub.encrypt(integers[i % 256]),
            budget,
            stock_min,
        ),
        measure(
            "PublicKey.raw_encrypt", lambda i: pub.raw_encrypt(encoded[i % 256]), budget, stock_min
        ),
        measure(
            "FastEncryptor.encrypt_encoded",
            lambda i: fast.encrypt_encoded(encoded[i % 256]),
            budget,
            fast_min,
        ),
        measure(
            "FastEncryptor.encrypt (float)",
            lambda i: fast.encrypt(values[i % 256], encoding),
            budget,
            fast_min,
        ),
        measure("FastEncryptor.rerandomize", lambda i: fast.rerandomize(a), budget, fast_min),
        measure(
            "PrivateKey.raw_decrypt (CRT)",
            lambda i: key.raw_decrypt(ciphertexts[i % DOT_LENGTH].value),
            budget,
            fast_min,
        ),
        measure("Ciphertext + Ciphertext", lambda i: a + b, budget, fast_min),
        measure(
            f"Ciphertext.multiply ({WEIGHT_BITS}-bit)",
            lambda i: a.multiply(factors[i % 256]),
            budget,
            fast_min,
        ),
        measure(
            f"dot of {DOT_LENGTH} ({WEIGHT_BITS}-bit signed weights)",
            lambda i: dot(ciphertexts, weights),
            budget,
            5,
        ),
    ]
    # Training-sized inner product: 256 residuals x 14-bit features, Pippenger's buckets
    # (powmod_many) against one powmod per term, the method it replaced.
    nsq = gmpy2.mpz(pub.n_squared)
    residuals = [c.value for c in fast.encrypt_many(values, encoding)]
    features = [rng.randrange(-(2**13), 2**13) for _ in range(256)]

    def per_term(i: int) -> int:
        """The replaced method: a powmod per term, negatives grouped and inverted once."""
        positive, negative = gmpy2.mpz(1), gmpy2.mpz(1)
        for base, e in zip(residuals, features, strict=True):
            if e >= 0:
                positive = positive * gmpy2.powmod(base, e, nsq) % nsq
            else:
                negative = negative * gmpy2.powmod(base, -e, nsq) % nsq
        return int(positive * gmpy2.invert(negative, nsq) % nsq)

    assert int(per_term(0)) == powmod_many(residuals, features, pub.n_squared)
    timings += [
        measure("dot of 256 (14-bit), one powmod per term", per_term, budget, 5),
        measure(
            "dot of 256 (14-bit), powmod_many (Pippenger)",
            lambda i: powmod_many(residuals, features, pub.n_squared),
            budget,
            5,
        ),
    ]

    # Obfuscators made ahead by a worker process (PooledEncryptor): a burst from a full
    # buffer, then a sustained run long enough to drain it (caller and worker both make).
    buffer = 2048 if args.quick else 8192
    with PooledEncryptor(pub, workers=1, buffer=buffer) as pool:
        deadline = time.perf_counter() + 60
        while pool_ready(pool) < buffer and time.perf_counter() < deadline:
            time.sleep(0.1)
        burst = timed_run("PooledEncryptor.encrypt_encoded, buffer full", pool, encoded, buffer)
        sustained = timed_run(
            "PooledEncryptor.encrypt_encoded, sustained", pool, encoded, 3 * buffer
        )
        assert key.raw_decrypt(pool.encrypt_encoded(encoded[0]).value) == encoded[0]
    timings += [burst, sustained]

    by_name = {t.name: t for t in timings}
    fast_ops = by_name["FastEncryptor.encrypt_encoded"].ops_per_second
    ratios = {
        "fast_encrypt_encoded_over_phe_encrypt": fast_ops
        / by_name["phe PaillierPublicKey.encrypt"].ops_per_second,
        "fast_encrypt_encoded_over_raw_encrypt": fast_ops
        / by_name["PublicKey.raw_encrypt"].ops_per_second,
        "pooled_burst_over_phe_encrypt": burst.ops_per_second
        / by_name["phe PaillierPublicKey.encrypt"].ops_per_second,
        "pooled_sustained_over_phe_encrypt": sustained.ops_per_second
        / by_name["phe PaillierPublicKey.encrypt"].ops_per_second,
        "pooled_sustained_over_fast": sustained.ops_per_second / fast_ops,
        "pippenger_dot_over_per_term": by_name[
            "dot of 256 (14-bit), powmod_many (Pippenger)"
        ].ops_per_second
        / by_name["dot of 256 (14-bit), one powmod per term"].ops_per_second,
    }

    width = max(len(t.name) for t in timings)
    print(f"\n{'operation':<{width}}  {'ops/s':>12}  {'µs/op':>12}  {'runs':>7}")
    for t in timings:
        print(
            f"{t.name:<{width}}  {t.ops_per_second:>12,.1f}  {t.microseconds:>12,.1f}  {t.ops:>7}"
        )
    print()
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.1f}x")
    # Table-build cost expressed in stock encryptions: when the table pays for itself.
    stock_seconds = 1 / by_name["PublicKey.raw_encrypt"].ops_per_second
    fast_seconds = 1 / fast_ops
    break_even = build_seconds / max(stock_seconds - fast_seconds, 1e-12)
    print(f"table build pays for itself after ~{break_even:.0f} encryptions")

    if args.json is not None:
        result: dict[str, object] = {
            "key_bits": pub.bits,
            "quick": args.quick,
            "keygen_seconds": keygen_seconds,
            "window": fast.window,
            "exponent_bits": fast.exponent_bits,
            "table_build_seconds": build_seconds,
            "table_bytes": fast.table_bytes,
            "table_rss_delta_bytes": rss_delta,
            "ops_per_second": {t.name: t.ops_per_second for t in timings},
            "ratios": ratios,
            "environment": {
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "machine": platform.machine(),
                "gmpy2": version("gmpy2"),
                "phe": version("phe"),
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
