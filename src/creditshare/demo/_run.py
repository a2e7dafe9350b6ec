"""``creditshare demo``: a whole federation on this machine, queried as a bank would."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from creditshare.client import CreditProfile, CreditShareClient
from creditshare.crypto import PrivateKey
from creditshare.demo._federation import Federation, FederationLayout
from creditshare.demo._verify import PlaintextOracle, Verification, read_enterprises
from creditshare.departments import DEFAULT_INTERCEPT, DEFAULT_MODEL_ID
from creditshare.identity import Chain
from creditshare.synth import generate, unknown_uscc

__all__ = ["DemoQuery", "DemoResult", "pick_enterprises", "run_demo"]


@dataclass(frozen=True, slots=True)
class DemoQuery:
    label: str
    name: str
    profile: CreditProfile
    verification: Verification | None

    def to_json(self) -> dict[str, Any]:
        p = self.profile
        return {
            "uscc": p.uscc,
            "label": self.label,
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
class DemoResult:
    nodes: int
    queries: list[DemoQuery]

    @property
    def verified(self) -> bool:
        return all(q.verification is not None and q.verification.ok for q in self.queries)

    def to_json(self, verify: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {"nodes": self.nodes, "queries": [q.to_json() for q in self.queries]}
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


def run_demo(
    enterprises: int = 300,
    seed: int = 7,
    verify: bool = True,
    work_dir: Path | None = None,
    on_progress: Any = None,
) -> DemoResult:
    def say(message: str) -> None:
        if on_progress is not None:
            on_progress(message)

    with tempfile.TemporaryDirectory(prefix="creditshare-demo-") as tmp:
        root = work_dir or Path(tmp)
        data_dir = root / "data"
        manifest = generate(enterprises, seed, data_dir)
        say(f"generated synthetic data for {manifest.enterprises} enterprises in {data_dir}")
        layout = FederationLayout.write(root / "federation", data_dir)
        counts = layout.import_data()
        say(f"imported {sum(counts.values())} records into {len(counts)} data nodes")
        key = PrivateKey.generate()
        say(
            f"bank generated a {key.public_key.bits}-bit Paillier key locally "
            f"(fingerprint {key.public_key.fingerprint()})"
        )
        oracle = PlaintextOracle(layout, DEFAULT_INTERCEPT) if verify else None
        queries: list[DemoQuery] = []
        with Federation(layout), CreditShareClient(layout.coordinator_url, key) as client:
            say(f"coordinator on {layout.coordinator_url}, {len(layout.nodes)} nodes on loopback")
            for label, uscc, name in pick_enterprises(data_dir, seed):
                profile = client.query(uscc, DEFAULT_MODEL_ID)
                scale = int(profile.raw["scale"])
                check = oracle.verify(profile, scale) if oracle else None
                queries.append(DemoQuery(label, name, profile, check))
        return DemoResult(nodes=len(layout.nodes), queries=queries)
