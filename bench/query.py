"""End-to-end profile queries: latency and throughput, stock vs fast vs no encryption.

Three federations on loopback, identical but for how nodes encrypt: coordinator +
9 nodes (3 chains x tax, market, court), mutual TLS, 2048-bit keys, SQLite, consent
checks and the ledger on. Latency includes the bank's decryption.

* stock: phe's fresh r^n per value (`fast_encryption = false`);
* fast: fixed-base tables for recent requester keys (`fast_encryption = true`);
* plaintext: the fast configuration, but every node runs under
  `bench/_plaintext_node.py`, which replaces encryption by c = 1 + n*m (obfuscator 1)
  and the bank decrypts with m = (c - 1) / n. A benchmark-only baseline: there is no
  such switch in the product. The decrypted profiles of all three modes must match.

A fourth federation (fast encryption) holds a synthetic 100-tree, depth-3 gbdt model
whose splits three nodes own: the private-scoring row, p50/p99 against the
logistic query in the same run, and a profile of one chain's parts.

Ratios are measured in this same run: fast/stock, and the privacy overhead
fast/plaintext (p50 latency; the goal is at most 2x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _plaintext_node import plaintext_decryption
from _trees import install_tree_model, profile_chain

from creditshare.client import DEFAULT_MODEL_ID, CreditProfile, CreditShareClient, Identity
from creditshare.consent import ConsentGrant, Purpose
from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, FederationLayout, read_enterprises
from creditshare.errors import ProblemError
from creditshare.synth import generate

DEPARTMENTS = ("tax", "market", "court")
MODES = ("stock", "fast", "plaintext")
PLAINTEXT_NODE = (sys.executable, str(Path(__file__).with_name("_plaintext_node.py")))
#: The tree row: a synthetic 100-tree, depth-3 model, its splits owned by three nodes.
TREE_MODEL = "bench-trees"
TREE_OWNERS = ("yrd-court", "yrd-market", "yrd-tax")
TREES, TREE_DEPTH = 100, 3
#: The issue's target for fast p50 / plaintext p50.
PRIVACY_OVERHEAD_TARGET = 2.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def outcome(profile: CreditProfile) -> tuple[Any, ...]:
    """What the bank reads from a profile (not the query id, which differs per run)."""
    return (
        profile.uscc,
        profile.model_id,
        profile.linear_score,
        profile.score,
        profile.nodes_with_records,
        [(i.node, i.name, i.value, i.label) for i in profile.indicators],
        profile.answered,
        profile.failed,
    )


def run(
    mode: str, root: Path, data: Path, key: PrivateKey, n: int, levels: list[int]
) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """Stats for one mode, and the outcomes of its warm-up queries (to compare modes)."""
    plaintext = mode == "plaintext"
    layout = FederationLayout.write(
        root / mode,
        data,
        departments=DEPARTMENTS,
        coordinator_overrides={
            "participant_requests_per_minute": 100_000,
            "enterprise_queries_per_day": 100_000,
        },
        node_overrides={"fast_encryption": mode != "stock"},
    )
    layout.import_data()
    operator_key = layout.bootstrap_operator()
    usccs = [r["uscc"] for r in read_enterprises(data)][:20]
    federation = Federation(layout, node_command=PLAINTEXT_NODE if plaintext else None)
    decryption: AbstractContextManager[list[int]] = (
        plaintext_decryption() if plaintext else nullcontext([0])
    )
    with (
        federation,
        CreditShareClient(layout.coordinator_url, api_key=operator_key) as op,
        decryption as decryptions,
    ):
        layout.publish_revocation_lists(operator_key)
        bank_api, bank_identity, consents = enrol(layout, op, usccs)

        def timed(i: int) -> tuple[float, CreditProfile]:
            uscc = usccs[i % len(usccs)]
            with CreditShareClient(
                layout.coordinator_url, api_key=bank_api, private_key=key, identity=bank_identity
            ) as bank:
                started = time.perf_counter()
                profile = bank.query(uscc, consents[uscc])
                return time.perf_counter() - started, profile

        def query(i: int) -> float:
            latency, profile = timed(i)
            if profile.failed:
                raise AssertionError(f"sequential query with failed nodes: {profile.failed}")
            return latency

        def attempt(i: int) -> str:
            """A concurrent query: complete, partial (some node refused) or failed (503).

            Concurrent queries race on the ledger: a node that already trusts a newer
            tree head refuses a receipt under an older one, and the coordinator's
            retries do not always win, so some answers come back degraded. They are
            counted, not hidden: a degraded answer is cheaper than a complete one.
            """
            try:
                _, profile = timed(i)
            except ProblemError as exc:
                if exc.status != 503:
                    raise
                return "failed"
            return "partial" if profile.failed else "complete"

        # Warm up: connections, and (fast, plaintext) the nodes' tables. The first query
        # under the key is answered with stock encryption, later ones with the table,
        # so the outcomes compared across modes cover both node encryption paths.
        outcomes = [outcome(timed(i)[1]) for i in range(3)]
        time.sleep(1.0)
        latencies = [query(i) for i in range(n)]
        throughput: dict[str, float] = {}
        degraded: dict[str, dict[str, int]] = {}
        for level in levels:
            total = max(n, 2 * level)
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=level) as pool:
                answers = list(pool.map(attempt, range(total)))
            throughput[str(level)] = total / (time.perf_counter() - started)
            degraded[str(level)] = {k: answers.count(k) for k in ("partial", "failed")}
    if plaintext and not decryptions[0]:
        raise AssertionError("plaintext mode never used the plaintext decryption")
    stats = {
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "queries": n,
        "throughput_qps": throughput,
        "degraded_answers": degraded,
    }
    return stats, outcomes


def enrol(
    layout: FederationLayout, op: CreditShareClient, usccs: list[str]
) -> tuple[str, Identity, dict[str, str]]:
    """A bank with its credentials uploaded, and each enterprise's consent to it."""
    bank_api: str = op.register_participant("bench-bank", "bank", "Bench Bank")["api_key"]
    bank_identity = layout.identity("bench-bank", "bank")
    with CreditShareClient(
        layout.coordinator_url, api_key=bank_api, identity=bank_identity
    ) as bank:
        bank.upload_credentials()
    consents: dict[str, str] = {}
    start = datetime.now(UTC) - timedelta(minutes=1)
    for uscc in usccs:
        identity = layout.identity(f"e-{uscc.lower()}", "enterprise", uscc)
        signing = identity.signing_key
        ent = op.register_participant(
            f"e-{uscc.lower()}", "enterprise", uscc, uscc=uscc, signing_key=signing.verify_key
        )
        grant = ConsentGrant.create(
            uscc, "bench-bank", Purpose.PRE_LOAN_REVIEW, start, start + timedelta(days=1)
        )
        with CreditShareClient(
            layout.coordinator_url, api_key=ent["api_key"], identity=identity
        ) as c:
            c.upload_credentials()
            consents[uscc] = c.grant_consent(grant.sign(signing))["consent_id"]
    return bank_api, bank_identity, consents


