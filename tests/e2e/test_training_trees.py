"""A bureau trains gradient-boosted trees across real data nodes through the coordinator.

Real node processes (gRPC, mutual TLS), a real coordinator (HTTP), 2048-bit Paillier:
the job's curve grows per tree, the model is registered as gbdt, each owning node keeps
a tree shard, the published test metrics are exactly what the plaintext model (the
published ``TreeModel`` and the nodes' own rules) gives the held-out enterprises and
a bank's query decrypts to it, a node stopped mid-training fails the job with its
name, and an interrupted bureau cancels its job.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fastapi import FastAPI

from creditshare.client import CreditShareClient, train_model
from creditshare.client._bureau import _b64, align_and_open, start_job
from creditshare.coordinator import create_app
from creditshare.crypto import Ciphertext, PrivateKey
from creditshare.demo import Federation
from creditshare.departments import get_department
from creditshare.errors import ClientError, ProblemError
from creditshare.federated import TrainingConfig, auc, ks
from creditshare.node._storage import ShardStore, make_engine
from creditshare.trees import TreeConfig, TreeModel, TreeShard

from .conftest import (
    Trust,
    bureau_labels,
    signed_job_body,
    synthetic_federation,
    training_parties,
)

DEPARTMENTS = ("tax", "market")
NODES = [f"yrd-{d}" for d in DEPARTMENTS]
CONFIG = TreeConfig(trees=3, max_depth=2, max_bins=8, validation_fraction=0.2)


@pytest.fixture(scope="module")
def tree_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with synthetic_federation(
        tmp_path_factory.mktemp("tree-training"), 500, DEPARTMENTS
    ) as running:
        yield running


@pytest.fixture(scope="module")
def parties(
    tree_federation: Federation, bank_key: PrivateKey
) -> Iterator[tuple[Trust, CreditShareClient]]:
    with training_parties(tree_federation, bank_key, "tree-bank") as both:
        yield both


def _rows(federation: Federation, department: str) -> dict[str, dict[str, str]]:
    path = federation.layout.data_dir / "yrd" / f"{department}.csv"
    with path.open() as handle:
        return {r["uscc"]: r for r in csv.DictReader(handle)}


def _tree_shards(federation: Federation, model_id: str) -> dict[str, TreeShard]:
    """Each node's kept tree shard of ``model_id``, read from its database."""
    shards: dict[str, TreeShard] = {}
    for node in federation.layout.nodes:
        settings = federation.layout.node_settings(node)
        usable, _ = ShardStore(make_engine(settings.database_url)).usable_trees(None)
        if model_id in usable:
            shards[node.node_id] = usable[model_id]
    return shards


def test_train_trees_publish_and_recompute_the_metrics(
    tree_federation: Federation, parties: tuple[Trust, CreditShareClient]
) -> None:
    trust, bureau = parties
    labels = bureau_labels(tree_federation)
    seen: list[dict[str, Any]] = []
    model = train_model(
        bureau, labels, NODES, "bureau1-gbdt-v1", CONFIG, "trees in e2e", on_progress=seen.append
    )

    # One progress report and one curve point per tree, in order.
    assert [p["epoch"] for p in seen] == list(range(len(model.trees))) == [0, 1, 2]
    assert all(0 <= p["validation_auc"] <= 1 for p in seen)
    job = bureau.training_job(model.job_id)
    assert job["status"] == "finished"
    assert [h["epoch"] for h in job["history"]] == [0, 1, 2]
    assert job["config"]["model_type"] == "gbdt" and job["config"]["trees"] == 3

    # Registered as a gbdt model: its type and tree count, never its leaf weights.
    published = {m["id"]: m for m in trust.bank.models()}
    entry = published["bureau1-gbdt-v1"]
    assert entry["model_type"] == "gbdt" and entry["trees"] == 3
    assert entry["origin"] == "trained" and entry["trained_by"] == "bureau-1"
    assert entry["intercept"] == pytest.approx(model.intercept)
    assert entry["metrics"]["trees"] == 3 and entry["metrics"]["seed"] == CONFIG.seed
    assert "tree_model" not in entry and "weights" not in str(entry)
    assert published["sme-scorecard-v1"]["model_type"] == "logistic"
    assert model.tree_model is not None
    trees: TreeModel = model.tree_model
    assert set(trees.nodes) <= set(NODES) and trees.nodes  # some node owns a split

    # Every owning node keeps a shard of exactly its own splits of every tree.
    shards = _tree_shards(tree_federation, "bureau1-gbdt-v1")
    assert set(trees.nodes) <= set(shards)
    for node, shard in shards.items():
        assert shard.shapes == trees.shapes()
        owned = trees.owned_by(node)
        assert [frozenset(r.position for r in shard.rules if r.tree == k) for k in range(3)] == [
            owned[k] for k in range(3)
        ]

    # The published metrics are the plaintext model's on the held-out enterprises: the
    # published trees, routed by each owning node's own rules on its records.
    def margin(uscc: str) -> float:
        bits = []
        for node in trees.nodes:
            department = node.removeprefix("yrd-")
            spec = get_department(department)
            raw = _rows(tree_federation, department)[uscc]
            record = {f.name: f.parse(raw[f.name]) for f in spec.fields}
            bits.append(shards[node].leaf_bits(spec.feature_values(record)))
        return trees.margin_from_bits(bits)

    test = list(model.test_ids)
    assert entry["metrics"]["test_rows"] == len(test) > 30
    y = np.array([labels[i] for i in test], dtype=float)
    margins = np.array([margin(i) for i in test])
    assert auc(y, margins) == pytest.approx(entry["metrics"]["test_auc"], abs=1e-12)
    assert ks(y, margins) == pytest.approx(entry["metrics"]["test_ks"], abs=1e-12)
    assert model.test_auc > 0.5
    # The SDK hands back those margins, in test_ids order (for ROC and KS curves).
    assert np.allclose(model.test_scores, margins, rtol=0, atol=1e-9)

    # A bank's query with the trained model decrypts to the plaintext model's score
    # (the private tree chain over the owning nodes).
    for uscc in test[:3]:
        profile = trust.bank.query(
            uscc, trust.consent(uscc), model_id="bureau1-gbdt-v1", chains=["yrd"]
        )
        assert profile.linear_score == pytest.approx(margin(uscc), abs=1e-6), uscc


