"""``creditshare pki init|request|sign|revoke|crl`` through the real CLI (typer's CliRunner).

The point of the flow: each party's keys are made by ``pki request`` in its own
folder, and nothing the CA runs (``sign``, ``revoke``, ``crl``) ever writes a
private key.
"""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from creditshare.cli import app
from creditshare.crypto import SigningKey
from creditshare.errors import InvalidInputError
from creditshare.pki import RevocationList, parse_credential

USCC = "91350100M000100Y43"


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _keys(root: Path) -> set[Path]:
    """Every file under ``root`` that holds a private key."""
    return {p for p in root.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()}


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    _run("pki", "init", "--chain", "yrd", "--out", str(tmp_path / "ca"))
    return tmp_path / "ca"


def test_the_whole_flow_and_no_key_made_at_the_ca(tmp_path: Path, ca: Path) -> None:
    party = tmp_path / "ent"
    out = _run(
        "pki", "request", "--id", "ent-1", "--role", "enterprise", "--uscc", USCC,
        "--out", str(party),
    )  # fmt: skip
    assert "signing.csr" in out
    key = party / "signing.key"
    assert _mode(key) == 0o600 and _mode(party) == 0o700
    signing_key = SigningKey.from_pem(key.read_bytes())

    before = _keys(tmp_path)
    assert before == {ca / "ca.key", key}
    cert = tmp_path / "back" / "credential.crt"
    out = _run("pki", "sign", "--ca-dir", str(ca), "--csr", str(party / "signing.csr"),
               "--out", str(cert))  # fmt: skip
    credential = parse_credential(cert.read_bytes())
    assert credential.verify_key == signing_key.verify_key
    assert "credential for 'ent-1', role enterprise" in out
    assert f"{credential.serial:x}" in out
    assert credential.not_after.isoformat() in out
    assert (tmp_path / "back" / "ca.crt").read_bytes() == (ca / "ca.crt").read_bytes()

    out = _run("pki", "revoke", "--ca-dir", str(ca), "--serial", f"{credential.serial:x}",
               "--reason", "key_compromise")  # fmt: skip
    assert "revoked" in out
    crl_path = tmp_path / "crl.pem"
    out = _run("pki", "crl", "--ca-dir", str(ca), "--out", str(crl_path), "--valid-hours", "48")
    assert "revocation list 1: 1 revoked" in out
    crl = RevocationList.parse(crl_path.read_bytes())
    assert crl.revoked_serials == {credential.serial}
    assert crl.next_update - crl.this_update == timedelta(hours=48)
    assert _keys(tmp_path) == before  # sign, revoke and crl wrote no private key anywhere


def test_node_request_writes_both_key_pairs_0600(tmp_path: Path, ca: Path) -> None:
    node = tmp_path / "node"
    _run("pki", "request", "--id", "yrd-tax", "--role", "node", "--host", "yrd-tax",
         "--host", "10.0.0.7", "--out", str(node))  # fmt: skip
    assert _mode(node / "signing.key") == 0o600 and _mode(node / "tls.key") == 0o600
    out = _run("pki", "sign", "--ca-dir", str(ca), "--csr", str(node / "tls.csr"),
               "--out", str(node / "tls.crt"))  # fmt: skip
    assert "TLS certificate for 'yrd-tax', role node" in out
    assert "yrd-tax, 10.0.0.7" in out
    _run("pki", "revoke", "--ca-dir", str(ca), "--cert", str(node / "tls.crt"))


def test_request_refuses_to_overwrite(tmp_path: Path) -> None:
    _run("pki", "request", "--id", "bank-a", "--role", "bank", "--out", str(tmp_path / "k"))
    before = (tmp_path / "k" / "signing.key").read_bytes()
    result = CliRunner().invoke(
        app, ["pki", "request", "--id", "bank-a", "--role", "bank", "--out", str(tmp_path / "k")]
    )
    assert result.exit_code != 0
    assert (tmp_path / "k" / "signing.key").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["pki", "request", "--id", "ent-1", "--role", "enterprise"], "USCC"),
        (["pki", "request", "--id", "x", "--role", "admin"], "role must be one of"),
        (["pki", "revoke", "--serial", "xyz"], "not a hex number"),
        (["pki", "revoke", "--serial", "abc"], "never issued serial abc"),
    ],
)
def test_refusals_say_why(tmp_path: Path, ca: Path, args: list[str], match: str) -> None:
    if args[1] == "request":
        args = [*args, "--out", str(tmp_path / "out")]
    else:
        args = [*args, "--ca-dir", str(ca)]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, InvalidInputError)
    assert match in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_issue_is_gone_and_no_command_takes_a_role_at_the_ca() -> None:
    """The CA-side commands take a CSR, never a role or a name to make a key for."""
    result = CliRunner().invoke(app, ["pki", "issue", "--help"])
    assert result.exit_code != 0
    for command in ("sign", "revoke", "crl"):
        help_text = _run("pki", command, "--help")
        assert "--role" not in help_text and "--id" not in help_text and "--host" not in help_text
