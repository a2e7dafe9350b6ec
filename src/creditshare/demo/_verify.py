"""Recomputing a profile in plaintext from the raw synthetic files.

This is what only the demo may do (it generated the data, so it may read it):
it proves the encrypted pipeline returns exactly what the published scorecard
says, within the fixed-point rounding of one value per node.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from creditshare.client import CreditProfile
from creditshare.demo._federation import FederationLayout
from creditshare.departments import PRESENCE_INDICATOR, FieldValue, get_department
from creditshare.federated import ModelShard

__all__ = ["PlaintextOracle", "Verification", "read_enterprises"]


@dataclass(frozen=True, slots=True)
class Verification:
    expected_linear: float
    score_ok: bool
    indicators_ok: bool
    presence_ok: bool

    @property
    def ok(self) -> bool:
        return self.score_ok and self.indicators_ok and self.presence_ok


class PlaintextOracle:
    def __init__(self, layout: FederationLayout, intercept: float) -> None:
        self._layout = layout
        self._intercept = intercept
        self._weights = layout.weights()
        self._records: dict[str, dict[str, dict[str, FieldValue]]] = {}
        for node in layout.nodes:
            department = get_department(node.department)
            rows: dict[str, dict[str, FieldValue]] = {}
            if node.data_file.exists():
                with node.data_file.open(encoding="utf-8", newline="") as handle:
                    for row in csv.DictReader(handle):
                        rows[row["uscc"]] = {
                            f.name: f.parse(row[f.name]) for f in department.fields
                        }
            self._records[node.node_id] = rows

    def nodes_with_record(self, uscc: str, answered: list[str]) -> set[str]:
        return {n for n in answered if uscc in self._records[n]}

    def linear(self, uscc: str, answered: list[str]) -> float:
        total = [self._intercept]
        for node in self._layout.nodes:
            record = self._records[node.node_id].get(uscc)
            if node.node_id in answered and record is not None:
                department = get_department(node.department)
                shard = ModelShard(self._weights[node.node_id])
                total.append(shard.partial_score(department.feature_values(record)))
        return math.fsum(total)

    def linear_for_model(
        self,
        uscc: str,
        answered: list[str],
        shards: Mapping[str, ModelShard],
        intercept: float,
    ) -> float:
        """The score a trained model gives, from its shards (preprocessing, weights) per node."""
        total = [intercept]
        for node in self._layout.nodes:
            record = self._records[node.node_id].get(uscc)
            if node.node_id in answered and record is not None and node.node_id in shards:
                department = get_department(node.department)
                total.append(shards[node.node_id].partial_score(department.feature_values(record)))
        return math.fsum(total)

    def indicators(self, uscc: str, node_id: str) -> Mapping[str, float]:
        node = next(n for n in self._layout.nodes if n.node_id == node_id)
        record = self._records[node_id][uscc]
        return get_department(node.department).indicator_values(record)

    def verify(self, profile: CreditProfile, scale: int) -> Verification:
        expected = self.linear(profile.uscc, profile.answered)
        tolerance = (len(profile.answered) + 1) * 0.5 / scale + 1e-9
        score_ok = abs(profile.linear_score - expected) <= tolerance
        present = self.nodes_with_record(profile.uscc, profile.answered)
        presence_ok = present == set(profile.nodes_with_records)
        indicators_ok = presence_ok
        if presence_ok:
            for item in profile.indicators:
                if item.name == PRESENCE_INDICATOR:
                    continue
                want = self.indicators(profile.uscc, item.node).get(item.name)
                if want is None or abs(item.value - want) > 0.5 / scale + 1e-9:
                    indicators_ok = False
        return Verification(expected, score_ok, indicators_ok, presence_ok)


def read_enterprises(data_dir: Path) -> list[dict[str, str]]:
    with (data_dir / "enterprises.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))
