"""``creditshare demo``: a whole federation on this machine, queried as a bank would (and,
at the end, as a regulator would: one grouped cohort query of the tax nodes)."""

from __future__ import annotations

import csv
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from creditshare.client import (
    AccessEntry,
    CreditProfile,
    CreditShareClient,
    TrainedModel,
    WitnessPolicy,
    train_model,
)
from creditshare.consent import ConsentGrant, Purpose, format_time
from creditshare.crypto import PrivateKey
from creditshare.demo._federation import Federation, FederationLayout
from creditshare.demo._monitoring import MonitoringOutcome, run_monitoring
from creditshare.demo._statistics import StatisticsOutcome, run_statistics
from creditshare.demo._verify import PlaintextOracle, Verification, read_enterprises
from creditshare.departments import DEFAULT_INTERCEPT
from creditshare.errors import ConfigurationError, ProblemError
from creditshare.federated import TrainingConfig
from creditshare.identity import Chain
from creditshare.synth import generate, unknown_uscc

__all__ = [
    "WITNESS_QUORUM",
    "DemoQuery",
    "DemoResult",
    "Refusal",
    "pick_enterprises",
    "remove_parts",
    "run_demo",
]

#: Data nodes that must have cosigned a head before the demo's enterprise accepts it.
WITNESS_QUORUM = 2


@dataclass(frozen=True, slots=True)
class DemoQuery:
    label: str
    name: str
    consent_id: str
    profile: CreditProfile
    verification: Verification | None

    def to_json(self) -> dict[str, Any]:
        p = self.profile
        return {
            "uscc": p.uscc,
            "label": self.label,
            "consent_id": self.consent_id,
            "ledger_index": p.raw["ledger_index"],
            "name": self.name,
            "score": p.score,
            "probability_of_default": round(p.probability_of_default, 6),
            "linear_score": round(p.linear_score, 6),
            "chains_with_records": p.chains_with_records,
            "coverage": {"answered": p.answered, "failed": p.failed},
            "indicators": [
                {
                    "node": i.node,
                    "chain": i.chain,
                    "department": i.department,
                    "name": i.name,
                    "value": round(i.value, 6),
                    "label": i.label,
                }
                for i in p.indicators
            ],
            "verified": self.verification.ok if self.verification else None,
        }


@dataclass(frozen=True, slots=True)
class Refusal:
    uscc: str
    purpose: str
    status: int
    detail: str


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    model: TrainedModel
    nodes: list[str]
    uscc: str
    profile: CreditProfile
    expected_linear: float

    @property
    def verified(self) -> bool:
        return abs(self.profile.linear_score - self.expected_linear) < 1e-5

    def to_json(self) -> dict[str, Any]:
        m = self.model
        return {
            "model_id": m.model_id,
            "job_id": m.job_id,
            "nodes": self.nodes,
            "aligned_rows": m.aligned_rows,
            "test_auc": round(m.test_auc, 4),
            "test_ks": round(m.test_ks, 4),
            "epochs": len(m.epochs),
            "curve": [
                {
                    "epoch": e.epoch,
                    "validation_loss": round(e.validation_loss, 4),
                    "validation_auc": round(e.validation_auc, 4),
                }
                for e in m.epochs
            ],
            "query": {
                "uscc": self.uscc,
                "score": self.profile.score,
                "linear_score": round(self.profile.linear_score, 6),
                "expected_linear": round(self.expected_linear, 6),
                "verified": self.verified,
            },
        }


