"""A bureau trains across three real data nodes, publishes the model, a bank scores with it."""

from __future__ import annotations

import base64
import csv
import math
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
from creditshare.client import _psi as client_psi
from creditshare.client._bureau import start_job
from creditshare.coordinator import create_app
from creditshare.crypto import Ciphertext, PrivateKey
from creditshare.demo import Federation
from creditshare.departments import get_department
from creditshare.errors import ClientError, ProblemError
from creditshare.federated import BureauChunk, PsiParty, PsiTranscript, TrainingConfig, auc

from .conftest import (
    Trust,
    bureau_labels,
    signed_job_body,
    synthetic_federation,
    training_parties,
)

DEPARTMENTS = ("tax", "market", "social")
CONFIG = TrainingConfig(batch_size=64, max_epochs=3, learning_rate=0.5, early_stopping_rounds=3)


@pytest.fixture(scope="module")
def training_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with synthetic_federation(tmp_path_factory.mktemp("training"), 700, DEPARTMENTS) as running:
        yield running


@pytest.fixture(scope="module")
def parties(
    training_federation: Federation, bank_key: PrivateKey
) -> Iterator[tuple[Trust, CreditShareClient]]:
    with training_parties(training_federation, bank_key, "train-bank") as both:
        yield both


def _rows(federation: Federation, department: str) -> dict[str, dict[str, str]]:
    path = federation.layout.data_dir / "yrd" / f"{department}.csv"
    with path.open() as handle:
        return {r["uscc"]: r for r in csv.DictReader(handle)}


def test_train_publish_and_score(
    training_federation: Federation, parties: tuple[Trust, CreditShareClient]
) -> None:
    trust, bureau = parties
    labels = bureau_labels(training_federation)
    nodes = [f"yrd-{d}" for d in DEPARTMENTS]
    seen: list[dict[str, object]] = []
    model = train_model(
        bureau,
        labels,
        nodes,
        "bureau1-sme-v1",
        CONFIG,
        description="trained in e2e",
        on_progress=seen.append,
    )

    # PSI found exactly the ids every node and the bureau hold.
    expected = set(labels)
    for department in DEPARTMENTS:
        expected &= set(_rows(training_federation, department))
    assert model.aligned_rows == len(expected) > 100

    # The job reports progress and a validation curve; the model is published with metrics.
    job = bureau.training_job(model.job_id)
    assert job["status"] == "finished" and len(job["history"]) == len(model.epochs)
    assert any("validation_auc" in p for p in seen)
    published = {m["id"]: m for m in trust.bank.models()}
    entry = published["bureau1-sme-v1"]
    assert entry["intercept"] == pytest.approx(model.intercept)
    assert entry["origin"] == "trained" and entry["trained_by"] == "bureau-1"
    assert entry["metrics"]["test_auc"] == pytest.approx(model.test_auc)
    assert set(entry["features"]) == set(nodes)
    assert entry["features"]["yrd-tax"] == [f.name for f in get_department("tax").features]
    assert published["sme-scorecard-v1"]["origin"] == "published"
    assert 0.5 < model.test_auc <= 1.0

    # The published model is the evaluated one: the plaintext model (each node's kept
    # preprocessing, then its weights, plus the intercept) scores the held-out
    # enterprises to exactly the published test AUC.
    shards = training_federation.layout.trained_shards("bureau1-sme-v1")
    assert set(shards) == set(nodes)
    assert all(s.preprocessing is not None and s.offset == 0.0 for s in shards.values())

    def plaintext(uscc: str) -> float:
        terms = [model.intercept]
        for department in DEPARTMENTS:
            spec = get_department(department)
            raw = _rows(training_federation, department)[uscc]
            record = {f.name: f.parse(raw[f.name]) for f in spec.fields}
            terms.append(shards[f"yrd-{department}"].partial_score(spec.feature_values(record)))
        return math.fsum(terms)

    test = list(model.test_ids)
    assert entry["metrics"]["test_rows"] == len(test) > 30
    assert entry["metrics"]["seed"] == CONFIG.seed
    assert entry["metrics"]["test_share"] == pytest.approx(len(test) / model.aligned_rows)
    y = np.array([labels[i] for i in test], dtype=float)
    assert auc(y, np.array([plaintext(i) for i in test])) == pytest.approx(
        entry["metrics"]["test_auc"], abs=1e-4
    )
    # The SDK hands back each held-out enterprise's score (what a caller with the labels
    # draws ROC and KS curves from): the plaintext model's score.
    assert len(model.test_scores) == len(test)
    assert np.allclose(model.test_scores, [plaintext(i) for i in test], atol=1e-4)
    assert auc(y, np.array(model.test_scores)) == entry["metrics"]["test_auc"]

    # A bank query (the nodes' Score RPC) decrypts to the plaintext model's score.
    uscc = test[0]
    profile = trust.bank.query(uscc, trust.consent(uscc), model_id="bureau1-sme-v1", chains=["yrd"])
    assert abs(profile.linear_score - plaintext(uscc)) < 1e-6


