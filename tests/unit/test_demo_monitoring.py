"""The demo's monitoring step, in the parts that run without a federation: whom it
watches, and the court snapshot it imports (accepted by the court schema, changing
exactly one enterprise)."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest

from creditshare.client import Alert
from creditshare.demo import pick_enterprises
from creditshare.demo._monitoring import MonitoringOutcome, _judgment_snapshot, _watched_pair
from creditshare.departments import get_department
from creditshare.monitoring import Severity, Signal
from creditshare.node import RecordStore, import_files, make_engine
from creditshare.synth import generate


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(150, 7, out)
    return out


def test_the_watched_pair_is_two_new_participants_with_records_in_the_chain(
    data_dir: Path,
) -> None:
    taken = {uscc for _, uscc, _ in pick_enterprises(data_dir, 7)}
    (judged, _), (quiet, _) = _watched_pair(data_dir, taken)
    assert judged != quiet and not {judged, quiet} & taken
    with (data_dir / "yrd" / "court.csv").open(encoding="utf-8") as handle:
        in_court = {row["uscc"] for row in csv.DictReader(handle)}
    assert judged not in in_court  # its judgment will be its first


def test_the_next_court_snapshot_adds_exactly_the_judgment(data_dir: Path, tmp_path: Path) -> None:
    (judged, _), _ = _watched_pair(data_dir, set())
    store = RecordStore(make_engine(f"sqlite:///{tmp_path / 'node.db'}"))
    court = get_department("court")
    first = import_files(store, court, [data_dir / "yrd" / "court.csv"])
    snapshot = _judgment_snapshot(data_dir / "yrd" / "court.csv", judged, tmp_path / "next.csv")
    second = import_files(store, court, [snapshot])
    assert (second.added, second.changed, second.removed) == (1, 0, 0)
    assert second.rows == first.rows + 1
    record = store.get(judged)
    assert record is not None and record["judgments_as_defendant"] == 1


def _alert(uscc: str, sub: str, signal: Signal = Signal.COURT_JUDGMENT) -> Alert:
    return Alert(
        id="0" * 32,
        seq=1,
        signal=signal,
        severity=Severity.HIGH,
        observed_at=date(2026, 11, 30),
        snapshot=2,
        indicator="judgments_band",
        before="",
        after="1",
        subscription_id=sub,
        uscc=uscc,
        node="yrd-court",
        chain="yrd",
        department="court",
        cycle=2,
        cursor="7",
        stored_at="",
    )


def test_verified_means_one_alert_for_the_judged_one_only_and_equal_batches() -> None:
    subs = {"A" * 18: "a" * 32, "B" * 18: "b" * 32}

    def outcome(
        alerts: list[Alert], sizes: list[int], gaps: tuple[str, ...] = ()
    ) -> MonitoringOutcome:
        return MonitoringOutcome("A" * 18, "B" * 18, subs, [], alerts, sizes, list(gaps))

    good = [_alert("A" * 18, "a" * 32)]
    assert outcome(good, [4144] * 12).verified
    assert not outcome([], [4144] * 12).verified
    assert not outcome([*good, _alert("B" * 18, "b" * 32)], [4144] * 12).verified
    assert not outcome([_alert("B" * 18, "b" * 32)], [4144] * 12).verified
    assert not outcome([_alert("A" * 18, "a" * 32, Signal.DISHONEST_DEBTOR)], [4144] * 12).verified
    assert not outcome(good, [4144] * 11 + [4145]).verified
    assert not outcome(good, [4144] * 3).verified
    assert not outcome(
        good, [4144] * 12, ("subscription a on yrd-court: events 1 missing",)
    ).verified


def test_the_printed_monitoring_part_explains_batch_counts_and_band_labels(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`creditshare demo` says where a cycle's batch count comes from, and shows an
    event's before/after as band labels, never as bare numbers."""
    from creditshare.cli._commands import _print_monitoring

    subs = {"A" * 18: "a" * 32, "B" * 18: "b" * 32}
    nodes = [{"node": f"{c}-court", "batches": 2} for c in ("yrd", "prd", "bth")]
    cycle = {"number": 1, "ledger_index": 10, "subscriptions": 2, "nodes": nodes}
    outcome = MonitoringOutcome(
        "A" * 18, "B" * 18, subs, [cycle], [_alert("A" * 18, "a" * 32)], [4144] * 6, []
    )
    _print_monitoring(outcome)
    out = " ".join(capsys.readouterr().out.split())
    assert "cycle 1 (ledger entry 10): 6 sealed batches (2 subscriptions × 3 nodes)" in out
    assert 'judgments_band: (no record) → band "1"' in out
