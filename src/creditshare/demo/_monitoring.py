"""The demo's post-loan monitoring: a bank watches two enterprises; one gets a judgment.

What it shows: the bank subscribes under each enterprise's ``post_loan_monitoring``
consent; a cycle runs while nothing has happened (every court node still sends one
sealed batch per subscription); the Yangtze River Delta court imports a new snapshot
in which one of the two has its first judgment; the next cycle brings the bank exactly
one alert, for that enterprise, opened with the bank's own alert key. Every batch the
coordinator stored has the same size, event or not.

Calls, in order (the coordinator's and nodes' monitoring API): ``POST /v1/consents``
(purpose post_loan_monitoring), ``POST /v1/subscriptions`` (via ``client.subscribe``),
``POST /v1/monitoring/cycles`` (``run_monitoring_cycle``), ``import_into_node`` on
``yrd-court`` (events are detected inside that import), ``POST /v1/monitoring/cycles``
again, then ``GET /v1/alerts`` (``client.alerts`` and the raw rows, for their sizes).
"""

from __future__ import annotations

import base64
import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from creditshare.client import Alert, AlertInbox, CreditShareClient
from creditshare.consent import ConsentGrant, Purpose
from creditshare.crypto import AlertPrivateKey
from creditshare.demo._federation import FederationLayout
from creditshare.demo._verify import read_enterprises
from creditshare.identity import Chain
from creditshare.monitoring import Signal
from creditshare.node import import_into_node

__all__ = ["MonitoringOutcome", "run_monitoring"]

#: What the demo bank watches for.
SIGNALS: dict[str, int | None] = {"court_judgment": 1, "dishonest_debtor": None}
#: The court whose new snapshot raises the event.
CHAIN = Chain.YRD


@dataclass(frozen=True, slots=True)
class MonitoringOutcome:
    #: The enterprise that gets a judgment, and the one where nothing happens.
    judged: str
    quiet: str
    #: uscc -> subscription id.
    subscriptions: dict[str, str]
    #: Each cycle's summary, as the coordinator returned it.
    cycles: list[dict[str, Any]]
    #: What the bank read, opened and deduplicated.
    alerts: list[Alert]
    #: The size of every sealed batch the coordinator stored (all cycles).
    batch_sizes: list[int]
    gaps: list[str]

    @property
    def verified(self) -> bool:
        """Exactly one alert, a court judgment of the judged enterprise from the chain's
        court; nothing for the other; every stored batch the same size; no gap."""
        return (
            len(self.alerts) == 1
            and self.alerts[0].uscc == self.judged
            and self.alerts[0].signal is Signal.COURT_JUDGMENT
            and self.alerts[0].node == f"{CHAIN.value}-court"
            and self.alerts[0].subscription_id == self.subscriptions[self.judged]
            and len(set(self.batch_sizes)) == 1
            and len(self.batch_sizes) >= 2 * len(self.subscriptions)
            and not self.gaps
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "judged": self.judged,
            "quiet": self.quiet,
            "subscriptions": self.subscriptions,
            "cycles": [
                {
                    "number": c.get("number"),
                    "ledger_index": c.get("ledger_index"),
                    "batches": sum(_count(n.get("batches")) for n in c.get("nodes", [])),
                    "subscriptions": _count(c.get("subscriptions")),
                    "nodes": sum(1 for n in c.get("nodes", []) if _count(n.get("batches"))),
                }
                for c in self.cycles
            ],
            "alerts": [a.to_json() for a in self.alerts],
            "stored_batches": len(self.batch_sizes),
            "batch_sizes": sorted(set(self.batch_sizes)),
            "gaps": self.gaps,
            "verified": self.verified,
        }


def _count(value: Any) -> int:
    """A count the cycle summary gives as a number or as the list of what it counts."""
    return len(value) if isinstance(value, list) else int(value or 0)


