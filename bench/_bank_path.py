"""The distributed default_credit run: real processes, the bureau's SDK, banks' queries.

``bench/train_default_credit.py`` calls ``distributed_run``. Everything an operator
would run is a real process on loopback (``creditshare.demo.Federation``): the
coordinator under uvicorn, a ``card_history`` node holding FATE's host features and
a ``card_billing`` node the bureau runs for its own (guest) features, each node
loading its department from a schema file in ``data/default_credit/schemas/`` (no
code knows these departments). The bureau keeps its labels in this process and
trains with ``creditshare.client.train_model`` on the fixed test ids. Then each
held-out enterprise signs a consent with its own credential and a bank queries its
score with the trained model, many queries at once; the AUC/KS reported are of
those decrypted bank-path scores. The scoring seconds (and queries/s) cover each
enterprise's whole path: registration, credential upload, its signed consent, the
bank's query and decryption.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from creditshare.client import CreditShareClient, train_model
from creditshare.consent import ConsentGrant, Purpose
from creditshare.crypto import PrivateKey
from creditshare.datasets import prepare_default_credit
from creditshare.demo import Federation, FederationLayout
from creditshare.errors import ProblemError, ScoreUnavailableError
from creditshare.federated import TrainingConfig
from creditshare.federated._metrics import auc, ks
from creditshare.identity import Chain
from creditshare.trees import TreeConfig

__all__ = ["BankPathRun", "distributed_run", "score_through_banks"]

#: The two departments of the split, each defined only by its schema file.
HOST, GUEST = "card_history", "card_billing"
CHAIN = Chain.YRD
MODEL_ID = "bureau-default-credit-v1"
#: A degraded answer (a node refused a receipt under a stale tree head while other
#: queries raced on the ledger) is asked again, at most this many times.
_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class BankPathRun:
    """What the distributed run measured."""

    auc: float
    ks: float
    published_test_auc: float
    published_test_ks: float
    aligned_rows: int
    epochs: int
    training_seconds: float
    scoring_seconds: float
    queries: int
    retried_queries: int
    concurrency: int
    #: The decrypted bank-path score of each enterprise scored.
    scores: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "auc": self.auc,
            "ks": self.ks,
            "published_test_auc": self.published_test_auc,
            "published_test_ks": self.published_test_ks,
            "aligned_rows": self.aligned_rows,
            "epochs": self.epochs,
            "training_seconds": self.training_seconds,
            "scoring_seconds": self.scoring_seconds,
            "queries": self.queries,
            "queries_per_second": self.queries / max(self.scoring_seconds, 1e-9),
            "retried_queries": self.retried_queries,
            "concurrency": self.concurrency,
        }


def _keep(source: Path, target: Path, usccs: Set[str]) -> None:
    """Copy a node import file, keeping the header and the rows of ``usccs``."""
    with source.open(encoding="utf-8") as src, target.open("w", encoding="utf-8") as out:
        out.write(next(src))
        out.writelines(line for line in src if line.split(",", 1)[0] in usccs)


def _layout(root: Path, data: Path, schemas: Path, usccs: Set[str]) -> FederationLayout:
    """Node files where the layout looks for them (the enterprises of the run: all of them
    in a full run, the subsample in a quick one), and both schema files configured."""
    files = prepare_default_credit(data, root / "prepared")
    chain_dir = root / "data" / CHAIN.value
    chain_dir.mkdir(parents=True)
    _keep(files.node_file, chain_dir / f"{HOST}.csv", usccs)
    _keep(files.bureau_node_file, chain_dir / f"{GUEST}.csv", usccs)
    return FederationLayout.write(
        root / "federation",
        root / "data",
        chains=[CHAIN],
        departments=(HOST, GUEST),
        schema_files={HOST: schemas / f"{HOST}.toml", GUEST: schemas / f"{GUEST}.toml"},
        # One bank asks for thousands of profiles, each enterprise once.
        coordinator_overrides={
            "participant_requests_per_minute": 1_000_000,
            "training_steps_per_minute": 1_000_000,
            "enterprise_queries_per_day": 1_000,
        },
    )


def score_through_banks(
    layout: FederationLayout,
    operator_api_key: str,
    bank_id: str,
    bank_api_key: str,
    bank_key: PrivateKey,
    usccs: Sequence[str],
    model_id: str,
    concurrency: int,
) -> tuple[dict[str, float], int]:
    """Every enterprise registers, signs a consent for the bank with its own credential,
    and the bank queries its score with ``model_id``: uscc → linear score, and how
    many queries had to be asked again. ``concurrency`` enterprises at a time."""
    url = layout.coordinator_url
    bank_identity = layout.identity(bank_id, "bank")
    local = threading.local()
    lock = threading.Lock()  # the CA folder is written by each identity's signing
    retried = [0]

    def clients() -> tuple[CreditShareClient, CreditShareClient]:
        """This thread's (operator, bank) clients: one connection pool per thread."""
        if not hasattr(local, "bank"):
            local.operator = CreditShareClient(url, api_key=operator_api_key)
            local.bank = CreditShareClient(
                url, api_key=bank_api_key, private_key=bank_key, identity=bank_identity
            )
            opened.append((local.operator, local.bank))
        return local.operator, local.bank

    opened: list[tuple[CreditShareClient, CreditShareClient]] = []

    def one(uscc: str) -> float:
        participant = f"ent-{uscc.lower()}"
        operator, bank = clients()
        with lock:
            identity = layout.identity(participant, "enterprise", uscc)
        issued = operator.register_participant(
            participant,
            "enterprise",
            f"Enterprise {uscc}",
            uscc=uscc,
            signing_key=identity.signing_key.verify_key,
        )
        now = datetime.now(UTC)
        grant = ConsentGrant.create(
            uscc,
            bank_id,
            Purpose.PRE_LOAN_REVIEW,
            now - timedelta(minutes=1),
            now + timedelta(days=1),
            chains=(CHAIN,),
        )
        with CreditShareClient(url, api_key=issued["api_key"], identity=identity) as ent:
            ent.upload_credentials()
            consent_id = ent.grant_consent(grant.sign(identity.signing_key))["consent_id"]
        for attempt in range(_ATTEMPTS):
            try:
                profile = bank.query(uscc, consent_id, model_id=model_id, chains=[CHAIN.value])
            except ProblemError as exc:
                if exc.status != 503 or attempt + 1 == _ATTEMPTS:
                    raise
            except ScoreUnavailableError:
                # A tree model's chain step ran past its deadline (a loaded machine): the
                # query is recorded and spent nothing wrong; ask again, as for a node that
                # did not answer in time.
                if attempt + 1 == _ATTEMPTS:
                    raise
            else:
                if not profile.failed and len(profile.answered) == len(layout.nodes):
                    return profile.linear_score
                if attempt + 1 == _ATTEMPTS:
                    raise RuntimeError(f"{uscc}: nodes failed to answer: {profile.failed}")
            with lock:
                retried[0] += 1
        raise AssertionError("unreachable")

    # Warm up with one query (the bank's key registration, the nodes' first encryption
    # under a new key), then the rest at once.
    try:
        scores = {usccs[0]: one(usccs[0])}
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            scores.update(zip(usccs[1:], pool.map(one, usccs[1:]), strict=True))
    finally:
        for pair in opened:
            for client in pair:
                client.close()
    return scores, retried[0]


