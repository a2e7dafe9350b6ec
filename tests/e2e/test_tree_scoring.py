"""Private tree scoring over real node processes and a real coordinator.

A gbdt model is configured in the coordinator's settings (its published part: shapes,
owners, leaf weights) and each owning node keeps its ``TreeShard`` in its database
before it starts, as a trained model would leave them. The bank's decrypted score must
be exactly the plaintext model's margin from the nodes' own leaf bits; what the
coordinator held must be ciphertexts only; a chain node that fails leaves no score
(never a wrong one); a model node outside the query's chains is refused before anything
is spent; a linear model's query is unchanged.
"""

from __future__ import annotations

import csv
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from creditshare._settings import load_settings
from creditshare.client import CreditProfile, decrypt_profile
from creditshare.consent import Purpose
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.crypto import Ciphertext, PrivateKey
from creditshare.demo import Federation, FederationLayout, PlaintextOracle, read_enterprises
from creditshare.demo._toml import dumps
from creditshare.departments import DEFAULT_INTERCEPT, get_department
from creditshare.errors import ProblemError, ScoreUnavailableError
from creditshare.identity import Chain
from creditshare.node._storage import ShardStore, make_engine
from creditshare.proto import node_pb2
from creditshare.trees import TreeModel, TreeShard
from creditshare.trees._synthetic import random_tree_model

from .conftest import E2E_DEPARTMENTS, ServeApp, Trust
from .test_coordinator_sees_only_ciphertexts import Recorder

MODEL = "sme-trees-v1"
OWNERS = ("yrd-court", "yrd-market", "yrd-tax")
SCALE_TOLERANCE = 1e-6


