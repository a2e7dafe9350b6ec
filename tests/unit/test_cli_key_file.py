"""A requester's command that finds no Paillier key at its --key-file says it made one."""

from __future__ import annotations

from pathlib import Path

import pytest

from creditshare._settings import load_settings
from creditshare.cli._common import paillier_key
from creditshare.console import ConsoleSettings
from creditshare.errors import ConfigurationError


def test_a_new_key_is_announced_and_an_existing_one_is_read_quietly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.json"
    made = paillier_key(path)
    assert path.is_file()
    assert f"no Paillier key at {path}: made a new 2048-bit key there" in capsys.readouterr().err
    again = paillier_key(path)
    assert again.public_key.fingerprint() == made.public_key.fingerprint()
    assert capsys.readouterr().err == ""


def test_a_validator_message_reads_without_pydantics_prefix(tmp_path: Path) -> None:
    config = tmp_path / "console.toml"
    config.write_text('role = "bank"\n')
    with pytest.raises(ConfigurationError) as refused:
        load_settings(ConsoleSettings, config)
    assert "Value error" not in str(refused.value)
    assert "a bank console needs coordinator_url, api_key, identity, key_file" in str(refused.value)
