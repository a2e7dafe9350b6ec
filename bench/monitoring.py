"""One post-loan monitoring cycle at scale: sealed (HPKE) against unsealed, same run.

A federation on loopback: coordinator + 15 nodes (3 chains x tax, market, social,
court, utility), mutual TLS, SQLite, the ledger on. One bank subscribes, through the
public API, to every synthetic enterprise under its post_loan_monitoring consent (home
chain, every signal type, score_change included); each subscription is served by the
five nodes of its chain.
Before each measured cycle the court departments import a snapshot in which a tenth of
the enterprises get a new judgment, so the cycle carries real events among the padding.

* sealed: the product; every batch is HPKE-sealed to the bank's alert key;
* unsealed: the same nodes restarted under ``bench/_unsealed_node.py``, which frames
  batches without encryption (same length). A benchmark-only baseline.

Printed: the cycle's wall time (operator's POST /v1/monitoring/cycles, all nodes
answered and stored), sealed batches per second, the real events it delivered and how
fast the bank opened them, the ratio sealed/unsealed, and what the coordinator stores
per cycle: the sealed batches, the encrypted scores (one Paillier ciphertext per
score_change subscription; counted and sized), and the cycle's ledger leaf.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _unsealed_node import unsealed_opening

from creditshare.client import AlertInbox, CreditShareClient
from creditshare.consent import ConsentGrant, Purpose
from creditshare.crypto import AlertPrivateKey, PrivateKey
from creditshare.demo import Federation, FederationLayout, read_enterprises
from creditshare.identity import Chain
from creditshare.monitoring import Signal
from creditshare.node import import_into_node
from creditshare.synth import generate

DEPARTMENTS = ("tax", "market", "social", "court", "utility")
UNSEALED_NODE = (sys.executable, str(Path(__file__).with_name("_unsealed_node.py")))
SIGNALS = {s.value: None for s in Signal}
#: Share of enterprises that get a new judgment before each measured cycle.
JUDGED_SHARE = 0.1


class Bench:
    def __init__(self, root: Path, enterprises: int) -> None:
        self.root = root
        generate(enterprises, 7, root / "data")
        self.rows = read_enterprises(root / "data")
        self.layout = FederationLayout.write(
            root / "federation",
            root / "data",
            departments=DEPARTMENTS,
            coordinator_overrides={
                "participant_requests_per_minute": 10_000_000,
                "enterprise_queries_per_day": 10_000_000,
                "monitoring_interval_seconds": 0,
            },
        )
        self.layout.import_data()
        self.federation = Federation(self.layout)
        self.snapshots = 0

    def subscribe_all(self) -> str:
        """Register the bank and every enterprise, consent and subscribe (public API)."""
        layout = self.layout
        operator_key = layout.bootstrap_operator()
        # A cycle over 10,000 subscriptions takes longer than a query: the operator waits.
        self.operator = CreditShareClient(
            layout.coordinator_url, api_key=operator_key, timeout=1800.0
        )
        layout.publish_revocation_lists(operator_key)
        bank_key = self.operator.register_participant("bench-bank", "bank", "Bench Bank")
        self.bank = CreditShareClient(
            layout.coordinator_url,
            api_key=bank_key["api_key"],
            identity=layout.identity("bench-bank", "bank"),
            alert_key=AlertPrivateKey.generate(),
            private_key=PrivateKey.generate(2048),  # score_change: shares come under it
        )
        self.bank.upload_credentials()
        self.bank.register_paillier_key()
        start = datetime.now(UTC) - timedelta(minutes=1)

        def one(row: dict[str, str]) -> None:
            uscc, chain = row["uscc"], Chain(row["home_chain"])
            identity = layout.identity(f"e-{uscc.lower()}", "enterprise", uscc)
            issued = self.operator.register_participant(
                f"e-{uscc.lower()}",
                "enterprise",
                uscc,
                uscc=uscc,
                signing_key=identity.signing_key.verify_key,
            )
            grant = ConsentGrant.create(
                uscc,
                "bench-bank",
                Purpose.POST_LOAN_MONITORING,
                start,
                start + timedelta(days=30),
                chains=(chain,),
            )
            with CreditShareClient(
                layout.coordinator_url, api_key=issued["api_key"], identity=identity
            ) as ent:
                ent.upload_credentials()
                consent = ent.grant_consent(grant.sign(identity.signing_key))["consent_id"]
            self.bank.subscribe(uscc, consent, signals=SIGNALS)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(one, self.rows))
        return f"{len(self.rows)} subscriptions in {time.perf_counter() - started:.0f} s"

    def judge_some(self, share: float, offset: int) -> int:
        """Each court imports a snapshot giving one more judgment to ``share`` of its
        chain's enterprises (a first court record for those it held none of)."""
        step = max(1, round(1 / share))
        chosen = {r["uscc"] for i, r in enumerate(self.rows) if (i + offset) % step == 0}
        judged = 0
        self.snapshots += 1
        for node in self.layout.nodes:
            if node.department != "court":
                continue
            with node.data_file.open(encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                header, rows = list(reader.fieldnames or ()), {r["uscc"]: r for r in reader}
            for row in self.rows:
                if row["uscc"] in chosen and row["home_chain"] == node.chain.value:
                    record = rows.setdefault(
                        row["uscc"],
                        {
                            "uscc": row["uscc"],
                            "judgments_as_defendant": "0",
                            "dishonest_debtor": "0",
                        },
                    )
                    record["judgments_as_defendant"] = str(
                        int(record["judgments_as_defendant"]) + 1
                    )
                    judged += 1
            path = self.root / f"{node.node_id}-snapshot-{self.snapshots}.csv"
            with path.open("w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows.values())
            node.data_file.write_bytes(path.read_bytes())  # the next edit starts from here
            import_into_node(self.layout.node_settings(node), [path])
        return judged

    def cycle(self, inbox: AlertInbox, opening: AbstractContextManager[Any]) -> dict[str, Any]:
        started = time.perf_counter()
        summary: dict[str, Any] = self.operator.post("/v1/monitoring/cycles")
        wall = time.perf_counter() - started
        failed = [n for n in summary["nodes"] if n.get("error")]
        if failed:
            raise AssertionError(f"nodes failed in the measured cycle: {failed}")
        batches = sum(int(n["batches"]) for n in summary["nodes"])
        stored = scores = score_bytes = 0
        page = self.bank.get(f"/v1/alerts?after={inbox.cursor or '0'}&limit=1000")
        while page["alerts"]:
            for alert in page["alerts"]:
                stored += len(base64.b64decode(alert["sealed"]))
                if alert.get("kind") == "score":
                    scores += 1
                    score_bytes += len(base64.b64decode(alert["encrypted_score"]))
            page = self.bank.get(f"/v1/alerts?after={page['next_cursor']}&limit=1000")
        leaf = len(self.operator.get(f"/v1/ledger/entries/{summary['ledger_index']}")["leaf_data"])
        with opening as calls:
            opened = time.perf_counter()
            events = len(list(self.bank.alerts(inbox=inbox)))
            open_seconds = time.perf_counter() - opened
        if calls is not None and not calls[0]:
            raise AssertionError("the unsealed mode never used the unsealed opening")
        return {
            "wall_s": wall,
            "batches": batches,
            "batches_per_s": batches / wall,
            "events": events,
            "events_per_s": events / wall,
            "bank_open_s": open_seconds,
            "stored_bytes": stored,
            "scores": scores,
            "score_bytes": score_bytes,
            "ledger_leaf_bytes": leaf,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="300 enterprises, not 10,000")
    parser.add_argument(
        "--enterprises",
        type=int,
        help="enterprises to synthesise and subscribe to, one subscription each "
        "(overrides --quick; default 10,000)",
    )
    parser.add_argument(
        "--json", type=Path, help="also write the results and ratios to this JSON file"
    )
    args = parser.parse_args()
    enterprises = args.enterprises or (300 if args.quick else 10_000)
    with tempfile.TemporaryDirectory(prefix="creditshare-bench-") as tmp:
        bench = Bench(Path(tmp), enterprises)
        results: dict[str, dict[str, Any]] = {}
        with bench.federation:
            print(f"setup: {bench.subscribe_all()}")
            inbox = AlertInbox(Path(tmp) / "inbox.json")
            bench.cycle(inbox, nullcontext(None))  # warm-up: connections, first acks
            judged = bench.judge_some(JUDGED_SHARE, 0)
            results["sealed"] = bench.cycle(inbox, nullcontext(None))
            results["sealed"]["judged"] = judged
            # The same nodes (databases, subscriptions) restarted with sealing switched off.
            for node in bench.layout.nodes:
                bench.federation.stop_node(node.node_id)
            bench.federation.node_command = UNSEALED_NODE  # benchmark-only launcher
            for node in bench.layout.nodes:
                bench.federation.start_node(node.node_id)
            bench.cycle(inbox, unsealed_opening())
            judged = bench.judge_some(JUDGED_SHARE, 1)
            results["unsealed"] = bench.cycle(inbox, unsealed_opening())
            results["unsealed"]["judged"] = judged
            bench.bank.close()
            bench.operator.close()
    print(
        f"{'':10}{'wall s':>9}{'batches':>9}{'batch/s':>10}{'events':>8}{'event/s':>9}"
        f"{'open s':>8}{'stored KiB':>12}"
    )
    for mode, row in results.items():
        print(
            f"{mode:10}{row['wall_s']:>9.2f}{row['batches']:>9}{row['batches_per_s']:>10.0f}"
            f"{row['events']:>8}{row['events_per_s']:>9.1f}{row['bank_open_s']:>8.2f}"
            f"{row['stored_bytes'] / 1024:>12.0f}"
        )
    sealed, unsealed = results["sealed"], results["unsealed"]
    ratios = {
        "cycle_wall_sealed_over_unsealed": sealed["wall_s"] / unsealed["wall_s"],
        "bank_open_sealed_over_unsealed": sealed["bank_open_s"]
        / max(unsealed["bank_open_s"], 1e-9),
    }
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    print(
        f"coordinator stores per cycle: {sealed['stored_bytes']} bytes of sealed batches "
        f"({sealed['batches']} x {sealed['stored_bytes'] // max(sealed['batches'], 1)} B) "
        f"+ {sealed['scores']} encrypted scores ({sealed['score_bytes']} bytes) "
        f"+ one {sealed['ledger_leaf_bytes']}-byte ledger leaf"
    )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
