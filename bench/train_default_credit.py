"""Federated vs centralised logistic regression on the public default_credit split.

Same 70/30 stratified split (seed 42) for every run. The bureau holds the FATE
"guest" file (labels + 13 features), one data node the "host" file (10 features);
2048-bit Paillier keys, real encryption. Printed for the federated model and for
scikit-learn's centralised LogisticRegression on the joined data (raw, and with the
same local winsorising the federated parties apply): test AUC and KS, and the
federated run's seconds per epoch. Ratios are against baselines measured in this
same run. ``--quick`` trains on a subsample in CI-sized time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from creditshare.crypto import PrivateKey
from creditshare.federated._metrics import auc, ks
from creditshare.federated._vlr import BureauParty, EpochReport, HostParty, TrainingConfig, train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "default_credit"


def load(data_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    guest = np.loadtxt(data_dir / "default_credit_hetero_guest.csv", delimiter=",", skiprows=1)
    host = np.loadtxt(data_dir / "default_credit_hetero_host.csv", delimiter=",", skiprows=1)
    if not np.array_equal(guest[:, 0], host[:, 0]):
        raise SystemExit("guest and host files are not aligned by id")
    ids = [str(int(i)) for i in guest[:, 0]]
    return ids, guest[:, 1], guest[:, 2:], host[:, 1:]


def centralised(x: np.ndarray, y: np.ndarray, train_idx: Any, test_idx: Any) -> dict[str, float]:
    started = time.perf_counter()
    model = LogisticRegression(max_iter=1000).fit(x[train_idx], y[train_idx])
    seconds = time.perf_counter() - started
    scores = model.decision_function(x[test_idx])
    return {"auc": auc(y[test_idx], scores), "ks": ks(y[test_idx], scores), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="subsample for a run under a minute")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--key-bits", type=int, default=2048)
    args = parser.parse_args()

    ids, y, xg, xh = load(args.data)
    index = np.arange(len(ids))
    train_idx, test_idx = train_test_split(index, test_size=0.3, stratify=y, random_state=42)
    if args.quick:
        rng = np.random.default_rng(0)
        train_idx = rng.choice(train_idx, 3000, replace=False)
        test_idx = rng.choice(test_idx, 1000, replace=False)
    config = TrainingConfig(
        max_epochs=args.epochs or (3 if args.quick else 10),
        batch_size=256,
    )
    joined = np.hstack([xg, xh])
    raw = centralised(joined, y, train_idx, test_idx)
    same = centralised(
        np.clip(joined, -config.feature_clip, config.feature_clip), y, train_idx, test_idx
    )

    key = PrivateKey.generate(args.key_bits)
    bureau = BureauParty(
        labels={ids[i]: int(y[i]) for i in index},
        key=key,
        config=config,
        rows={ids[i]: xg[i] for i in index},
        feature_names=[f"g{j}" for j in range(xg.shape[1])],
    )
    host = HostParty(
        "host",
        {ids[i]: xh[i] for i in index},
        [f"h{j}" for j in range(xh.shape[1])],
        key.public_key,
        config,
    )
    shuffled = np.random.default_rng(42).permutation(train_idx)
    n_valid = int(len(shuffled) * config.validation_fraction)
    valid_ids = [ids[i] for i in shuffled[:n_valid]]
    fit_ids = [ids[i] for i in shuffled[n_valid:]]

    def progress(report: EpochReport) -> None:
        print(
            f"  epoch {report.epoch}: {report.seconds:.1f} s, validation loss "
            f"{report.validation_loss:.4f}, AUC {report.validation_auc:.4f}",
            flush=True,
        )

    started = time.perf_counter()
    result = train(bureau, [host], fit_ids, valid_ids, config, on_epoch=progress)
    seconds = time.perf_counter() - started
    test_ids = [ids[i] for i in test_idx]
    scores = bureau.scores(test_ids, [host.forward(test_ids)])
    federated = {
        "auc": auc(y[test_idx], scores),
        "ks": ks(y[test_idx], scores),
        "seconds_per_epoch": float(np.mean([e.seconds for e in result.epochs])),
        "seconds": seconds,
    }
    doc = {
        "key_bits": args.key_bits,
        "rows": {"train": len(fit_ids), "validation": len(valid_ids), "test": len(test_idx)},
        "epochs": len(result.epochs),
        "stopped_early": result.stopped_early,
        "config": {
            "learning_rate": config.learning_rate,
            "batch_size": config.batch_size,
            "feature_clip": config.feature_clip,
        },
        "federated": federated,
        "centralised": raw,
        "centralised_same_clipping": same,
        "auc_gap_vs_centralised": raw["auc"] - federated["auc"],
        "auc_gap_vs_same_clipping": same["auc"] - federated["auc"],
        "time_ratio_federated_vs_centralised": seconds / max(raw["seconds"], 1e-9),
    }
    print(f"{'':24}{'test AUC':>10}{'KS':>8}")
    for name, row in (
        ("federated", federated),
        ("centralised", raw),
        ("centralised, clipped", same),
    ):
        print(f"{name:24}{row['auc']:>10.4f}{row['ks']:>8.4f}")
    print(
        f"AUC gap vs centralised {doc['auc_gap_vs_centralised']:+.4f}, vs same clipping "
        f"{doc['auc_gap_vs_same_clipping']:+.4f}; {args.key_bits}-bit keys; "
        f"{len(result.epochs)} epochs at {federated['seconds_per_epoch']:.1f} s/epoch; "
        f"federated/centralised time x{doc['time_ratio_federated_vs_centralised']:.0f}"
    )
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