def test_logistic_steps_refuse_a_tree_job_and_tree_steps_a_logistic_job(
    parties: tuple[Trust, CreditShareClient],
) -> None:
    _, bureau = parties
    key = bureau.ensure_paillier_key()
    tree_body = {
        "model_id": "kinds-tree",
        "nodes": ["yrd-tax"],
        "key_fingerprint": key,
        "config": CONFIG.to_document(),
    }
    tree_job = bureau.post("/v1/training-jobs", signed_job_body(bureau.identity, tree_body))
    logistic_body = {
        **tree_body,
        "model_id": "kinds-logistic",
        "config": TrainingConfig().to_document(),
    }
    logistic_job = bureau.post("/v1/training-jobs", signed_job_body(bureau.identity, logistic_body))
    try:
        assert tree_job["config"]["model_type"] == "gbdt"
        with pytest.raises(ProblemError) as caught:
            bureau.post(
                f"/v1/training-jobs/{tree_job['id']}/forward", {"node": "yrd-tax", "rows": [0]}
            )
        assert caught.value.status == 409 and "gradient-boosted trees" in caught.value.detail
        split = {
            "node": "yrd-tax",
            "tree": 0,
            "position": 0,
            "feature": 0,
            "bin": 0,
            "rows": [0, 1, 2, 3, 4, 5, 6, 7],
        }
        with pytest.raises(ProblemError) as caught:
            bureau.post(f"/v1/training-jobs/{logistic_job['id']}/tree-split", split)
        assert caught.value.status == 409 and "logistic model" in caught.value.detail
        # Bounds are checked before anything is relayed: 422 naming the field.
        with pytest.raises(ProblemError) as caught:
            bureau.post(
                f"/v1/training-jobs/{tree_job['id']}/tree-split", {**split, "position": 255}
            )
        assert caught.value.status == 422 and "position" in caught.value.detail
        with pytest.raises(ProblemError) as caught:
            bureau.post(
                f"/v1/training-jobs/{tree_job['id']}/tree-histograms",
                {"node": "yrd-tax", "tree": 0, "nodes": [{"position": 0, "rows": []}]},
            )
        assert caught.value.status == 422 and "rows" in caught.value.detail
    finally:
        for job in (tree_job, logistic_job):
            bureau.post(f"/v1/training-jobs/{job['id']}/cancel", {"reason": "test done"})


