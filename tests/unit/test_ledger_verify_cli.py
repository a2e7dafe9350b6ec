"""``creditshare ledger verify`` on a log larger than one page: it streams, reports
progress on stderr, and still names a tampered entry and a tampered interior node."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from creditshare._settings import load_settings
from creditshare.cli import app
from creditshare.coordinator import CoordinatorSettings
from creditshare.coordinator._admin import init_log_key
from creditshare.coordinator._services import load_log_signer
from creditshare.ledger import Ledger, SqlLedgerStorage

from .._databases import migrated_engine

SIZE = 1_232  # more than one page of 1,000; 8 threads x 154 (batched appends)


def test_ledger_verify_streams_reports_progress_and_names_tampering(tmp_path: Path) -> None:
    key_file = tmp_path / "log-signing-key.pem"
    init_log_key(key_file)
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    engine = migrated_engine(url)
    config = tmp_path / "coordinator.toml"
    config.write_text(f'database_url = "{url}"\nlog_signing_key_file = "{key_file}"\n')
    signer = load_log_signer(load_settings(CoordinatorSettings, config))
    ledger = Ledger(SqlLedgerStorage(engine), signer, lambda: datetime(2026, 11, 30, tzinfo=UTC))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: ledger.append(b"entry %d" % i, "s"), range(SIZE)))
    runner = CliRunner()
    verify = ["ledger", "verify", "--config", str(config)]

    clean = runner.invoke(app, verify)
    assert clean.exit_code == 0, clean.output
    assert f"checked {SIZE:,} of {SIZE:,} entries (100.0%" in clean.stderr
    heads = len(ledger.storage.heads())
    assert f"checked {SIZE} entries and {heads} tree heads" in clean.stdout

    with engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_node SET hash = :h WHERE level = 3 AND idx = 7"), {"h": bytes(32)}
        )
    node = runner.invoke(app, verify)
    assert node.exit_code == 1
    assert "interior node at level 3, index 7 (leaves 56..63) does not match" in node.stderr

    with engine.begin() as conn:
        conn.execute(text("UPDATE ledger_leaf SET data = :d WHERE idx = 1100"), {"d": b"forged"})
    leaf = runner.invoke(app, verify)
    assert leaf.exit_code == 1
    assert "leaf 1100: stored hash does not match the stored data" in leaf.stderr

    with engine.begin() as conn:  # SQLite keeps text in a BLOB column if a writer puts it there
        conn.execute(text("UPDATE ledger_leaf SET data = :d WHERE idx = 1101"), {"d": "forged"})
    typed = runner.invoke(app, verify)
    assert typed.exit_code == 1, typed.output
    assert "PROBLEM: leaf 1101: the stored data is str, not bytes" in typed.stderr
    engine.dispose()
