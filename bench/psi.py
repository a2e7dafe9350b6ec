"""Benchmark ECDH-PSI (X25519) between a bureau and a node, in one process, no network.

    python bench/psi.py [--quick] [--json PATH] [--n N] [--workers W]

Two parties of N ids each, 50 % overlap (N = 100,000; --quick: 10,000).  Reports, for one
worker and for ``--workers`` processes (default: CPU count), the time per protocol phase and
end-to-end ids/s, where "ids" counts both sides (2N).  As a baseline in the same run it times
plain SHA-256 of the same 2N ids: the ratio says what blinding costs over the hashing a naive
(and insecure: hashes of enterprise ids are trivially brute-forced) alignment would do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from creditshare.federated._psi import PsiParty, bureau_intersect, bureau_request, node_answer

DOMAIN = b"bench/psi"


def make_ids(n: int) -> tuple[list[str], list[str], set[str]]:
    """USCC-shaped ids: bureau [0, n), node [n/2, 3n/2), each shuffled."""
    rng = random.Random(2024)
    bureau = [f"91{i:016d}" for i in range(n)]
    node = [f"91{i:016d}" for i in range(n // 2, n + n // 2)]
    rng.shuffle(bureau)
    rng.shuffle(node)
    return bureau, node, set(bureau) & set(node)


def sha256_baseline(ids: list[str]) -> float:
    sha256 = hashlib.sha256
    start = time.perf_counter()
    digests = [sha256(x.encode("utf-8")).digest() for x in ids]
    elapsed = time.perf_counter() - start
    assert len(digests) == len(ids)
    return elapsed


def run_psi(bureau_ids: list[str], node_ids: list[str], workers: int) -> dict[str, Any]:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    bureau = PsiParty(DOMAIN, workers=workers)
    node = PsiParty(DOMAIN, workers=workers)
    t0 = time.perf_counter()
    request = bureau_request(bureau, bureau_ids)
    t1 = time.perf_counter()
    response = node_answer(node, node_ids, request)
    t2 = time.perf_counter()
    common = bureau_intersect(bureau, bureau_ids, response)
    t3 = time.perf_counter()
    timings["bureau_request_s"] = t1 - t0
    timings["node_answer_s"] = t2 - t1
    timings["bureau_intersect_s"] = t3 - t2
    total = t3 - start
    n_ids = len(bureau_ids) + len(node_ids)
    scalar_mults = 2 * n_ids
    return {
        "workers": workers,
        "phases": timings,
        "total_s": total,
        "ids_per_s": n_ids / total,
        "us_per_scalar_mult": total / scalar_mults * 1e6,
        "intersection": common,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="N = 10,000 (under ~30 s)")
    parser.add_argument("--n", type=int, default=None, help="ids per party (overrides --quick)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else (10_000 if args.quick else 100_000)

    bureau_ids, node_ids, truth = make_ids(n)
    print(f"PSI over X25519: {n:,} ids per party, {len(truth):,} in common")
    load = os.getloadavg()[0]
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load:.2f}")

    sha_s = sha256_baseline(bureau_ids + node_ids)
    print(f"baseline  SHA-256 of {2 * n:,} ids: {sha_s:.3f} s ({2 * n / sha_s:,.0f} ids/s)")

    worker_counts = sorted({1, max(1, args.workers)})
    runs = []
    for workers in worker_counts:
        result = run_psi(bureau_ids, node_ids, workers)
        common = result.pop("intersection")
        if set(common) != truth or len(common) != len(truth):
            print("ERROR: intersection is wrong", file=sys.stderr)
            return 1
        result["ratio_to_sha256"] = result["total_s"] / sha_s
        runs.append(result)
        phases = ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in result["phases"].items())
        print(
            f"workers={workers}: total {result['total_s']:.2f} s, "
            f"{result['ids_per_s']:,.0f} ids/s end to end "
            f"({result['us_per_scalar_mult']:.1f} µs per scalar mult), "
            f"{result['ratio_to_sha256']:,.0f}x SHA-256\n    {phases}"
        )

    if args.json is not None:
        report = {
            "benchmark": "psi",
            "n_per_party": n,
            "overlap": len(truth),
            "cpus": os.cpu_count(),
            "load_average_at_start": load,
            "python": platform.python_version(),
            "sha256_baseline_s": sha_s,
            "sha256_ids_per_s": 2 * n / sha_s,
            "runs": runs,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