def test_labels_for_unknown_ids_fail_clearly(parties: tuple[Trust, CreditShareClient]) -> None:
    _, bureau = parties
    labels = {f"91310000MA{i:07d}X": i % 2 for i in range(50)}  # nobody holds these
    with pytest.raises(ClientError, match="only 0 of 50 labelled ids are held by every node"):
        train_model(bureau, labels, ["yrd-tax"], "never-published", CONFIG)


def test_too_few_rows_left_to_fit_fail_clearly_and_publish_nothing(
    training_federation: Federation, parties: tuple[Trust, CreditShareClient]
) -> None:
    """Enough rows align, but after the test and validation shares fewer than a gradient's
    minimum are left: the bureau is told which shares to lower, not a node's refusal."""
    trust, bureau = parties
    everyone = bureau_labels(training_federation)
    held = sorted(set(everyone) & set(_rows(training_federation, "tax")))[:60]
    labels = {uscc: everyone[uscc] for uscc in held}
    assert len(labels) == 60 and len(set(labels.values())) == 2
    config = CONFIG.replace(test_fraction=0.5, validation_fraction=0.4)
    with pytest.raises(ClientError, match=r"the fit split holds \d+ rows .* lower --test-share"):
        train_model(bureau, labels, ["yrd-tax"], "too-few-rows", config)
    assert "too-few-rows" not in {m["id"] for m in trust.bank.models()}


def test_node_going_away_fails_the_job_with_its_name(
    tmp_path: Path, parties: tuple[Trust, CreditShareClient], training_federation: Federation
) -> None:
    _, bureau = parties
    labels = bureau_labels(training_federation)

    def stop_after_first_batch(progress: dict[str, object]) -> None:
        if progress.get("batch") == 1 and progress.get("epoch") == 0:
            training_federation.stop_node("yrd-social")

    with pytest.raises(ClientError) as caught:
        train_model(
            bureau,
            labels,
            [f"yrd-{d}" for d in DEPARTMENTS],
            "doomed-model",
            CONFIG,
            on_progress=stop_after_first_batch,
        )
    assert "yrd-social" in str(caught.value)
    jobs = [m["id"] for m in bureau.models()]
    assert "doomed-model" not in jobs


def test_only_bureaus_may_train(parties: tuple[Trust, CreditShareClient]) -> None:
    trust, _ = parties
    with pytest.raises(ProblemError) as caught:
        trust.bank.post(
            "/v1/training-jobs",
            signed_job_body(
                trust.bank_identity,
                {
                    "model_id": "x",
                    "nodes": ["yrd-tax"],
                    "key_fingerprint": trust.bank.ensure_paillier_key(),
                },
            ),
        )
    assert caught.value.status == 403


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
        self.calls.append(
            (method.decode() if isinstance(method, bytes) else str(method), request, response)
        )
        return response


