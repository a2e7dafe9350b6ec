"""Federated vs centralised logistic regression on the public default_credit split.

Same 70/30 stratified split (seed 42) for every run. The bureau holds the FATE
"guest" file (labels + 13 features), one data node the "host" file (10 features);
2048-bit Paillier keys, real encryption, every party in this one process. Printed:

* test AUC and KS of the federated model (packed, obfuscators from a worker process:
  the defaults) and of scikit-learn's centralised LogisticRegression on the joined
  data (raw, and with the same local winsorising the federated parties apply);
* seconds per epoch of the same protocol with packing off, with the obfuscator
  pool off, and run in plaintext (numpy, no encryption: same batches, same Taylor
  residuals, same clipping), as ratios against the default measured in this run.
  The comparison runs train ``--compare-epochs`` epochs (their first epochs see the
  same batches, so their validation losses must agree with the default's).

``--quick`` trains on a subsample in CI-sized time.
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

from creditshare.crypto import Encryptor, PooledEncryptor, PrivateKey
from creditshare.federated import FeatureTransform, Preprocessing, evaluation_scores, split_batches
from creditshare.federated._metrics import auc, ks, log_loss
from creditshare.federated._vlr import BureauParty, EpochReport, HostParty, TrainingConfig, train

#: The public data set, shipped in the repository with its provenance (SOURCE.md).
DATA = Path(__file__).resolve().parents[1] / "data" / "default_credit"


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


Split = tuple[list[str], list[str], list[str]]  # fit, validation, test ids


def _clip_only(names: list[str], config: TrainingConfig) -> Preprocessing:
    """The features arrive standardised over the whole data set: only the clip is left."""
    return Preprocessing(tuple(FeatureTransform(n, 0.0, 1.0, config.feature_clip) for n in names))


def federated(
    key: PrivateKey,
    config: TrainingConfig,
    data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray],
    split: Split,
    encryptor: Encryptor | None,
    label: str,
) -> dict[str, Any]:
    ids, y, xg, xh = data
    fit_ids, valid_ids, test_ids = split
    g_names, h_names = [f"g{j}" for j in range(xg.shape[1])], [f"h{j}" for j in range(xh.shape[1])]
    bureau = BureauParty(
        labels={i: int(v) for i, v in zip(ids, y, strict=True)},
        key=key,
        config=config,
        rows=dict(zip(ids, xg, strict=True)),
        feature_names=g_names,
        encryptor=encryptor,
        preprocessing=_clip_only(g_names, config),
    )
    host = HostParty(
        "host",
        dict(zip(ids, xh, strict=True)),
        h_names,
        key.public_key,
        config,
        encryptor=encryptor,
        preprocessing=_clip_only(h_names, config),
    )

    def progress(report: EpochReport) -> None:
        print(
            f"  {label} epoch {report.epoch}: {report.seconds:.1f} s, validation loss "
            f"{report.validation_loss:.4f}, AUC {report.validation_auc:.4f}",
            flush=True,
        )

    started = time.perf_counter()
    result = train(bureau, [host], fit_ids, valid_ids, config, on_epoch=progress)
    seconds = time.perf_counter() - started
    scores = evaluation_scores(bureau, [host], test_ids, config)
    labels = bureau.labels(test_ids)
    return {
        "auc": auc(labels, scores),
        "ks": ks(labels, scores),
        "epochs": len(result.epochs),
        "stopped_early": result.stopped_early,
        "seconds_per_epoch": float(np.mean([e.seconds for e in result.epochs])),
        "first_validation_loss": result.epochs[0].validation_loss,
        "seconds": seconds,
    }


def plaintext_federated(
    config: TrainingConfig,
    data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray],
    split: Split,
) -> dict[str, Any]:
    """The same protocol with no encryption: batches, Taylor residuals, clipping, stopping."""
    ids, y, xg, xh = data
    fit_ids, valid_ids, test_ids = split
    pos = {i: k for k, i in enumerate(ids)}
    clip = config.feature_clip
    g_all, h_all = np.clip(xg, -clip, clip), np.clip(xh, -clip, clip)
    wg, wh, b = np.zeros(xg.shape[1]), np.zeros(xh.shape[1]), 0.0
    rng = np.random.default_rng(config.seed)
    order_ids = np.array(fit_ids)
    valid = [pos[i] for i in valid_ids]
    epochs: list[float] = []
    losses: list[float] = []
    best, stale = np.inf, 0
    for epoch in range(config.max_epochs):
        started = time.perf_counter()
        order = order_ids[rng.permutation(len(order_ids))]
        for batch in split_batches(list(order), config.batch_size):
            rows = [pos[i] for i in batch]
            g, h = g_all[rows], h_all[rows]
            d = 0.5 + 0.25 * (g @ wg + h @ wh + b) - y[rows]
            rate = config.rate(epoch)
            wg = wg - rate * (g.T @ d / len(rows) + config.l2 * wg)
            wh = wh - rate * (h.T @ d / len(rows) + config.l2 * wh)
            b -= rate * d.mean()
        loss = log_loss(y[valid], g_all[valid] @ wg + h_all[valid] @ wh + b)
        epochs.append(time.perf_counter() - started)
        losses.append(loss)
        if loss < best - config.min_improvement:
            best, stale = loss, 0
        else:
            stale += 1
            if stale >= config.early_stopping_rounds:
                break
    test = [pos[i] for i in test_ids]
    scores = g_all[test] @ wg + h_all[test] @ wh + b
    return {
        "auc": auc(y[test], scores),
        "ks": ks(y[test], scores),
        "epochs": len(epochs),
        "seconds_per_epoch": float(np.mean(epochs)),
        "first_validation_loss": losses[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="subsample for a run under a minute")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--compare-epochs", type=int, default=1)
    parser.add_argument("--key-bits", type=int, default=2048)
    args = parser.parse_args()

    ids, y, xg, xh = load(args.data)
    data = (ids, y, xg, xh)
    index = np.arange(len(ids))
    train_idx, test_idx = train_test_split(index, test_size=0.3, stratify=y, random_state=42)
    if args.quick:
        rng = np.random.default_rng(0)
        train_idx = rng.choice(train_idx, 3000, replace=False)
        test_idx = rng.choice(test_idx, 1000, replace=False)
    config = TrainingConfig(max_epochs=args.epochs or (3 if args.quick else 10), batch_size=256)
    joined = np.hstack([xg, xh])
    raw = centralised(joined, y, train_idx, test_idx)
    same = centralised(
        np.clip(joined, -config.feature_clip, config.feature_clip), y, train_idx, test_idx
    )
    shuffled = np.random.default_rng(42).permutation(train_idx)
    n_valid = int(len(shuffled) * config.validation_fraction)
    split: Split = (
        [ids[i] for i in shuffled[n_valid:]],
        [ids[i] for i in shuffled[:n_valid]],
        [ids[i] for i in test_idx],
    )

    key = PrivateKey.generate(args.key_bits)
    compare = config.replace(max_epochs=args.compare_epochs)
    with PooledEncryptor(key.public_key, workers=1) as pool:
        time.sleep(1.0)  # the worker's spawn and table build, as a long-running party has
        main_run = federated(key, config, data, split, pool, "packed+pool")
        unpacked = federated(
            key, compare.replace(packing=False), data, split, pool, "unpacked+pool"
        )
    no_pool = federated(key, compare, data, split, None, "packed, no pool")
    plain = plaintext_federated(config, data, split)

    runs = {
        "federated_packed_pool": main_run,
        "federated_unpacked_pool": unpacked,
        "federated_packed_no_pool": no_pool,
        "plaintext_federated": plain,
    }
    spe = main_run["seconds_per_epoch"]
    doc = {
        "key_bits": args.key_bits,
        "rows": {"train": len(split[0]), "validation": len(split[1]), "test": len(split[2])},
        "config": {
            "learning_rate": config.learning_rate,
            "batch_size": config.batch_size,
            "feature_clip": config.feature_clip,
        },
        "runs": runs,
        "centralised": raw,
        "centralised_same_clipping": same,
        "auc_gap_vs_centralised": raw["auc"] - main_run["auc"],
        "auc_gap_vs_same_clipping": same["auc"] - main_run["auc"],
        "ratios": {
            "unpacked_over_packed_seconds_per_epoch": unpacked["seconds_per_epoch"] / spe,
            "no_pool_over_pool_seconds_per_epoch": no_pool["seconds_per_epoch"] / spe,
            "encrypted_over_plaintext_seconds_per_epoch": spe
            / max(plain["seconds_per_epoch"], 1e-9),
            "federated_over_centralised_seconds": main_run["seconds"] / max(raw["seconds"], 1e-9),
        },
    }
    print(f"{'':28}{'test AUC':>10}{'KS':>8}{'epochs':>8}{'s/epoch':>10}{'1st val loss':>14}")
    for name, row in runs.items():
        # Comparison runs stop after --compare-epochs: their AUC would not be comparable.
        partial = row is unpacked or row is no_pool
        auc_text = " " * 18 if partial else f"{row['auc']:>10.4f}{row['ks']:>8.4f}"
        print(
            f"{name:28}{auc_text}{row['epochs']:>8}{row['seconds_per_epoch']:>10.2f}"
            f"{row['first_validation_loss']:>14.5f}"
        )
    for name, row in (("centralised", raw), ("centralised, clipped", same)):
        print(f"{name:28}{row['auc']:>10.4f}{row['ks']:>8.4f}")
    print(
        f"AUC gap vs centralised {doc['auc_gap_vs_centralised']:+.4f}, vs same clipping "
        f"{doc['auc_gap_vs_same_clipping']:+.4f}; {args.key_bits}-bit keys"
    )
    for name, value in doc["ratios"].items():
        print(f"{name}: {value:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