def test_an_interrupted_bureau_cancels_its_tree_job(
    tree_federation: Federation, parties: tuple[Trust, CreditShareClient]
) -> None:
    trust, bureau = parties
    started: list[str] = []

    def interrupt(progress: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        train_model(
            bureau,
            bureau_labels(tree_federation),
            NODES,
            "interrupted-gbdt",
            CONFIG,
            on_progress=interrupt,
            on_start=started.append,
        )
    assert f"training job {started[0]} cancelled" in caught.value.__notes__
    job = bureau.training_job(started[0])
    assert job["status"] == "cancelled" and len(job["history"]) == 1
    assert "interrupted-gbdt" not in {m["id"] for m in trust.bank.models()}
    assert not _tree_shards(tree_federation, "interrupted-gbdt")


def test_a_node_refusing_a_split_is_the_bureaus_422_and_the_job_goes_on(
    tree_federation: Federation, parties: tuple[Trust, CreditShareClient]
) -> None:
    """Row sets under the node's min_child_rows floor are refused by the node (the bureau
    tries its next candidate): relayed as a 422 naming the node, never failing the job."""
    _, bureau = parties
    job_id = start_job(bureau, "refused-split", "", ["yrd-tax"], CONFIG.to_document())
    try:
        aligned, opened = align_and_open(
            bureau, job_id, bureau_labels(tree_federation), ["yrd-tax"]
        )
        assert opened["yrd-tax"]["tree_bins"] and not opened["yrd-tax"]["features"]
        key = bureau.private_key.public_key
        rows = list(range(len(aligned)))
        path = f"/v1/training-jobs/{job_id}"
        bureau.post(
            f"{path}/tree-gradients",
            {
                "node": "yrd-tax",
                "tree": 0,
                "rows": rows,
                "gradients": _b64(
                    [key.raw_encrypt(1).to_bytes(key.ciphertext_length, "big") for _ in rows]
                ),
                "total": len(rows),
                "final": True,
            },
        )
        few = rows[: 2 * CONFIG.min_child_rows - 1]  # no split leaves the floor on both sides
        split = {"node": "yrd-tax", "tree": 0, "position": 0, "feature": 0, "bin": 0}
        with pytest.raises(ProblemError) as caught:
            bureau.post(f"{path}/tree-split", split | {"rows": few})
        assert caught.value.status == 422 and "node yrd-tax" in caught.value.detail
        with pytest.raises(ProblemError) as caught:
            bureau.post(
                f"{path}/tree-histograms",
                {"node": "yrd-tax", "tree": 0, "nodes": [{"position": 0, "rows": rows[:3]}]},
            )
        assert caught.value.status == 422 and "node yrd-tax" in caught.value.detail
        answer = bureau.post(
            f"{path}/tree-histograms",
            {"node": "yrd-tax", "tree": 0, "nodes": [{"position": 0, "rows": rows}]},
        )
        assert [h["position"] for h in answer["histograms"]] == [0]
        assert bureau.training_job(job_id)["status"] == "training"
    finally:
        bureau.post(f"/v1/training-jobs/{job_id}/cancel", {"reason": "test done"})


class Recorder(grpc.aio.UnaryUnaryClientInterceptor):
    """Keeps every (method, request, response) the coordinator exchanged with nodes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        call = await continuation(details, request)
        response = await call
        method = details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        self.calls.append((name.rsplit("/", 1)[-1], request, response))
        return response


def test_what_the_coordinator_relays_during_tree_training(
    tree_federation: Federation,
    parties: tuple[Trust, CreditShareClient],
    serve_app: Callable[[FastAPI], AbstractContextManager[str]],
) -> None:
    """The coordinator relays ciphertexts, row positions and split bitmaps: no enterprise
    id, no feature name, no gradient in clear."""
    trust, bureau = parties
    labels = bureau_labels(tree_federation)
    recorder = Recorder()
    settings = tree_federation.layout.coordinator_settings()
    with (
        serve_app(create_app(settings, interceptors=[recorder])) as url,
        CreditShareClient(
            url,
            api_key=trust.api_keys["bureau-1"],
            private_key=bureau.private_key,
            identity=bureau.identity,
        ) as watched,
    ):
        train_model(watched, labels, NODES, "watched-gbdt", CONFIG.replace(trees=1))
    key = bureau.private_key.public_key
    methods = {m for m, _, _ in recorder.calls}
    assert {"PsiAnswer", "OpenJob", "TreeGradients", "TreeHistograms", "TreeSplit"} <= methods
    assert not methods & {"Forward", "MaskedGradient", "ApplyGradient", "LevelSums"}
    training = {"PsiAnswer", "OpenJob", "TreeGradients", "TreeHistograms", "TreeSplit", "CloseJob"}
    wire = b"".join(
        r.SerializeToString() + s.SerializeToString() for m, r, s in recorder.calls if m in training
    )
    assert not [u for u in labels if u.encode() in wire]
    names = {f.name for d in DEPARTMENTS for f in get_department(d).features}
    assert not [n for n in names if n.encode() in wire]
    for method, request, response in recorder.calls:
        if method == "TreeGradients":  # fresh encryptions under the bureau's key only
            for blob in request.gradients:
                assert (Ciphertext.from_bytes(key, blob).value - 1) % key.n != 0
        if method == "TreeHistograms":
            assert [h.position for h in response.histograms] == [n.position for n in request.nodes]
            for histogram in response.histograms:
                for blob in histogram.ciphertexts:
                    Ciphertext.from_bytes(key, blob)
        if method == "TreeSplit":  # one bit per row routed, nothing else
            assert len(response.left) == (len(request.rows) + len(request.other_rows) + 7) // 8
        if method == "OpenJob":
            assert not response.features and response.tree_bins


def _cli(
    federation: Federation, trust: Trust, tmp_path: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "creditshare",
            "bureau",
            "train",
            "--coordinator",
            trust.url,
            "--api-key",
            trust.api_keys["bureau-1"],
            "--labels",
            str(federation.layout.data_dir / "bureau" / "labels.csv"),
            *[arg for node in NODES for arg in ("--node", node)],
            "--key-file",
            str(tmp_path / "bureau-key.json"),
            "--identity",
            str(federation.layout.identity_dir("bureau-1", "bureau")),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_bureau_train_model_type_gbdt_with_its_options(
    tree_federation: Federation, parties: tuple[Trust, CreditShareClient], tmp_path: Path
) -> None:
    trust, bureau = parties
    done = _cli(
        tree_federation,
        trust,
        tmp_path,
        "--model-id",
        "cli-gbdt",
        "--model-type",
        "gbdt",
        "--trees",
        "2",
        "--max-depth",
        "2",
        "--max-bins",
        "6",
        "--learning-rate",
        "0.5",
        "--l2",
        "2",
        "--min-child-weight",
        "0.5",
        "--gamma",
        "0.01",
        "--validation-share",
        "0.25",
        "--seed",
        "9",
    )
    assert done.returncode == 0, done.stderr
    started = re.search(r"training job ([0-9a-f]{32}) started", done.stdout)
    assert started, done.stdout
    assert "tree 0: validation loss" in done.stdout and "2 trees" in done.stdout
    config = bureau.training_job(started.group(1))["config"]
    expected = {
        "model_type": "gbdt",
        "trees": 2,
        "max_depth": 2,
        "max_bins": 6,
        "learning_rate": 0.5,
        "l2": 2.0,
        "min_child_weight": 0.5,
        "gamma": 0.01,
        "validation_fraction": 0.25,
        "seed": 9,
    }
    assert {k: config[k] for k in expected} == expected
    entry = {m["id"]: m for m in trust.bank.models()}["cli-gbdt"]
    assert entry["model_type"] == "gbdt" and entry["trees"] == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--max-depth", "9"), "--max-depth: Input should be less than or equal to 8"),
        (("--epochs", "3"), "--epochs: not an option of --model-type gbdt"),
    ],
)
def test_bureau_train_gbdt_refuses_bad_options_before_any_job(
    tree_federation: Federation,
    parties: tuple[Trust, CreditShareClient],
    tmp_path: Path,
    options: tuple[str, ...],
    message: str,
) -> None:
    trust, _ = parties
    done = _cli(
        tree_federation, trust, tmp_path, "--model-id", "never", "--model-type", "gbdt", *options
    )
    assert done.returncode == 2 and f"error: {message}" in done.stderr, done.stderr
    assert "started" not in done.stdout


def test_a_node_stopped_mid_training_fails_the_job_with_its_name(
    tree_federation: Federation, parties: tuple[Trust, CreditShareClient], tmp_path: Path
) -> None:
    trust, bureau = parties
    started: list[str] = []

    def stop_after_first_tree(progress: dict[str, Any]) -> None:
        if progress["epoch"] == 0:
            tree_federation.stop_node("yrd-market")

    try:
        with pytest.raises(ClientError) as caught:
            train_model(
                bureau,
                bureau_labels(tree_federation),
                NODES,
                "doomed-gbdt",
                CONFIG,
                on_progress=stop_after_first_tree,
                on_start=started.append,
            )
    finally:
        tree_federation.start_node("yrd-market")
    assert "yrd-market" in str(caught.value)
    job = bureau.training_job(started[0])
    assert job["status"] == "failed" and "yrd-market" in job["error"]
    assert "doomed-gbdt" not in {m["id"] for m in trust.bank.models()}
    assert not _tree_shards(tree_federation, "doomed-gbdt")