@dataclass(frozen=True, slots=True)
class DemoResult:
    nodes: int
    queries: list[DemoQuery]
    refusal: Refusal
    access_log_uscc: str
    access_log: list[AccessEntry]
    training: TrainingOutcome
    monitoring: MonitoringOutcome
    statistics: StatisticsOutcome
    #: Distinct data nodes that must have cosigned the head the access log is proven under.
    witness_quorum: int = WITNESS_QUORUM

    @property
    def access_log_verified(self) -> bool:
        kinds = [e.record.kind for e in self.access_log]
        witnessed = all(len(e.witnessed_by) >= self.witness_quorum for e in self.access_log)
        return (
            all(e.verified for e in self.access_log)
            and witnessed
            and "query" in kinds
            and "refusal" in kinds
        )

    @property
    def verified(self) -> bool:
        return (
            all(q.verification is not None and q.verification.ok for q in self.queries)
            and self.refusal.status == 403
            and self.access_log_verified
            and self.training.verified
            and self.monitoring.verified
            and self.statistics.verified
        )

    def to_json(self, verify: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "nodes": self.nodes,
            "queries": [q.to_json() for q in self.queries],
            "refusal": {
                "uscc": self.refusal.uscc,
                "purpose": self.refusal.purpose,
                "status": self.refusal.status,
                "detail": self.refusal.detail,
            },
            "access_log": {
                "uscc": self.access_log_uscc,
                "entries": [
                    {
                        "index": e.index,
                        "kind": e.record.kind,
                        "time": format_time(e.record.time),
                        "requester": e.record.requester,
                        "purpose": e.record.purpose,
                        "consent_id": e.record.consent_id,
                        "tree_size": e.tree_size,
                        "verified": e.verified,
                        "witnessed_by": list(e.witnessed_by),
                    }
                    for e in self.access_log
                ],
                "witness_quorum": self.witness_quorum,
                "verified": self.access_log_verified,
            },
            "training": self.training.to_json(),
            "monitoring": self.monitoring.to_json(),
            "statistics": self.statistics.to_json(),
        }
        if verify:
            doc["verified"] = self.verified
        return doc


def pick_enterprises(data_dir: Path, seed: int) -> list[tuple[str, str, str]]:
    """(label, uscc, name): one home-only enterprise per chain, a cross-chain one, an unknown."""
    rows = read_enterprises(data_dir)
    picks: list[tuple[str, str, str]] = []
    for chain in Chain:
        row = next(
            r for r in rows if r["home_chain"] == chain.value and r["record_chains"] == chain.value
        )
        picks.append((f"{chain.display_name} enterprise", row["uscc"], row["name"]))
    cross = next(r for r in rows if ";" in r["record_chains"])
    picks.append(
        (f"records in {cross['record_chains'].replace(';', ' + ')}", cross["uscc"], cross["name"])
    )
    unknown = unknown_uscc(seed, {r["uscc"] for r in rows})
    picks.append(("unknown to every node", unknown, "(not in any node's data)"))
    return picks


#: Marks a folder a demo run made, so that a later run may replace what it left there.
DEMO_MARKER = ".creditshare-demo"
#: What a run writes under its folder (and a later run replaces).
_DEMO_PARTS = ("data", "federation")


def remove_parts(root: Path, parts: Iterable[str]) -> None:
    """Remove what a run wrote at the top of ``root`` (files, links, folders); nothing else."""
    for part in parts:
        path = root / part
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)


def _fresh_work_dir(root: Path) -> bool:
    """Make ``root`` ready for a new federation; True if an earlier run's was replaced.

    Every run is a fresh federation (new data for its seed, new keys, empty databases):
    reusing an earlier run's node databases would make the new snapshot remove every
    record they hold, which imports rightly refuse, and its coordinator database holds
    the earlier bank and ledger. A folder with anything in it that no demo run made is
    refused: the demo deletes only what it wrote, and only where it left its marker.
    """
    marker = root / DEMO_MARKER
    if root.exists() and not root.is_dir():
        raise ConfigurationError(f"--work-dir {root} is a file, not a folder")
    earlier = root.exists() and any(root.iterdir())
    if earlier and not marker.is_file():
        raise ConfigurationError(
            f"--work-dir {root} is not empty and no earlier `creditshare demo` run made it: "
            "give a new or empty folder (a demo replaces only a folder it made itself)"
        )
    remove_parts(root, _DEMO_PARTS)
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        "Made by `creditshare demo --work-dir`: the next run with this folder replaces "
        f"{' and '.join(f'{p}/' for p in _DEMO_PARTS)} with a fresh federation.\n",
        encoding="utf-8",
    )
    return earlier


