"""`creditshare node import` as an operator runs it: all rows or none, errors say where."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from creditshare.crypto import SigningKey
from creditshare.demo._toml import dumps
from creditshare.departments import DEFAULT_MODEL_ID, DEFAULT_WEIGHTS


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "creditshare", *args], capture_output=True, text=True, timeout=120
    )


def _dump(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("SELECT uscc, data FROM enterprise_record").fetchall())


def test_bad_row_rejects_file_and_leaves_database_unchanged(tmp_path: Path, data_dir: Path) -> None:
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
    good = tmp_path / "tax.csv"
    shutil.copy(data_dir / "prd" / "tax.csv", good)
    first = _run("node", "import", "--config", str(config), str(good))
    assert first.returncode == 0, first.stderr
    before = _dump(db)
    assert len(before) == len(good.read_text().splitlines()) - 1

    lines = good.read_text().splitlines()
    uscc = lines[1].split(",")[0]
    lines[1] = f"{uscc},1234.00,B,2"  # a change that must NOT land...
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
