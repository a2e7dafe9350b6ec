"""`creditshare demo --json --verify`: the whole federation, as a newcomer runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_json_verify() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "creditshare", "demo", "--json", "--verify", "--enterprises", "150"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["verified"] is True
    assert doc["nodes"] >= 9
    queries = doc["queries"]
    assert len(queries) >= 5
    for query in queries:
        assert query["verified"] is True
        assert len(query["coverage"]["answered"]) >= 9
        assert query["coverage"]["failed"] == []
        assert set(query) >= {
            "uscc",
            "score",
            "probability_of_default",
            "coverage",
            "indicators",
            "verified",
        }
    cross = [q for q in queries if len(q["chains_with_records"]) >= 2]
    assert cross, "the demo must include an enterprise with records in two chains"
    assert len({i["chain"] for i in cross[0]["indicators"]}) >= 2
    unknown = [q for q in queries if q["chains_with_records"] == []]
    assert unknown and unknown[0]["indicators"] == []
    # Consent, ledger and the enterprise's own verification of its access log.
    # The refused ask: post_loan_monitoring under the pre_loan_review consent.
    assert (doc["refusal"]["status"], doc["refusal"]["purpose"]) == (403, "post_loan_monitoring")
    entries = doc["access_log"]["entries"]
    assert doc["access_log"]["verified"] is True
    assert {e["kind"] for e in entries} == {"query", "refusal"}
    assert all(e["verified"] for e in entries)
    # ...under a head a quorum of the data nodes cosigned (their witness keys).
    assert doc["access_log"]["witness_quorum"] == 2
    assert all(len(set(e["witnessed_by"])) >= 2 for e in entries)
    # A short training run, then a bank query with the trained model.
    training = doc["training"]
    assert training["aligned_rows"] > 30 and len(training["nodes"]) == 3
    assert len(training["curve"]) == training["epochs"] >= 1
    assert training["query"]["verified"] is True
    # Post-loan monitoring: after a new court snapshot, exactly one alert, for the
    # enterprise that got a judgment, and every sealed batch stored had the same size.
    monitoring = doc["monitoring"]
    assert monitoring["verified"] is True
    assert [a["uscc"] for a in monitoring["alerts"]] == [monitoring["judged"]]
    alert = monitoring["alerts"][0]
    assert (alert["type"], alert["node"]) == ("court_judgment", "yrd-court")
    assert alert["subscription_id"] == monitoring["subscriptions"][monitoring["judged"]]
    assert len(monitoring["cycles"]) == 2 and monitoring["gaps"] == []
    for cycle in monitoring["cycles"]:  # one batch per subscription per court node
        assert cycle["subscriptions"] == 2 and cycle["nodes"] >= 2
        assert cycle["batches"] == cycle["subscriptions"] * cycle["nodes"]
    assert monitoring["batch_sizes"] == [4144] and monitoring["stored_batches"] >= 4
    # Regulator statistics: one grouped cohort query of the three tax nodes; every
    # released figure within its bound of the plaintext figure from the raw files.
    stats = doc["statistics"]
    assert stats["verified"] is True and stats["problems"] == []
    assert stats["query"]["group_by"] == ["region"] and stats["additions"] == 3
    rows = stats["rows"]
    assert any(r["suppressed"] for r in rows) and not all(r["suppressed"] for r in rows)
    assert all(r["value"] is None for r in rows if r["suppressed"])
    assert sum(p["epsilon"] for p in stats["budget"]["periods"]) == 1.0


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "creditshare", "demo", "--json", "--enterprises", "150", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_work_dir_is_replaced_by_each_run_and_a_foreign_folder_is_refused(
    tmp_path: Path,
) -> None:
    """Each run is a fresh federation: run again in the same --work-dir with another
    seed, it replaces the earlier run's files (the earlier node databases would make the
    new snapshot "remove every record", which imports refuse). A folder no demo made is
    never written to."""
    work = tmp_path / "demo"
    uscc_sets = []
    for seed in ("7", "9"):
        out = _demo("--seed", seed, "--work-dir", str(work))
        assert out.returncode == 0, out.stderr[-3000:]
        uscc_sets.append({q["uscc"] for q in json.loads(out.stdout)["queries"]})
        assert (work / ".creditshare-demo").is_file()
        assert {p.name for p in (work / "data").iterdir()} >= {"yrd", "prd"}
    assert uscc_sets[0] != uscc_sets[1]  # the second run's data is its own seed's
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    refused = _demo("--work-dir", str(foreign))
    assert refused.returncode == 2
    assert "is not empty and no earlier `creditshare demo` run made it" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "keep me"
