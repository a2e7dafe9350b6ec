"""Issue 12's acceptance: departments bring their own schemas, banks get the evaluated model.

A synthetic data set with categorical attributes (``tests/_synthetic_credit.py``) is
split across three real node processes by schema files written for it here, no code
change: two departments and the bureau's own node (its features; its labels stay in
the bureau's file). The bureau trains with the real ``creditshare bureau train`` CLI
on held-out ids it names; then every held-out enterprise signs a consent and a bank
queries its score with the trained model. The bank-path scores must give exactly the
AUC the job published, and each must be the plaintext model: weights and
preprocessing read from the nodes' databases, applied in Python to the raw files.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, FederationLayout
from creditshare.departments import Department, load_schema
from creditshare.federated._metrics import auc
from creditshare.identity import Chain

from .._synthetic_credit import DEPARTMENTS, SyntheticCredit, generate
from .conftest import Trust

MODEL_ID = "byo-schema-v1"
#: Share of the labelled enterprises the bureau holds out (named by id on the CLI).
TEST_SHARE = 0.25
TIMEOUT = 900


@pytest.fixture(scope="module")
def byo(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Federation, SyntheticCredit, dict[str, Path]]]:
    root = tmp_path_factory.mktemp("byo")
    data = generate(600, seed=12)
    schemas = data.write(root)
    layout = FederationLayout.write(
        root / "federation",
        root / "data",
        chains=[Chain.YRD],
        departments=DEPARTMENTS,
        schema_files=schemas,
    )
    counts = layout.import_data()
    assert counts == {f"yrd-{d}": len(data.rows[d]) for d in DEPARTMENTS}
    with Federation(layout) as running:
        yield running, data, schemas


def _held_out(data: SyntheticCredit, path: Path) -> list[str]:
    """A stratified TEST_SHARE of the labelled ids, written one per line to ``path``."""
    rng = np.random.default_rng(7)
    held: list[str] = []
    for cls in (0, 1):
        members = sorted(u for u, v in data.labels.items() if v == cls)
        held += [
            members[k] for k in rng.permutation(len(members))[: round(TEST_SHARE * len(members))]
        ]
    path.write_text("".join(f"{u}\n" for u in sorted(held)), encoding="utf-8")
    return held


def _train(trust: Trust, api_key: str, nodes: list[str], test_ids: Path, tmp: Path) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "creditshare",
            "bureau",
            "train",
            "--coordinator",
            trust.url,
            "--api-key",
            api_key,
            "--identity",
            str(trust.layout.identity_dir("byo-bureau", "bureau")),
            "--key-file",
            str(tmp / "bureau-key.json"),
            "--labels",
            str(trust.layout.data_dir.parent / "labels.csv"),
            *[arg for node in nodes for arg in ("--node", node)],
            "--model-id",
            MODEL_ID,
            "--test-ids",
            str(test_ids),
            "--epochs",
            "3",
            "--batch-size",
            "64",
            "--learning-rate",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _shard(federation: Federation, node_id: str) -> dict[str, Any]:
    """The trained shard as the node keeps it: weights, offset, preprocessing."""
    node = next(n for n in federation.layout.nodes if n.node_id == node_id)
    path = federation.layout.node_settings(node).database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        cursor = conn.execute("SELECT * FROM model_shard WHERE model_id = ?", (MODEL_ID,))
        names = [c[0] for c in cursor.description]
        row = cursor.fetchone()
    assert row is not None, f"{node_id} holds no shard of {MODEL_ID}"
    return dict(zip(names, row, strict=True))


def _plaintext(department: Department, raw: dict[str, str], shard: dict[str, Any]) -> float:
    """Σ w·pre(x) + offset, computed here from the raw CSV row and the stored document."""
    record = {f.name: f.parse(raw[f.name]) for f in department.fields}
    values = department.feature_values(record)
    weights: dict[str, float] = json.loads(shard["weights"])
    transforms = {t["name"]: t for t in json.loads(shard["preprocessing"])["features"]}
    assert set(weights) == set(transforms) == set(values)
    terms = []
    for name, weight in weights.items():
        t = transforms[name]
        x = (values[name] - t["centre"]) / t["scale"]
        if t["clip"] is not None:
            x = min(max(x, -t["clip"]), t["clip"])
        terms.append(weight * x)
    return math.fsum([*terms, float(shard["offset"])])


def test_three_schema_nodes_train_by_cli_and_banks_get_the_evaluated_model(
    byo: tuple[Federation, SyntheticCredit, dict[str, Path]],
    bank_key: PrivateKey,
    tmp_path: Path,
) -> None:
    federation, data, schemas = byo
    nodes = [f"yrd-{d}" for d in DEPARTMENTS]
    trust = Trust(federation, bank_key, "byo-bank")
    try:
        api_key, _ = trust.participant("byo-bureau", "bureau", "Bring-your-own Bureau")
        held = _held_out(data, tmp_path / "test-ids.txt")
        out = _train(trust, api_key, nodes, tmp_path / "test-ids.txt", tmp_path)

        # The job id is announced before training starts, and the model is published.
        started = re.search(r"training job (\S+) started", out)
        assert started is not None, out
        assert out.index(started.group(0)) < out.index("published")
        entry = {m["id"]: m for m in trust.bank.models()}[MODEL_ID]
        published_auc = float(entry["metrics"]["test_auc"])
        assert entry["features"]["yrd-registry"][:2] == [
            "industry=manufacturing",
            "industry=retail",
        ]

        # The held-out split is exactly the named ids every node holds.
        everywhere = set(data.labels).intersection(
            *({r["uscc"] for r in data.rows[d]} for d in DEPARTMENTS)
        )
        test = sorted(set(held) & everywhere)
        assert len(test) < len(held)  # some named ids are missing at the finance node
        assert entry["metrics"]["test_rows"] == len(test)

        # Every held-out enterprise consents; the bank scores it with the trained model.
        bank_scores = {}
        for uscc in test:
            profile = trust.bank.query(
                uscc, trust.consent(uscc), model_id=MODEL_ID, chains=[Chain.YRD.value]
            )
            assert sorted(profile.answered) == sorted(nodes) and not profile.failed
            bank_scores[uscc] = profile.linear_score
        y = np.array([data.labels[u] for u in test], dtype=float)
        assert 0 < y.sum() < len(y)
        bank_auc = auc(y, np.array([bank_scores[u] for u in test]))
        assert bank_auc == pytest.approx(published_auc, abs=1e-4)
        assert bank_auc > 0.6  # the model learnt the planted signal

        # Each bank-path score is the plaintext model applied to the raw files.
        shards = {d: _shard(federation, f"yrd-{d}") for d in DEPARTMENTS}
        departments = {d: load_schema(schemas[d]) for d in DEPARTMENTS}
        raw = {d: {r["uscc"]: r for r in data.rows[d]} for d in DEPARTMENTS}
        intercept = float(entry["intercept"])
        for uscc in test:
            expected = intercept + math.fsum(
                _plaintext(departments[d], raw[d][uscc], shards[d]) for d in DEPARTMENTS
            )
            assert bank_scores[uscc] == pytest.approx(expected, abs=1e-6), uscc
        # The preprocessing is not the identity: something was standardised and clipped.
        finance = json.loads(shards["finance"]["preprocessing"])["features"]
        assert all(t["scale"] != 1.0 and t["clip"] is not None for t in finance)
    finally:
        trust.close()
