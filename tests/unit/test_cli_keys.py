"""`creditshare coordinator init-key` and `public-key`: what nodes pin is what signs."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from creditshare.cli import app
from creditshare.crypto import SigningKey, VerifyKey


def test_public_key_prints_the_key_nodes_pin(tmp_path: Path) -> None:
    runner = CliRunner()
    key_file = tmp_path / "log.pem"
    made = runner.invoke(app, ["coordinator", "init-key", "--out", str(key_file)])
    assert made.exit_code == 0, made.output
    shown = runner.invoke(app, ["coordinator", "public-key", "--key-file", str(key_file)])
    assert shown.exit_code == 0, shown.output
    public = VerifyKey.from_text(shown.output.strip())
    signer = SigningKey.from_pem(key_file.read_bytes())
    assert public.to_text() == signer.verify_key.to_text()
    assert "PRIVATE" not in shown.output


def test_public_key_names_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    result = CliRunner().invoke(app, ["coordinator", "public-key", "--key-file", str(missing)])
    assert result.exit_code != 0
    assert "nope.pem" in result.output


def test_node_witness_key_is_made_0600_and_prints_its_vkey(tmp_path: Path) -> None:
    from creditshare.ledger import WitnessKey

    runner = CliRunner()
    key_file = tmp_path / "node" / "witness-key.pem"
    args = ["node", "witness-key", "--out", str(key_file), "--node-id", "yrd-tax"]
    made = runner.invoke(app, args)
    assert made.exit_code == 0, made.output
    assert key_file.stat().st_mode & 0o777 == 0o600
    vkey = WitnessKey.parse(made.output.strip().splitlines()[-1])
    signer = SigningKey.from_pem(key_file.read_bytes())
    assert vkey == WitnessKey("yrd-tax", signer.verify_key.raw)
    assert "PRIVATE" not in made.output
    # Run again: the key is kept (never overwritten) and the same vkey printed.
    before = key_file.read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert key_file.read_bytes() == before
    assert WitnessKey.parse(again.output.strip().splitlines()[-1]) == vkey
