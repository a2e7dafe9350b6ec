"""`creditshare demo --json --verify`: the whole federation, as a newcomer runs it."""

from __future__ import annotations

import json
import subprocess
import sys


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
    assert doc["refusal"]["status"] == 403
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