def distributed_run(
    work_dir: Path,
    data: Path,
    schemas: Path,
    labels: Mapping[str, int],
    test_ids: Sequence[str],
    config: TrainingConfig | TreeConfig,
    concurrency: int,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    scored: Sequence[str] | None = None,
) -> BankPathRun:
    """Train through the SDK on ``labels`` with ``test_ids`` held out, then score the
    held-out enterprises (or only ``scored`` of them) through the bank query path (see
    the module docstring)."""
    scored = list(test_ids) if scored is None else list(scored)
    layout = _layout(work_dir, data, schemas, set(labels))
    layout.import_data()
    operator_api_key = layout.bootstrap_operator()
    with (
        Federation(layout),
        CreditShareClient(layout.coordinator_url, api_key=operator_api_key) as op,
    ):
        layout.publish_revocation_lists(operator_api_key)
        bureau_api_key = op.register_participant("bench-bureau", "bureau", "Bench Bureau")
        bank_api_key = op.register_participant("bench-bank", "bank", "Bench Bank")["api_key"]
        with CreditShareClient(
            layout.coordinator_url,
            api_key=bank_api_key,
            identity=layout.identity("bench-bank", "bank"),
        ) as bank:
            bank.upload_credentials()
        bureau_key = PrivateKey.generate(2048)
        nodes = [node.node_id for node in layout.nodes]
        with CreditShareClient(
            layout.coordinator_url,
            api_key=bureau_api_key["api_key"],
            private_key=bureau_key,
            identity=layout.identity("bench-bureau", "bureau"),
        ) as bureau:
            started = time.perf_counter()
            model = train_model(
                bureau,
                labels,
                nodes,
                MODEL_ID,
                config,
                description="default_credit benchmark",
                on_progress=on_progress,
                test_ids=list(test_ids),
            )
            training_seconds = time.perf_counter() - started
            published = {m["id"]: m for m in bureau.models()}[MODEL_ID]["metrics"]
        bank_key = PrivateKey.generate(2048)
        started = time.perf_counter()
        scores, retried = score_through_banks(
            layout,
            operator_api_key,
            "bench-bank",
            bank_api_key,
            bank_key,
            scored,
            MODEL_ID,
            concurrency,
        )
        scoring_seconds = time.perf_counter() - started
    y = np.array([labels[u] for u in scored], dtype=float)
    values = np.array([scores[u] for u in scored])
    return BankPathRun(
        auc=auc(y, values),
        ks=ks(y, values),
        published_test_auc=float(published["test_auc"]),
        published_test_ks=float(published["test_ks"]),
        aligned_rows=model.aligned_rows,
        epochs=len(model.epochs) or len(model.trees),
        training_seconds=training_seconds,
        scoring_seconds=scoring_seconds,
        queries=len(scored),
        retried_queries=retried,
        concurrency=concurrency,
        scores=scores,
    )