def test_what_the_coordinator_and_nodes_see_during_training(
    training_federation: Federation,
    parties: tuple[Trust, CreditShareClient],
    serve_app: Callable[[FastAPI], AbstractContextManager[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PSI here streams in chunks of 50 points (sets of hundreds): every message the
    coordinator relays holds at most one chunk, and the intersection is still exact."""
    monkeypatch.setattr(client_psi, "PSI_CHUNK", 50)
    trust, bureau = parties
    labels = bureau_labels(training_federation)
    recorder = Recorder()
    settings = training_federation.layout.coordinator_settings()
    nodes = ["yrd-tax", "yrd-market"]  # yrd-social was stopped by an earlier test
    with (
        serve_app(create_app(settings, interceptors=[recorder])) as url,
        CreditShareClient(
            url,
            api_key=trust.api_keys["bureau-1"],
            private_key=bureau.private_key,
            identity=bureau.identity,
        ) as b,
    ):
        model = train_model(
            b,
            labels,
            nodes,
            "watched-model",
            TrainingConfig(batch_size=128, max_epochs=1, early_stopping_rounds=1),
        )
    expected = set(labels)
    for node in nodes:
        expected &= set(_rows(training_federation, node.removeprefix("yrd-")))
    assert model.aligned_rows == len(expected) > 100
    key = bureau.private_key.public_key
    methods = [m.rsplit("/", 1)[-1] for m, _, _ in recorder.calls]
    assert {"PsiAnswer", "PsiPoints", "OpenJob", "Forward", "MaskedGradient"} <= set(methods)
    assert "ApplyGradient" in methods
    # Many chunks and pages per node, none over the chunk size.
    assert methods.count("PsiAnswer") > 2 * len(nodes) < methods.count("PsiPoints")
    # No enterprise identifier crosses the coordinator in clear, either way.
    wire = b"".join(r.SerializeToString() + s.SerializeToString() for _, r, s in recorder.calls)
    assert not [u for u in labels if u.encode() in wire]
    for method, request, response in recorder.calls:
        name = method.rsplit("/", 1)[-1]
        if name == "PsiAnswer":
            assert len(request.blinded) == len(response.double_blinded) <= 50
            assert all(len(p) == 32 for p in [*request.blinded, *response.double_blinded])
        if name == "PsiPoints":
            assert 0 < len(response.node_blinded) <= 50
            assert all(len(p) == 32 for p in response.node_blinded)
        if name in ("Forward", "MaskedGradient"):
            for blob in response.ciphertexts:
                number = Ciphertext.from_bytes(key, blob).value
                assert (number - 1) % key.n != 0  # randomised ciphertexts only
        if name == "MaskedGradient":  # residuals reach nodes encrypted, never in clear
            for blob in request.residuals:
                Ciphertext.from_bytes(key, blob)
        if name == "ApplyGradient":  # the bureau only ever decrypted masked gradients
            assert all(abs(int(v)) > 2**80 for v in request.values)


def test_a_config_other_than_the_signed_one_is_refused_before_anything_is_recorded(
    parties: tuple[Trust, CreditShareClient],
) -> None:
    """The bureau signs its config's hash: a body whose config is another (one setting
    changed) is a 422 naming `config`, and no job exists; a body from an SDK that did not
    sign the config is told the field it lacks."""
    _, bureau = parties
    body = {
        "model_id": "config-swapped",
        "nodes": ["yrd-tax"],
        "key_fingerprint": bureau.ensure_paillier_key(),
        "config": CONFIG.to_document(),
    }
    signed = signed_job_body(bureau.identity, body)
    swapped = signed | {"config": CONFIG.replace(feature_clip=0.0).to_document()}
    with pytest.raises(ProblemError) as caught:
        bureau.post("/v1/training-jobs", swapped)
    assert caught.value.status == 422
    assert caught.value.detail.startswith("config does not match config_sha256")
    with pytest.raises(ProblemError) as caught:
        bureau.training_job(signed["job_id"])
    assert caught.value.status == 404
    unsigned = {k: v for k, v in signed.items() if k != "config_sha256"}
    with pytest.raises(ProblemError) as caught:
        bureau.post("/v1/training-jobs", unsigned)
    assert caught.value.status == 422 and "body.config_sha256" in caught.value.detail


def test_model_ids_cannot_be_taken_twice(parties: tuple[Trust, CreditShareClient]) -> None:
    trust, bureau = parties
    key = bureau.ensure_paillier_key()
    body = {"model_id": "bureau1-sme-v1", "nodes": ["yrd-tax"], "key_fingerprint": key}
    with pytest.raises(ProblemError) as caught:  # published by the first test
        bureau.post("/v1/training-jobs", signed_job_body(bureau.identity, body))
    assert caught.value.status == 409
    reserved = {**body, "model_id": "reserved-id"}
    first = bureau.post("/v1/training-jobs", signed_job_body(bureau.identity, reserved))
    with pytest.raises(ProblemError) as caught:
        bureau.post("/v1/training-jobs", signed_job_body(bureau.identity, reserved))
    assert caught.value.status == 409 and first["id"] in caught.value.detail
    # Another bureau can neither read nor drive the job.
    other = trust.operator.register_participant("bureau-2", "bureau", "Bureau Two")
    with CreditShareClient(trust.url, api_key=other["api_key"]) as intruder:
        with pytest.raises(ProblemError) as caught:
            intruder.training_job(first["id"])
        assert caught.value.status == 403
        with pytest.raises(ProblemError) as caught:
            intruder.post(
                f"/v1/training-jobs/{first['id']}/forward", {"node": "yrd-tax", "rows": [0]}
            )
        assert caught.value.status == 403


# -- `creditshare bureau train` with its options -------------------------------------

#: Not yrd-social: an earlier test in this module stops it for good.
CLI_DEPARTMENTS = ("tax", "market")


def _cli(
    federation: Federation, trust: Trust, tmp_path: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    labels = federation.layout.data_dir / "bureau" / "labels.csv"
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
            str(labels),
            *[arg for d in CLI_DEPARTMENTS for arg in ("--node", f"yrd-{d}")],
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


def test_bureau_train_with_options_holds_out_the_named_ids(
    training_federation: Federation, parties: tuple[Trust, CreditShareClient], tmp_path: Path
) -> None:
    """Every option reaches the job's stored config; the test split is exactly the named
    ids that align; the job id is printed before training starts."""
    trust, bureau = parties
    labels = bureau_labels(training_federation)
    aligned = set(labels)
    for department in CLI_DEPARTMENTS:
        aligned &= set(_rows(training_federation, department))
    ordered = sorted(aligned)
    held = [u for u in ordered if labels[u] == 1][:15] + [u for u in ordered if labels[u] == 0][:45]
    not_aligned = sorted(set(labels) - aligned)[:5]  # labelled, but not held by every node
    ids_file = tmp_path / "test-ids.csv"
    ids_file.write_text("uscc\n" + "\n".join(held + not_aligned) + "\n", encoding="utf-8")
    done = _cli(
        training_federation,
        trust,
        tmp_path,
        "--model-id",
        "cli-options",
        "--epochs",
        "2",
        "--batch-size",
        "48",
        "--learning-rate",
        "0.4",
        "--l2",
        "0.001",
        "--clip",
        "3",
        "--early-stopping-rounds",
        "2",
        "--validation-share",
        "0.2",
        "--seed",
        "7",
        "--test-ids",
        str(ids_file),
    )
    assert done.returncode == 0, done.stderr
    started = re.search(r"training job ([0-9a-f]{32}) started", done.stdout)
    assert started, done.stdout
    assert done.stdout.index("started") < done.stdout.index("epoch 0")
    job = bureau.training_job(started.group(1))
    assert job["status"] == "finished"
    config = job["config"]
    expected = {
        "max_epochs": 2,
        "batch_size": 48,
        "learning_rate": 0.4,
        "l2": 0.001,
        "feature_clip": 3.0,
        "early_stopping_rounds": 2,
        "validation_fraction": 0.2,
        "seed": 7,
    }
    assert {k: config[k] for k in expected} == expected
    entry = {m["id"]: m for m in trust.bank.models()}["cli-options"]
    assert entry["metrics"]["test_rows"] == len(held)
    assert entry["metrics"]["seed"] == 7
    shards = training_federation.layout.trained_shards("cli-options")
    # The schema's clipped features at the --clip given; flags and dummies never clipped.
    for node, shard in shards.items():
        schema = get_department(node.split("-", 1)[1])
        clipped = {f.name: f.clipped for f in schema.features}
        for feature in shard.transform.features:
            assert feature.clip == (3.0 if clipped[feature.name] else None), (node, feature)
    assert any(f.clip == 3.0 for s in shards.values() for f in s.transform.features)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--batch-size", "8"), "--batch-size: Input should be greater than or equal to 32"),
        (("--test-share", "1.5"), "--test-share: Input should be less than or equal to 0.9"),
        (("--clip", "-1"), "--clip: Input should be greater than or equal to 0"),
        (("--validation-share", "0.7"), "--validation-share: Input should be less than 0.5"),
    ],
)
def test_bureau_train_refuses_bad_options_before_any_job(
    training_federation: Federation,
    parties: tuple[Trust, CreditShareClient],
    tmp_path: Path,
    options: tuple[str, ...],
    message: str,
) -> None:
    trust, _ = parties
    done = _cli(training_federation, trust, tmp_path, "--model-id", "never", *options)
    assert done.returncode == 2 and f"error: {message}" in done.stderr, done.stderr
    assert "started" not in done.stdout


def test_bureau_train_refuses_held_out_ids_without_a_label(
    training_federation: Federation, parties: tuple[Trust, CreditShareClient], tmp_path: Path
) -> None:
    trust, _ = parties
    labelled = sorted(bureau_labels(training_federation))[:2]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(f"{labelled[0]}\n{labelled[1]}\n91350100MA0000000X\n", encoding="utf-8")
    done = _cli(
        training_federation, trust, tmp_path, "--model-id", "never", "--test-ids", str(ids_file)
    )
    assert done.returncode == 2, done.stderr
    assert f"{ids_file}, line 3" in done.stderr and "not among the labels" in done.stderr


def test_psi_chunks_out_of_order_wrong_points_and_a_second_run_get_clear_errors(
    parties: tuple[Trust, CreditShareClient],
) -> None:
    """Through the real coordinator and node: a chunk or page at the wrong offset, a point
    of the wrong size and a page asked too early are the bureau's error (422, saying what
    and where) and change nothing, so the right chunk still goes through; a second run of
    one job is refused and fails the job (502, as any receipt a node refuses)."""
    _, bureau = parties
    job_id = start_job(bureau, "psi-refusals", "", ["yrd-tax"], CONFIG.to_document())
    path = f"/v1/training-jobs/{job_id}/psi"
    party = PsiParty(b"psi-refusals")
    points = party.blind_ids(["a", "b", "c", "d"])
    blinded = [base64.b64encode(p).decode() for p in points]
    transcript = PsiTranscript()
    transcript.add(points)
    signature = client_psi._transcript_signature(
        bureau,
        job_id,
        "yrd-tax",
        "psi-refusals",
        BureauChunk(2, points[2:], False, transcript.digest()),
    )
    short = base64.b64encode(bytes(31)).decode()

    def bureau_refusal(url: str, body: dict[str, Any]) -> ProblemError:
        with pytest.raises(ProblemError) as caught:
            bureau.post(url, {"node": "yrd-tax", **body})
        return caught.value

    def refused(suffix: str, body: dict[str, Any]) -> ProblemError:
        return bureau_refusal(path + suffix, body)

    first = {"domain": "psi-refusals", "blinded": blinded[:2], "more": True}
    problem = refused("", first | {"blinded": [blinded[0], short]})
    assert problem.status == 422 and "blinded[1] is not a 32-byte value" in problem.detail
    reply = bureau.post(path, {"node": "yrd-tax", **first})  # the run starts after all
    assert len(reply["double_blinded"]) == 2 and reply["node_set_size"] > 0
    problem = refused("/points", {"offset": 0})
    assert problem.status == 422 and "after the bureau's last chunk" in problem.detail
    second = {
        "domain": "psi-refusals",
        "blinded": blinded[2:],
        "offset": 3,
        "transcript_signature": signature,
    }
    problem = refused("", second)
    assert problem.status == 422
    assert "starts at offset 3, but 2 values came before it" in problem.detail
    problem = refused("", second | {"offset": 2, "blinded": [blinded[2], short]})
    assert problem.status == 422 and "blinded[3] is not a 32-byte value" in problem.detail
    assert len(bureau.post(path, {"node": "yrd-tax", **second, "offset": 2})["double_blinded"]) == 2
    page = bureau.post(path + "/points", {"node": "yrd-tax", "offset": 0, "limit": 10})
    assert len(page["node_blinded"]) == 10 and not page["last"]
    problem = refused("/points", {"offset": 0, "limit": 10})
    assert problem.status == 422 and "starts at offset 0, but 10 values came" in problem.detail
    # A page or chunk for a job the node never aligned: it has no such run, and says so.
    other = start_job(bureau, "psi-refusals-2", "", ["yrd-tax"], CONFIG.to_document())
    problem = bureau_refusal(f"/v1/training-jobs/{other}/psi/points", {"offset": 5})
    assert problem.status == 422 and "no PSI run for job" in problem.detail
    problem = bureau_refusal(f"/v1/training-jobs/{other}/psi", second)
    assert problem.status == 422 and "a chunk at offset 0 starts one" in problem.detail
    bureau.post(f"/v1/training-jobs/{other}/cancel", {"reason": "test done"})
    # Nothing above failed the first job; a second run on the same receipt does.
    assert bureau.training_job(job_id)["status"] == "aligning"
    problem = refused("", first)
    assert problem.status == 502 and "already aligned" in problem.detail
    assert bureau.training_job(job_id)["status"] == "failed"