def run_trees(root: Path, data: Path, key: PrivateKey, n: int) -> dict[str, Any]:
    """The issue's tree row: a 100-tree, depth-3 model whose splits three nodes own,
    queried in the same run (same fast-encryption federation) as the logistic model."""
    layout = FederationLayout.write(
        root / "trees",
        data,
        departments=DEPARTMENTS,
        node_deadline_seconds=10.0,
        coordinator_overrides={
            "participant_requests_per_minute": 100_000,
            "enterprise_queries_per_day": 100_000,
        },
        node_overrides={"fast_encryption": True},
    )
    layout.import_data()
    model, _ = install_tree_model(layout, TREE_MODEL, TREE_OWNERS, TREES, TREE_DEPTH)
    operator_key = layout.bootstrap_operator()
    usccs = [r["uscc"] for r in read_enterprises(data)][:20]
    with (
        Federation(layout),
        CreditShareClient(layout.coordinator_url, api_key=operator_key) as op,
    ):
        layout.publish_revocation_lists(operator_key)
        bank_api, bank_identity, consents = enrol(layout, op, usccs)
        with CreditShareClient(
            layout.coordinator_url, api_key=bank_api, private_key=key, identity=bank_identity
        ) as bank:

            def timed(i: int, model_id: str) -> float:
                uscc = usccs[i % len(usccs)]
                started = time.perf_counter()
                profile = bank.query(uscc, consents[uscc], model_id=model_id)
                if profile.failed:
                    raise AssertionError(f"query with failed nodes: {profile.failed}")
                return time.perf_counter() - started

            for i in range(3):  # warm up: connections and the nodes' encryption tables
                timed(i, DEFAULT_MODEL_ID)
                timed(i, TREE_MODEL)
            latencies: dict[str, list[float]] = {DEFAULT_MODEL_ID: [], TREE_MODEL: []}
            for i in range(n):  # interleaved: both see the same machine load
                for model_id, values in latencies.items():
                    values.append(timed(i, model_id))
    stats = {
        model_id: {
            "p50_ms": 1000 * statistics.median(values),
            "p99_ms": 1000 * percentile(values, 0.99),
            "queries": n,
        }
        for model_id, values in latencies.items()
    }
    return {
        "latency": stats,
        "leaves": model.leaf_count,
        "profile_ms": profile_chain(key, model, layout.coordinator_settings().scale),
    }


