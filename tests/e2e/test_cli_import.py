"""`creditshare node import` as an operator runs it: each import a snapshot that reports
what it added, changed and removed; all of it or none, errors say where."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from creditshare.crypto import SigningKey
from creditshare.demo._toml import dumps
from creditshare.departments import DEFAULT_MODEL_ID, DEFAULT_WEIGHTS
from creditshare.identity import make_uscc


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "creditshare", *args], capture_output=True, text=True, timeout=120
    )


def _dump(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("SELECT uscc, data FROM enterprise_record").fetchall())


def _config(tmp_path: Path) -> tuple[Path, Path]:
    db = tmp_path / "node.db"
    config = tmp_path / "node.toml"
    config.write_text(
        dumps(
            {
                "node_id": "prd-tax",
                "department": "tax",
                "chain": "prd",
                "database_url": f"sqlite:///{db}",
                "log_public_key": SigningKey.generate().verify_key.to_text(),
                "allow_insecure": True,
                "credential_ca": str(tmp_path / "ca.crt"),
                "models": {DEFAULT_MODEL_ID: {"weights": dict(DEFAULT_WEIGHTS["tax"])}},
            }
        )
    )
    return config, db


def _everything(db: Path) -> tuple[list[tuple[object, ...]], ...]:
    """Current records, previous values, and the snapshot history with its counts."""
    with sqlite3.connect(db) as conn:
        return (
            conn.execute(
                "SELECT uscc, data, batch_id FROM enterprise_record ORDER BY uscc"
            ).fetchall(),
            conn.execute("SELECT * FROM previous_record ORDER BY uscc").fetchall(),
            conn.execute("SELECT * FROM import_batch ORDER BY id").fetchall(),
        )


def test_bad_row_rejects_file_and_leaves_database_unchanged(tmp_path: Path, data_dir: Path) -> None:
    config, db = _config(tmp_path)
    good = tmp_path / "tax.csv"
    shutil.copy(data_dir / "prd" / "tax.csv", good)
    first = _run("node", "import", "--config", str(config), str(good))
    assert first.returncode == 0, first.stderr
    before = _dump(db)
    assert len(before) == len(good.read_text().splitlines()) - 1
    everything = _everything(db)

    lines = good.read_text().splitlines()
    uscc, *_, industry = lines[1].split(",")
    lines[1] = f"{uscc},1234.00,B,2,{industry}"  # a change that must NOT land...
    cells = lines[3].split(",")
    cells[2] = "Q"  # ...because line 4 has an impossible tax grade
    lines[3] = ",".join(cells)
    bad = tmp_path / "tax-bad.csv"
    bad.write_text("\n".join(lines) + "\n")

    second = _run("node", "import", "--config", str(config), str(bad))
    assert second.returncode == 2
    assert f"{bad}, line 4" in second.stderr
    assert "tax_credit_grade" in second.stderr
    assert "Traceback" not in second.stderr
    assert _dump(db) == before
    assert _everything(db) == everything


def test_snapshots_report_counts_and_a_bad_one_leaves_the_last_in_place(
    tmp_path: Path, data_dir: Path
) -> None:
    config, db = _config(tmp_path)
    good = tmp_path / "tax.csv"
    shutil.copy(data_dir / "prd" / "tax.csv", good)
    header, *rows = good.read_text().splitlines()
    n = len(rows)
    first = _run("node", "import", "--config", str(config), str(good))
    assert first.returncode == 0, first.stderr
    assert f"snapshot 1: {n} records from 1 file(s)" in first.stdout
    assert f"{n} added, 0 changed, 0 removed, 0 unchanged" in first.stdout

    # Next month's export: one enterprise's values changed, one gone, one new.
    changed_uscc, removed_uscc = rows[0].split(",")[0], rows[1].split(",")[0]
    new_uscc = str(make_uscc("9", "1", "440300", "MA7NEWC1"))
    update = tmp_path / "tax-2.csv"
    update.write_text(
        "\n".join(
            [header, f"{changed_uscc},1234.00,B,2,trade", *rows[2:], f"{new_uscc},99.00,A,0,"]
        )
        + "\n"
    )
    second = _run("node", "import", "--config", str(config), "--json", str(update))
    assert second.returncode == 0, second.stderr
    counts = json.loads(second.stdout)
    assert counts["snapshot"] == 2 and counts["files"] == [str(update)]
    assert (counts["added"], counts["changed"], counts["removed"], counts["unchanged"]) == (
        1,
        1,
        1,
        n - 2,
    )
    assert counts["rows"] == n
    with sqlite3.connect(db) as conn:
        previous = dict(conn.execute("SELECT uscc, removed FROM previous_record").fetchall())
    assert previous == {changed_uscc: 0, removed_uscc: 1}
    kept = _everything(db)

    # A bad third snapshot (a change, then an impossible grade) changes nothing at all.
    bad = tmp_path / "tax-3.csv"
    cells = rows[3].split(",")
    cells[2] = "Q"
    bad.write_text(
        "\n".join([header, f"{new_uscc},5.00,C,9,trade", ",".join(cells), *rows[4:]]) + "\n"
    )
    third = _run("node", "import", "--config", str(config), str(bad))
    assert third.returncode == 2
    assert f"{bad}, line 3" in third.stderr and "tax_credit_grade" in third.stderr
    assert _everything(db) == kept

    # So does a header-only export, which would empty the node; the error says why.
    empty = tmp_path / "tax-empty.csv"
    empty.write_text(header + "\n")
    refused = _run("node", "import", "--config", str(config), str(empty))
    assert refused.returncode == 2
    assert f"would remove all {n} current records" in refused.stderr
    assert "--allow-empty" in refused.stderr and "Traceback" not in refused.stderr
    assert _everything(db) == kept

    # Re-importing the same files is a snapshot that changes nothing.
    again = _run("node", "import", "--config", str(config), str(update))
    assert again.returncode == 0, again.stderr
    assert f"snapshot 3: {n} records" in again.stdout
    assert f"0 added, 0 changed, 0 removed, {n} unchanged" in again.stdout

    history = _run("node", "imports", "--config", str(config))
    assert history.returncode == 0, history.stderr
    header = next(line for line in history.stdout.splitlines() if "snapshot" in line)
    assert all(h in header for h in ("imported", "records", "added", "removed", "unchanged"))
    listed = json.loads(_run("node", "imports", "--config", str(config), "--json").stdout)
    assert [(s["snapshot"], s["added"], s["changed"], s["removed"]) for s in listed] == [
        (3, 0, 0, 0),  # newest first
        (2, 1, 1, 1),
        (1, n, 0, 0),
    ]
    assert listed[1]["unchanged"] == n - 2 and listed[1]["files"] == [str(update)]

    emptied = _run("node", "import", "--config", str(config), "--allow-empty", str(empty))
    assert emptied.returncode == 0, emptied.stderr
    assert f"0 added, 0 changed, {n} removed, 0 unchanged" in emptied.stdout


def test_read_only_commands_on_a_database_never_migrated_say_what_to_run(
    tmp_path: Path,
) -> None:
    """`node imports`, `access-log`, `refusals` and `privacy-budget` read; on a database
    that was never migrated (or is behind) they name the command that migrates, not an SQL error,
    and they neither migrate it nor create a database where there was none."""
    config, db = _config(tmp_path)
    commands = (["imports"], ["access-log"], ["refusals"], ["privacy-budget"])
    for command in commands:
        result = _run("node", *command, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert f"no node database at {db}" in result.stderr and "Traceback" not in result.stderr
    assert not db.exists()
    sqlite3.connect(db).close()  # an empty file: a database never migrated
    for command in commands:
        result = _run("node", *command, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert "has never been migrated" in result.stderr, result.stderr
        assert "creditshare db upgrade node --config" in result.stderr
        assert "sqlite3" not in result.stderr.lower() and "Traceback" not in result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    upgraded = _run("db", "upgrade", "node", "--config", str(config))
    assert upgraded.returncode == 0, upgraded.stderr
    for command in commands:
        result = _run("node", *command, "--config", str(config))
        assert result.returncode == 0, result.stderr
    assert "no snapshots imported" in _run("node", "imports", "--config", str(config)).stdout
