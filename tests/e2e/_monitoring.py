"""Shared by the monitoring end-to-end tests: the court's records as its steward edits
them between snapshots, and the calls every test makes."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from creditshare.consent import Purpose
from creditshare.demo import Federation, NodeLayout, read_enterprises
from creditshare.errors import ProblemError
from creditshare.node import import_into_node

from .conftest import Trust

COURT = "yrd-court"
WATCH = {"court_judgment": 1, "dishonest_debtor": None}


class CourtRecords:
    """The court department's records as its steward edits them between snapshots."""

    def __init__(self, federation: Federation, work: Path) -> None:
        self.node: NodeLayout = next(n for n in federation.layout.nodes if n.node_id == COURT)
        self.layout = federation.layout
        self.work = work
        with self.node.data_file.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            self.header = list(reader.fieldnames or ())
            self.rows = {row["uscc"]: row for row in reader}
        self.snapshots = 0

    def clean(self, count: int) -> list[str]:
        """``count`` enterprises of the chain the court holds no record of yet."""
        homes = [
            r["uscc"] for r in read_enterprises(self.layout.data_dir) if r["home_chain"] == "yrd"
        ]
        found = [uscc for uscc in homes if uscc not in self.rows]
        assert len(found) >= count, (
            "the synthetic chain should hold enterprises without court records"
        )
        return found[:count]

    def judgment(self, uscc: str) -> None:
        """One more judgment against ``uscc`` (its first: a new court record), imported as
        the court's next snapshot."""
        row = self.rows.setdefault(
            uscc, {"uscc": uscc, "judgments_as_defendant": "0", "dishonest_debtor": "0"}
        )
        row["judgments_as_defendant"] = str(int(row["judgments_as_defendant"]) + 1)
        self.snapshots += 1
        path = self.work / f"court-snapshot-{self.snapshots}.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.header)
            writer.writeheader()
            writer.writerows(self.rows.values())
        import_into_node(self.layout.node_settings(self.node), [path])


def cycle(trust: Trust) -> dict[str, Any]:
    summary: dict[str, Any] = trust.operator.post("/v1/monitoring/cycles")
    return summary


def monitoring_consent(trust: Trust, uscc: str, **kwargs: Any) -> str:
    return trust.consent(uscc, purpose=Purpose.POST_LOAN_MONITORING, **kwargs)


def ledger_size(trust: Trust) -> int:
    try:
        return int(trust.operator.ledger_head()["size"])
    except ProblemError as exc:
        if exc.status == 404:  # nothing recorded yet
            return 0
        raise