def run_demo(
    enterprises: int = 300,
    seed: int = 7,
    verify: bool = True,
    work_dir: Path | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> DemoResult:
    def say(message: str) -> None:
        if on_progress is not None:
            on_progress(message)

    with tempfile.TemporaryDirectory(prefix="creditshare-demo-") as tmp:
        root = work_dir or Path(tmp)
        if work_dir is not None and _fresh_work_dir(work_dir):
            say(f"replaced the previous demo run in {work_dir}")
        data_dir = root / "data"
        manifest = generate(enterprises, seed, data_dir)
        say(f"generated synthetic data for {manifest.enterprises} enterprises in {data_dir}")
        layout = FederationLayout.write(root / "federation", data_dir)
        say(
            f"issued a CA per chain and mTLS certificates for {len(layout.nodes)} nodes "
            "and the coordinator; generated the ledger's signing key"
        )
        counts = layout.import_data()
        say(f"imported {sum(counts.values())} records into {len(counts)} data nodes")
        operator_key = layout.bootstrap_operator()
        paillier = PrivateKey.generate()
        say(
            f"bank generated a {paillier.public_key.bits}-bit Paillier key locally "
            f"(fingerprint {paillier.public_key.fingerprint()})"
        )
        oracle = PlaintextOracle(layout, DEFAULT_INTERCEPT) if verify else None
        url = layout.coordinator_url
        queries: list[DemoQuery] = []
        with Federation(layout), CreditShareClient(url, api_key=operator_key) as operator:
            say(f"coordinator on {url}, {len(layout.nodes)} nodes on loopback (mutual TLS)")
            layout.publish_revocation_lists(operator_key)
            say("operator relayed each chain CA's revocation list to the nodes")
            bank_api_key = operator.register_participant(
                "demo-bank", "bank", "Demo Rural Commercial Bank"
            )["api_key"]
            bank = CreditShareClient(
                url,
                api_key=bank_api_key,
                private_key=paillier,
                identity=layout.identity("demo-bank", "bank"),
            )
            say(
                "bank made its signing key, each chain CA certified it (pki request / pki "
                "sign); operator registered the bank and issued its API key"
            )
            first: tuple[str, str, CreditShareClient] | None = None
            now = datetime.now(UTC)
            picks = pick_enterprises(data_dir, seed)
            for label, uscc, name in picks:
                identity = layout.identity(f"ent-{uscc.lower()}", "enterprise", uscc)
                signing = identity.signing_key
                enterprise_api_key = operator.register_participant(
                    f"ent-{uscc.lower()}",
                    "enterprise",
                    name,
                    uscc=uscc,
                    signing_key=signing.verify_key,
                )["api_key"]
                enterprise = CreditShareClient(url, api_key=enterprise_api_key, identity=identity)
                enterprise.upload_credentials()
                grant = ConsentGrant.create(
                    uscc,
                    "demo-bank",
                    Purpose.PRE_LOAN_REVIEW,
                    now - timedelta(minutes=1),
                    now + timedelta(days=30),
                    max_uses=3,
                )
                consent_id = enterprise.grant_consent(grant.sign(signing))["consent_id"]
                say(
                    f"{uscc} signed consent {consent_id[:12]}… for demo-bank "
                    "(pre-loan review, all chains, 30 days, 3 uses)"
                )
                profile = bank.query(uscc, consent_id)
                scale = int(profile.raw["scale"])
                check = oracle.verify(profile, scale) if oracle else None
                queries.append(DemoQuery(label, name, consent_id, profile, check))
                if first is None:
                    first = (uscc, consent_id, enterprise)
                else:
                    enterprise.close()
            assert first is not None
            uscc, consent_id, enterprise = first
            try:
                bank.query(uscc, consent_id, purpose=Purpose.POST_LOAN_MONITORING)
                refusal = Refusal(uscc, Purpose.POST_LOAN_MONITORING.value, 200, "not refused!")
            except ProblemError as exc:
                refusal = Refusal(uscc, Purpose.POST_LOAN_MONITORING.value, exc.status, exc.detail)
            say(
                "bank asked again, for post_loan_monitoring under the pre_loan_review "
                f"consent: {refusal.status} ({refusal.detail})"
            )
            witnesses = tuple(layout.witness_keys())
            policy = WitnessPolicy(witnesses, min(WITNESS_QUORUM, len(witnesses)))
            log = enterprise.verified_enterprise_queries(uscc, layout.log_key(), policy)
            say(
                f"{uscc} read its access log: {len(log)} entries, inclusion verified against "
                f"the pinned ledger key, under a head cosigned by a quorum of {policy.quorum} "
                f"of the {len(witnesses)} data nodes (each made its witness key in its own "
                "folder)"
            )
            enterprise.close()
            training = _train_and_score(operator, bank, layout, data_dir, uscc, consent_id, say)
            bank.close()
            taken = {u for _, u, _ in picks}
            monitoring = run_monitoring(operator, layout, data_dir, bank_api_key, taken, say)
            statistics = run_statistics(operator, layout, verify, say)
        return DemoResult(
            len(layout.nodes),
            queries,
            refusal,
            uscc,
            log,
            training,
            monitoring,
            statistics,
            policy.quorum,
        )


def _train_and_score(
    operator: CreditShareClient,
    bank: CreditShareClient,
    layout: FederationLayout,
    data_dir: Path,
    uscc: str,
    consent_id: str,
    say: Callable[[str], None],
) -> TrainingOutcome:
    """A bureau trains on three Yangtze River Delta nodes; the bank scores with the result."""
    bureau_key = operator.register_participant("demo-bureau", "bureau", "Demo Credit Bureau")
    with (data_dir / "bureau" / "labels.csv").open(encoding="utf-8", newline="") as handle:
        labels = {row["uscc"]: int(row["default"]) for row in csv.DictReader(handle)}
    nodes = [f"yrd-{d}" for d in ("tax", "market", "social")]
    model_id = "demo-bureau-sme-v1"
    say(
        f"bureau aligns its {len(labels)} labels with {', '.join(nodes)} by PSI and trains "
        "(Paillier, masked gradients)"
    )
    with CreditShareClient(
        bank.base_url,
        api_key=bureau_key["api_key"],
        private_key=PrivateKey.generate(),
        identity=layout.identity("demo-bureau", "bureau"),
    ) as bureau:
        model = train_model(
            bureau,
            labels,
            nodes,
            model_id,
            TrainingConfig(
                batch_size=32, max_epochs=3, learning_rate=0.3, validation_fraction=0.25
            ),
            description="demo bureau model",
        )
    say(
        f"published {model_id}: {model.aligned_rows} aligned rows, {len(model.epochs)} epochs, "
        f"held-out AUC {model.test_auc:.3f}"
    )
    profile = bank.query(uscc, consent_id, model_id=model_id, chains=["yrd"])
    oracle = PlaintextOracle(layout, DEFAULT_INTERCEPT)
    expected = oracle.linear_for_model(
        uscc, profile.answered, layout.trained_shards(model_id), model.intercept
    )
    outcome = TrainingOutcome(model, nodes, uscc, profile, expected)
    verdict = "matches" if outcome.verified else "DIFFERS"
    say(f"bank scored {uscc} with {model_id}: {profile.score} (plaintext recomputation {verdict})")
    return outcome