def _watched_pair(data_dir: Path, taken: set[str]) -> tuple[tuple[str, str], tuple[str, str]]:
    """(uscc, name) of two enterprises with records in the chain, not yet registered:
    the first has no court record yet (its judgment will be its first), the second any."""
    with (data_dir / CHAIN.value / "court.csv").open(encoding="utf-8", newline="") as handle:
        in_court = {row["uscc"] for row in csv.DictReader(handle)}
    rows = [
        r
        for r in read_enterprises(data_dir)
        if CHAIN.value in r["record_chains"].split(";") and r["uscc"] not in taken
    ]
    judged = next(r for r in rows if r["uscc"] not in in_court)
    quiet = next(r for r in rows if r["uscc"] != judged["uscc"])
    return (judged["uscc"], judged["name"]), (quiet["uscc"], quiet["name"])


def _monitoring_consent(
    operator: CreditShareClient, layout: FederationLayout, uscc: str, name: str
) -> str:
    """Register the enterprise, which signs a year's post_loan_monitoring consent."""
    participant = f"ent-{uscc.lower()}"
    identity = layout.identity(participant, "enterprise", uscc)
    api_key = operator.register_participant(
        participant, "enterprise", name, uscc=uscc, signing_key=identity.signing_key.verify_key
    )["api_key"]
    now = datetime.now(UTC)
    grant = ConsentGrant.create(
        uscc,
        "demo-bank",
        Purpose.POST_LOAN_MONITORING,
        now - timedelta(minutes=1),
        now + timedelta(days=365),
    )
    with CreditShareClient(layout.coordinator_url, api_key=api_key, identity=identity) as ent:
        ent.upload_credentials()
        return str(ent.grant_consent(grant.sign(identity.signing_key))["consent_id"])


def _judgment_snapshot(court_file: Path, uscc: str, out: Path) -> Path:
    """The court's next export: every record as before, plus ``uscc``'s first judgment."""
    with court_file.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = list(reader.fieldnames or ()), list(reader)
    rows.append({f: "0" for f in fields} | {"uscc": uscc, "judgments_as_defendant": "1"})
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)
    return out


def run_monitoring(
    operator: CreditShareClient,
    layout: FederationLayout,
    data_dir: Path,
    bank_api_key: str,
    taken: set[str],
    say: Callable[[str], None],
) -> MonitoringOutcome:
    (judged, judged_name), (quiet, quiet_name) = _watched_pair(data_dir, taken)
    alert_key = AlertPrivateKey.generate()
    say(
        "bank generated its X25519 alert key locally (fingerprint "
        f"{alert_key.public_key().fingerprint()}): nodes seal alerts to it, nobody else opens them"
    )
    subscriptions: dict[str, str] = {}
    with CreditShareClient(
        layout.coordinator_url,
        api_key=bank_api_key,
        identity=layout.identity("demo-bank", "bank"),
        alert_key=alert_key,
    ) as bank:
        for uscc, name in ((judged, judged_name), (quiet, quiet_name)):
            consent_id = _monitoring_consent(operator, layout, uscc, name)
            sub = bank.subscribe(uscc, consent_id, SIGNALS)
            subscriptions[uscc] = str(sub["subscription_id"])
            say(
                f"{uscc} signed a post-loan monitoring consent; demo-bank subscribed "
                f"({', '.join(SIGNALS)}), recorded in the ledger at {sub.get('ledger_index')}"
            )
        cycles = [operator.run_monitoring_cycle()]
        say(f"cycle {cycles[0]['number']}: nothing happened, every court node sent sealed batches")
        court = next(n for n in layout.nodes if n.chain == CHAIN and n.department == "court")
        snapshot = _judgment_snapshot(
            court.data_file, judged, data_dir / CHAIN.value / "court-next.csv"
        )
        summary = import_into_node(layout.node_settings(court), [snapshot])
        say(
            f"{court.node_id} imported a new snapshot ({summary.added} added, {summary.changed} "
            f"changed): {judged} has its first judgment"
        )
        cycles.append(operator.run_monitoring_cycle())
        say(f"cycle {cycles[1]['number']}: the same number and size of sealed batches")
        inbox = AlertInbox()
        alerts = list(bank.alerts(inbox=inbox))
        rows = bank.get("/v1/alerts?limit=1000")["alerts"]
        sizes = [len(base64.b64decode(r["sealed"])) for r in rows]
    say(f"bank opened {len(rows)} sealed batches with its alert key: {len(alerts)} alert(s)")
    return MonitoringOutcome(
        judged, quiet, subscriptions, cycles, alerts, sizes, [str(g) for g in inbox.gaps]
    )
