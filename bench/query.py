"""End-to-end profile queries: latency and throughput, fast vs stock node encryption.

Two federations on loopback, identical but for the nodes' `fast_encryption`
setting (fixed-base tables for recent requester keys vs phe's fresh r^n per
value): coordinator + 9 nodes (3 chains x tax, market, court), mutual TLS,
2048-bit keys, SQLite, consent checks and the ledger on. Latency includes the
bank's decryption. Ratios are fast/stock, measured in this same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from creditshare.client import CreditShareClient
from creditshare.consent import ConsentGrant, Purpose
from creditshare.crypto import PrivateKey, SigningKey
from creditshare.demo import Federation, FederationLayout, read_enterprises
from creditshare.synth import generate

DEPARTMENTS = ("tax", "market", "court")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    mode: str, root: Path, data: Path, key: PrivateKey, n: int, levels: list[int]
) -> dict[str, Any]:
    layout = FederationLayout.write(
        root / mode,
        data,
        departments=DEPARTMENTS,
        coordinator_overrides={
            "participant_requests_per_minute": 100_000,
            "enterprise_queries_per_day": 100_000,
        },
        node_overrides={"fast_encryption": mode == "fast"},
    )
    layout.import_data()
    operator_key = layout.bootstrap_operator()
    usccs = [r["uscc"] for r in read_enterprises(data)][:20]
    with Federation(layout), CreditShareClient(layout.coordinator_url, api_key=operator_key) as op:
        bank_api = op.register_participant("bench-bank", "bank", "Bench Bank")["api_key"]
        consents: dict[str, str] = {}
        start = datetime.now(UTC) - timedelta(minutes=1)
        for uscc in usccs:
            signing = SigningKey.generate()
            ent = op.register_participant(
                f"e-{uscc.lower()}", "enterprise", uscc, uscc=uscc, signing_key=signing.verify_key
            )
            grant = ConsentGrant.create(
                uscc, "bench-bank", Purpose.PRE_LOAN_REVIEW, start, start + timedelta(days=1)
            )
            with CreditShareClient(layout.coordinator_url, api_key=ent["api_key"]) as c:
                consents[uscc] = c.grant_consent(grant.sign(signing))["consent_id"]

        def query(i: int) -> float:
            uscc = usccs[i % len(usccs)]
            with CreditShareClient(
                layout.coordinator_url, api_key=bank_api, private_key=key
            ) as bank:
                started = time.perf_counter()
                bank.query(uscc, consents[uscc])
                return time.perf_counter() - started

        for i in range(3):  # warm up: connections, and in fast mode the nodes' tables
            query(i)
        time.sleep(1.0)
        latencies = [query(i) for i in range(n)]
        throughput: dict[str, float] = {}
        for level in levels:
            total = max(n, 2 * level)
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=level) as pool:
                list(pool.map(query, range(total)))
            throughput[str(level)] = total / (time.perf_counter() - started)
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "queries": n,
        "throughput_qps": throughput,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    n, levels = (10, [1, 4]) if args.quick else (40, [1, 4, 8])
    key = PrivateKey.generate(2048)
    with tempfile.TemporaryDirectory(prefix="creditshare-bench-") as tmp:
        root = Path(tmp)
        generate(300, 5, root / "data")
        results = {
            mode: run(mode, root, root / "data", key, n, levels) for mode in ("stock", "fast")
        }
    stock, fast = results["stock"], results["fast"]
    print(
        f"{'':8}{'p50 ms':>10}{'p99 ms':>10}"
        + "".join(f"{'q/s @' + level:>12}" for level in map(str, levels))
    )
    for mode, row in results.items():
        print(
            f"{mode:8}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}"
            + "".join(f"{row['throughput_qps'][str(level)]:>12.1f}" for level in levels)
        )
    ratios = {
        "p50_stock_over_fast": stock["p50_ms"] / fast["p50_ms"],
        **{
            f"throughput_fast_over_stock_at_{level}": fast["throughput_qps"][str(level)]
            / stock["throughput_qps"][str(level)]
            for level in levels
        },
    }
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