def report_trees(trees: dict[str, Any]) -> None:
    logistic, gbdt = trees["latency"][DEFAULT_MODEL_ID], trees["latency"][TREE_MODEL]
    print(
        f"\nprivate tree scoring ({TREES} trees, depth {TREE_DEPTH}, {len(TREE_OWNERS)} nodes, "
        f"{trees['leaves']} leaves), same federation:"
    )
    print(f"{'':24}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'logistic':24}{logistic['p50_ms']:>10.1f}{logistic['p99_ms']:>10.1f}")
    print(f"{'gbdt':24}{gbdt['p50_ms']:>10.1f}{gbdt['p99_ms']:>10.1f}")
    print(f"gbdt / logistic p50: {gbdt['p50_ms'] / logistic['p50_ms']:.2f}x")
    print("where a chain's time goes (one core, in-process):")
    for name, ms in trees["profile_ms"].items():
        print(f"  {name:42}{ms:>10.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--trees-only", action="store_true", help="only the tree-model row (and its profile)"
    )
    args = parser.parse_args()
    n, levels = (10, [1, 4]) if args.quick else (40, [1, 4, 8])
    key = PrivateKey.generate(2048)
    with tempfile.TemporaryDirectory(prefix="creditshare-bench-") as tmp:
        root = Path(tmp)
        generate(300, 5, root / "data")
        trees = run_trees(root, root / "data", key, n)
        if args.trees_only:
            report_trees(trees)
            if args.json:
                args.json.write_text(json.dumps({"trees": trees}, indent=2))
            return
        runs = {mode: run(mode, root, root / "data", key, n, levels) for mode in MODES}
    results = {mode: stats for mode, (stats, _) in runs.items()}
    # The baseline is the same pipeline: every mode decrypts to the same profiles.
    reference = runs["fast"][1]
    if not any(o[4] for o in reference):
        raise AssertionError("no sampled enterprise has records: the comparison is vacuous")
    for mode, (_, outcomes) in runs.items():
        if outcomes != reference:
            raise AssertionError(f"{mode} profiles differ from fast-mode ones")
    stock, fast, plain = results["stock"], results["fast"], results["plaintext"]
    print(
        f"{'':10}{'p50 ms':>10}{'p99 ms':>10}"
        + "".join(f"{'q/s @' + level:>12}" for level in map(str, levels))
    )
    for mode, row in results.items():
        print(
            f"{mode:10}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}"
            + "".join(f"{row['throughput_qps'][str(level)]:>12.1f}" for level in levels)
        )
    ratios = {
        "p50_stock_over_fast": stock["p50_ms"] / fast["p50_ms"],
        **{
            f"throughput_fast_over_stock_at_{level}": fast["throughput_qps"][str(level)]
            / stock["throughput_qps"][str(level)]
            for level in levels
        },
        "privacy_overhead_p50": fast["p50_ms"] / plain["p50_ms"],
        **{
            f"throughput_plaintext_over_fast_at_{level}": plain["throughput_qps"][str(level)]
            / fast["throughput_qps"][str(level)]
            for level in levels
        },
    }
    for mode, row in results.items():
        for level, counts in row["degraded_answers"].items():
            if any(counts.values()):
                print(
                    f"note: {mode} @{level}: {counts['partial']} partial and "
                    f"{counts['failed']} failed answers (stale tree heads under concurrency)"
                )
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    overhead = ratios["privacy_overhead_p50"]
    verdict = "met" if overhead <= PRIVACY_OVERHEAD_TARGET else "NOT met"
    print(f"privacy overhead target <= {PRIVACY_OVERHEAD_TARGET:.0f}x: {verdict}")
    report_trees(trees)
    if args.json:
        args.json.write_text(
            json.dumps({"results": results, "ratios": ratios, "trees": trees}, indent=2)
        )


if __name__ == "__main__":
    main()