def _csv_rows(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    with path.open(encoding="utf-8", newline="") as handle:
        return {row["uscc"]: row for row in csv.DictReader(handle)}


class Plain:
    """Each owning node's records as feature values: the plaintext side of the check."""

    def __init__(self, layout: FederationLayout) -> None:
        self.values: dict[str, dict[str, dict[str, float]]] = {}
        for node in layout.nodes:
            if node.node_id not in OWNERS:
                continue
            department = get_department(node.department)
            self.values[node.node_id] = {
                uscc: department.feature_values(
                    {f.name: f.parse(row[f.name]) for f in department.fields}
                )
                for uscc, row in _csv_rows(node.data_file).items()
            }

    def ranges(self) -> dict[str, dict[str, tuple[float, float]]]:
        """Per node, per feature, the range its records span (thresholds fall inside)."""
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for node, records in self.values.items():
            names = sorted({n for v in records.values() for n in v})
            out[node] = {
                n: (min(v[n] for v in records.values()), max(v[n] for v in records.values()))
                for n in names
            }
            out[node] = {n: r for n, r in out[node].items() if r[0] < r[1]}
        return out

    def margin(self, model: TreeModel, shards: dict[str, TreeShard], uscc: str) -> float:
        bits = [shards[n].leaf_bits(self.values[n].get(uscc)) for n in model.nodes]
        return model.margin_from_bits(bits)

    def held_by(self, uscc: str) -> set[str]:
        return {n for n, records in self.values.items() if uscc in records}


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[tuple[Federation, TreeModel, dict[str, TreeShard], Plain]]:
    layout = FederationLayout.write(
        tmp_path_factory.mktemp("trees"),
        data_dir,
        chains=[Chain.YRD, Chain.BTH],
        departments=E2E_DEPARTMENTS,
        node_deadline_seconds=10.0,
    )
    layout.import_data()
    plain = Plain(layout)
    model, shards = random_tree_model(plain.ranges(), trees=30, depth=3, seed=14)
    assert model.nodes == OWNERS
    for node in layout.nodes:
        if node.node_id in shards:
            settings = layout.node_settings(node)
            store = ShardStore(make_engine(settings.database_url))
            store.save_tree(MODEL, shards[node.node_id], "job-e2e", settings.department_schema)
    assert layout.coordinator_config is not None
    config = tomllib.loads(layout.coordinator_config.read_text(encoding="utf-8"))
    config["models"].append({"id": MODEL, "model_type": "gbdt", "tree_model": model.to_document()})
    layout.coordinator_config.write_text(dumps(config), encoding="utf-8")
    with Federation(layout) as running:
        yield running, model, shards, plain


@pytest.fixture(scope="module")
def trust(
    setup: tuple[Federation, TreeModel, dict[str, TreeShard], Plain], bank_key: PrivateKey
) -> Iterator[Trust]:
    state = Trust(setup[0], bank_key, "tree-bank")
    yield state
    state.close()


def _sample(data_dir: Path, plain: Plain) -> list[str]:
    """Enterprises held by every owning node, by some, and by none."""
    usccs = [r["uscc"] for r in read_enterprises(data_dir)]
    by_count: dict[int, list[str]] = {}
    for uscc in usccs:
        by_count.setdefault(len(plain.held_by(uscc)), []).append(uscc)
    picked = [u for count in sorted(by_count) for u in by_count[count][:2]]
    assert len(by_count) >= 2, "the sample should mix enterprises with and without records"
    return picked


def test_bank_scores_equal_the_plaintext_model(
    setup: tuple[Federation, TreeModel, dict[str, TreeShard], Plain],
    trust: Trust,
    data_dir: Path,
) -> None:
    federation, model, shards, plain = setup
    everyone = sorted(n.node_id for n in federation.layout.nodes)
    for uscc in _sample(data_dir, plain):
        profile: CreditProfile = trust.bank.query(uscc, trust.consent(uscc), model_id=MODEL)
        assert profile.failed == [] and sorted(profile.answered) == everyone
        expected = plain.margin(model, shards, uscc)
        assert profile.linear_score == pytest.approx(expected, abs=SCALE_TOLERANCE), uscc
        held = plain.held_by(uscc)
        assert held <= set(profile.nodes_with_records)


def test_the_coordinator_holds_only_ciphertexts_and_the_plain_form_scores_too(
    setup: tuple[Federation, TreeModel, dict[str, TreeShard], Plain],
    trust: Trust,
    bank_key: PrivateKey,
    data_dir: Path,
    serve_app: ServeApp,
) -> None:
    """A second replica (unpacked answers) records every node answer it receives."""
    federation, model, shards, plain = setup
    layout = federation.layout
    assert layout.coordinator_config is not None
    settings = load_settings(CoordinatorSettings, layout.coordinator_config)
    settings = settings.model_copy(update={"pack_profiles": False})
    recorder = Recorder()
    key = bank_key.public_key
    uscc = next(u for u in _sample(data_dir, plain) if len(plain.held_by(u)) == len(OWNERS))
    consent = trust.consent(uscc)
    with serve_app(create_app(settings, interceptors=[recorder])) as url:
        recorder.responses.clear()
        response = httpx.post(
            f"{url}/v1/queries",
            timeout=60,
            headers={"Authorization": f"Bearer {trust.bank_api_key}"},
            json=trust.signed(
                {
                    "uscc": uscc,
                    "model_id": MODEL,
                    "purpose": "pre_loan_review",
                    "consent_id": consent,
                    "key_fingerprint": key.fingerprint(),
                }
            ),
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["packing"] is None and body["score_unavailable"] is None
    profile = decrypt_profile(body, bank_key)
    assert profile.linear_score == pytest.approx(
        plain.margin(model, shards, uscc), abs=SCALE_TOLERANCE
    )
    steps = [r for r in recorder.responses if isinstance(r, node_pb2.TreeScoreResponse)]
    assert sorted(s.node_id for s in steps) == list(OWNERS)
    seen: set[bytes] = set()
    for step in steps:
        blobs = [*step.indicators, *([step.score] if step.score else [])]
        assert len(blobs) in (1, model.leaf_count)
        for blob in blobs:
            assert len(blob) == key.ciphertext_length
            Ciphertext.from_bytes(key, blob)
            number = int.from_bytes(blob, "big")
            assert number >= key.n and (number - 1) % key.n != 0  # randomised, not 1 + n·m
        # Nothing a node hands on is a ciphertext the coordinator saw before.
        assert not seen & set(blobs)
        seen.update(blobs)
    assert "linear" not in response.text and "probability" not in response.text


def test_a_model_node_outside_the_query_chains_is_refused_before_anything_is_spent(
    setup: tuple[Federation, TreeModel, dict[str, TreeShard], Plain],
    trust: Trust,
    data_dir: Path,
) -> None:
    _, model, shards, plain = setup
    uscc = _sample(data_dir, plain)[-1]
    consent = trust.consent(uscc, max_uses=1)
    body = {
        "uscc": uscc,
        "model_id": MODEL,
        "purpose": "pre_loan_review",
        "consent_id": consent,
        "key_fingerprint": trust.bank.private_key.public_key.fingerprint(),
        "chains": ["bth"],
    }
    response = httpx.post(
        f"{trust.url}/v1/queries",
        json=trust.signed(body),
        timeout=60,
        headers={"Authorization": f"Bearer {trust.bank_api_key}"},
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "yrd-court" in detail and "chain yrd" in detail
    # The consent's single use is still there: the refusal spent nothing.
    profile = trust.bank.query(uscc, consent, model_id=MODEL)
    assert profile.linear_score == pytest.approx(
        plain.margin(model, shards, uscc), abs=SCALE_TOLERANCE
    )


def test_a_linear_models_query_is_unchanged(
    setup: tuple[Federation, TreeModel, dict[str, TreeShard], Plain],
    trust: Trust,
    data_dir: Path,
) -> None:
    federation = setup[0]
    oracle = PlaintextOracle(federation.layout, DEFAULT_INTERCEPT)
    for uscc in _sample(data_dir, setup[3])[:3]:
        profile = trust.bank.query(uscc, trust.consent(uscc))
        assert profile.raw["score_unavailable"] is None
        assert oracle.verify(profile, int(profile.raw["scale"])).ok, uscc


def test_score_change_monitoring_of_a_tree_model_is_refused(
    setup: tuple[Federation, TreeModel, dict[str, TreeShard], Plain],
    trust: Trust,
    data_dir: Path,
) -> None:
    """A cycle sums node shares; a tree model has none, so it would report a wrong score."""
    uscc = _sample(data_dir, setup[3])[0]
    consent = trust.consent(uscc, purpose=Purpose.POST_LOAN_MONITORING)
    with pytest.raises(ProblemError) as caught:
        trust.bank.subscribe(uscc, consent, signals={"score_change": 5}, model_id=MODEL)
    assert caught.value.status == 422
    assert "tree model" in caught.value.detail


def test_a_chain_node_down_leaves_no_score_and_names_it(
    setup: tuple[Federation, TreeModel, dict[str, TreeShard], Plain],
    trust: Trust,
    data_dir: Path,
) -> None:
    """Last in the module: it stops a node (and starts it again)."""
    federation, model, shards, plain = setup
    uscc = next(u for u in _sample(data_dir, plain) if plain.held_by(u))
    federation.stop_node("yrd-market")
    try:
        with pytest.raises(ScoreUnavailableError) as caught:
            trust.bank.query(uscc, trust.consent(uscc), model_id=MODEL)
        error = caught.value
        assert error.node == "yrd-market" and "tree score" in error.reason
        assert "yrd-market" in str(error)
        answer = error.answer
        assert answer["encrypted_score"] is None
        assert answer["score_unavailable"]["node"] == "yrd-market"
        assert "yrd-market" in {f["node"] for f in answer["coverage"]["failed"]}
        # The indicators of the nodes that answered are still decrypted for the bank.
        assert {i.node for i in error.indicators} <= set(answer["coverage"]["answered"])
    finally:
        federation.start_node("yrd-market")
    # Back up: the model scores again (once the coordinator's channel has reconnected,
    # which its reconnect backoff may delay by a few seconds: poll, generously).
    deadline = time.monotonic() + 90
    while True:
        try:
            profile = trust.bank.query(uscc, trust.consent(uscc), model_id=MODEL)
            break
        except ScoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert profile.linear_score == pytest.approx(
        plain.margin(model, shards, uscc), abs=SCALE_TOLERANCE
    )
