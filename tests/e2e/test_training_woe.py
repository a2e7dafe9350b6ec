"""A bureau trains with a node whose own schema WOE-bins a category, through the real
coordinator (HTTP) and real nodes (gRPC, mutual TLS), and a bank is scored with it.

One node's operator replaces its department with a schema file of its own (a business
registry: an industry category, WOE-binned, and a head count), with no code change.
The bureau's client runs the label-sum round with that node, the model is published,
and a bank query through the coordinator decrypts to the plaintext model (each node's
stored preprocessing, WOE table included, then its weights) to 1e-6.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import textwrap
import threading
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from creditshare.client import CreditShareClient, train_model
from creditshare.client._bureau import RemoteHost
from creditshare.crypto import FastEncryptor, PrivateKey
from creditshare.demo import Federation, FederationLayout
from creditshare.demo._toml import dumps
from creditshare.departments import get_department, load_schema
from creditshare.errors import ProblemError
from creditshare.federated import TrainingConfig, _woe, auc
from creditshare.identity import Chain
from creditshare.synth import generate

from .conftest import Trust

SCHEMA = textwrap.dedent(
    """
    id = "registry"
    display_name = "Business registry"
    description = "Industry and head count of registered enterprises"

    [[columns]]
    name = "industry"
    type = "category"
    levels = ["farming", "mining", "trade", "services", "fishing"]

    [[columns]]
    name = "staff"
    type = "integer"
    min = 0

    [[features]]
    name = "industry_woe"
    column = "industry"
    encoding = "woe"
    min_rows = 25

    [[features]]
    name = "staff_log"
    column = "staff"
    transform = "log10p1"
    """
)
CONFIG = TrainingConfig(batch_size=64, max_epochs=2, learning_rate=0.5, early_stopping_rounds=2)


def _rewrite(path: Path, change: Any) -> None:
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(dumps(doc), encoding="utf-8")


def _labels(data: Path) -> dict[str, int]:
    with (data / "bureau" / "labels.csv").open() as handle:
        return {r["uscc"]: int(r["default"]) for r in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def woe_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("training-woe")
    generate(500, 5, root / "data")
    layout = FederationLayout.write(
        root / "fed", root / "data", chains=[Chain.YRD], departments=("tax", "market")
    )
    # The market node's operator loads its own schema instead (node config + coordinator
    # config name the department by the schema's id); its data file follows that schema.
    schema = root / "registry.toml"
    schema.write_text(SCHEMA, encoding="utf-8")
    node = next(n for n in layout.nodes if n.node_id == "yrd-market")

    def own_schema(doc: dict[str, Any]) -> None:
        doc.pop("department", None)
        doc.pop("models", None)
        doc["schema_file"] = str(schema)

    _rewrite(node.config, own_schema)

    def registry_department(doc: dict[str, Any]) -> None:
        for entry in doc["nodes"]:
            if entry["id"] == "yrd-market":
                entry["department"] = "registry"
        doc["models"] = []

    assert layout.coordinator_config is not None
    _rewrite(layout.coordinator_config, registry_department)
    labels = _labels(root / "data")
    with (root / "data" / "yrd" / "tax.csv").open() as handle:
        ids = [r["uscc"] for r in csv.DictReader(handle)]
    rng = np.random.default_rng(17)
    lines = ["uscc,industry,staff"]
    for uscc in ids:
        risky = labels.get(uscc, 0) == 1
        weights = [0.1, 0.15, 0.2, 0.55, 0.0] if risky else [0.35, 0.2, 0.2, 0.25, 0.0]
        level = ["farming", "mining", "trade", "services", "fishing"][int(rng.choice(5, p=weights))]
        lines.append(f"{uscc},{level},{int(rng.integers(1, 2000))}")
    data_file = root / "registry.csv"
    data_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    layout.nodes[layout.nodes.index(node)] = dataclasses.replace(
        node, department="registry", data_file=data_file
    )
    layout.import_data()
    with Federation(layout) as running:
        yield running


@pytest.fixture(scope="module")
def trust(woe_federation: Federation, bank_key: PrivateKey) -> Iterator[Trust]:
    trusting = Trust(woe_federation, bank_key, "woe-bank")
    yield trusting
    trusting.close()


def test_a_woe_feature_trains_publishes_and_scores_on_the_bank_path(
    woe_federation: Federation, trust: Trust, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fit set spans several label-sum calls (as a large one does with 4096 a call).
    monkeypatch.setattr(_woe, "LEVEL_SUMS_CHUNK", 64)
    calls: list[tuple[int, int, bool]] = []
    sent = RemoteHost.level_sums

    def spy(host: RemoteHost, ids: Any, labels: Any, total: int, final: bool) -> Any:
        calls.append((len(ids), total, final))
        return sent(host, ids, labels, total, final)

    monkeypatch.setattr(RemoteHost, "level_sums", spy)
    issued = trust.operator.register_participant("bureau-woe", "bureau", "WOE Bureau")
    bureau = CreditShareClient(
        trust.url,
        api_key=issued["api_key"],
        private_key=PrivateKey.generate(),
        identity=woe_federation.layout.identity("bureau-woe", "bureau"),
    )
    try:
        labels = _labels(woe_federation.layout.data_dir)
        nodes = ["yrd-tax", "yrd-market"]
        model = train_model(bureau, labels, nodes, "woe-model-v1", CONFIG)
        job = bureau.training_job(model.job_id)
        assert job["sizes"]["yrd-market"]["label_sums"] == "set"
        total = calls[0][1]
        assert len(calls) == -(-total // 64) >= 3  # chunks of 64, the last one final
        assert sum(n for n, _, _ in calls) == total and {t for _, t, _ in calls} == {total}
        assert [f for _, _, f in calls] == [False] * (len(calls) - 1) + [True]
        assert "label_sums" not in job["sizes"]["yrd-tax"]  # no WOE features there
        entry = {m["id"]: m for m in trust.bank.models()}["woe-model-v1"]
        assert entry["features"]["yrd-market"] == ["industry_woe", "staff_log"]

        shards = woe_federation.layout.trained_shards("woe-model-v1")
        registry = load_schema(
            Path(
                woe_federation.layout.node_settings(
                    next(n for n in woe_federation.layout.nodes if n.node_id == "yrd-market")
                ).schema_file
                or ""
            )
        )
        pre = shards["yrd-market"].preprocessing
        assert pre is not None and pre.features[0].woe is not None
        table = pre.features[0].woe
        # "services" is where the defaults are: the highest weight of evidence.
        assert max(table.values) == table.values[table.levels.index("services")]
        assert table.pooled[table.levels.index("fishing")]  # no enterprise: pooled
        tax = get_department("tax")
        rows = {
            d: {r["uscc"]: r for r in csv.DictReader(p.open())}
            for d, p in (
                ("tax", woe_federation.layout.data_dir / "yrd" / "tax.csv"),
                (
                    "registry",
                    next(
                        n.data_file
                        for n in woe_federation.layout.nodes
                        if n.node_id == "yrd-market"
                    ),
                ),
            )
        }

        def plaintext(uscc: str) -> float:
            terms = [model.intercept]
            for spec, node in ((tax, "yrd-tax"), (registry, "yrd-market")):
                raw = rows["tax" if node == "yrd-tax" else "registry"][uscc]
                record = {f.name: f.parse(raw[f.name]) for f in spec.fields}
                terms.append(shards[node].partial_score(spec.feature_values(record)))
            return math.fsum(terms)

        test = list(model.test_ids)
        y = np.array([labels[i] for i in test], dtype=float)
        assert auc(y, np.array([plaintext(i) for i in test])) == pytest.approx(
            entry["metrics"]["test_auc"], abs=1e-4
        )
        for uscc in test[:2]:
            profile = trust.bank.query(
                uscc, trust.consent(uscc), model_id="woe-model-v1", chains=["yrd"]
            )
            assert abs(profile.linear_score - plaintext(uscc)) < 1e-6
    finally:
        bureau.close()


def test_label_sum_steps_out_of_order_or_at_once_are_409(
    woe_federation: Federation, trust: Trust
) -> None:
    """The coordinator refuses a step out of order itself, before relaying it; of two
    level-sums calls at once, the second is a 409 too and the job lives on."""
    from creditshare.client._bureau import _align, _b64
    from creditshare.client._signing import sign_job

    issued = trust.operator.register_participant("bureau-woe-2", "bureau", "WOE Bureau 2")
    key = PrivateKey.generate()
    bureau = CreditShareClient(
        trust.url,
        api_key=issued["api_key"],
        private_key=key,
        identity=woe_federation.layout.identity("bureau-woe-2", "bureau"),
    )
    try:
        labels = _labels(woe_federation.layout.data_dir)
        body: dict[str, Any] = {
            "model_id": "woe-out-of-order",
            "nodes": ["yrd-market"],
            "key_fingerprint": bureau.ensure_paillier_key(),
            "config": CONFIG.to_document(),
        }
        signed = sign_job(bureau.identity, body)
        job = signed["job_id"]
        bureau.signed_post("/v1/training-jobs", body, lambda _i, _b: signed)
        path = f"/v1/training-jobs/{job}"
        apply = {"node": "yrd-market", "values": ["1"], "randomness": ["AQ=="]}
        with pytest.raises(ProblemError) as early:  # not even open
            bureau.post(f"{path}/apply-level-sums", apply)
        assert early.value.status == 409
        aligned, points = _align(bureau, job, labels, ["yrd-market"])
        opened = bureau.post(
            f"{path}/open",
            {"node": "yrd-market", "points": _b64([points["yrd-market"][i] for i in aligned])},
        )
        assert opened["label_sums_needed"] is True
        for step, payload in (
            ("forward", {"node": "yrd-market", "rows": [0, 1, 2]}),
            ("apply-level-sums", apply),
            ("finish", {"intercept": 0.0}),
        ):
            with pytest.raises(ProblemError) as caught:
                bureau.post(f"{path}/{step}", payload)
            assert caught.value.status == 409, step
            assert "sums" in str(caught.value), step
        assert bureau.training_job(job)["status"] == "training"  # refused, not failed

        # Two final level-sums calls at once (the whole fit set each): whether they
        # overlap or not, one is answered and the other is the coordinator's 409.
        encryptor = FastEncryptor(key.public_key)
        rows = list(range(len(aligned)))
        sums = {
            "node": "yrd-market",
            "rows": rows,
            "labels": _b64([encryptor.encrypt_encoded(labels[i]).to_bytes() for i in aligned]),
            "total": len(rows),
            "final": True,
        }
        start = threading.Barrier(2)

        def level_sums() -> int:
            start.wait()
            try:
                bureau.post(f"{path}/level-sums", sums)
            except ProblemError as refused:
                assert "sums" in str(refused)
                return refused.status
            return 200

        with ThreadPoolExecutor(2) as pool:
            statuses = sorted(pool.map(lambda _: level_sums(), range(2)))
        assert statuses == [200, 409]
        state = bureau.training_job(job)
        assert state["status"] == "training"
        assert state["sizes"]["yrd-market"]["label_sums"] == "asked"
        bureau.post(f"{path}/cancel", {"reason": "done"})
    finally:
        bureau.close()
