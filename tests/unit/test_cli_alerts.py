"""`creditshare alerts ...` against the fake coordinator of test_client_alerts."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import creditshare.client
from creditshare.cli import app
from creditshare.client import load_key, load_or_create_alert_key
from creditshare.crypto import AlertPrivateKey
from creditshare.monitoring import Signal
from tests.unit.test_client_alerts import SUB_A, SUB_B, USCC, FakeCoordinator, _event

runner = CliRunner()


@pytest.fixture
def coordinator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCoordinator:
    """A fake coordinator sealing to the alert key in the bank's key file."""
    key_file = tmp_path / "alert-key.txt"
    fake = FakeCoordinator(load_or_create_alert_key(key_file))
    monkeypatch.setenv("CREDITSHARE_ALERT_KEY_FILE", str(key_file))
    monkeypatch.setenv("CREDITSHARE_API_KEY", "cs_test")
    patched = functools.partial(
        creditshare.client.CreditShareClient, transport=httpx.MockTransport(fake.handler)
    )
    monkeypatch.setattr(creditshare.client, "CreditShareClient", patched)
    return fake


def _run(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout, stderr (rich's error box and line wrapping taken out)."""
    out = runner.invoke(app, [*args, "--coordinator", "http://coordinator.test"])
    return out.exit_code, out.stdout, " ".join(re.sub("[│╭╮╰╯─]", " ", out.stderr).split())


def test_alerts_list_prints_the_opened_alerts_and_resumes_with_an_inbox(
    coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    one = _event(SUB_A, 1, 5)
    coordinator.add(SUB_A, 1, (one,))
    coordinator.add(SUB_B, 1)
    inbox = tmp_path / "inbox.json"
    code, out, err = _run("alerts", "list", "--json", "--inbox", str(inbox))
    assert code == 0, err
    doc = json.loads(out)
    assert [a["id"] for a in doc["alerts"]] == [one.id]
    assert doc["alerts"][0]["uscc"] == USCC[SUB_A] and doc["cursor"] == "2"
    coordinator.add(SUB_A, 2, (one, _event(SUB_A, 3, 6, Signal.DISHONEST_DEBTOR)))
    code, out, err = _run("alerts", "list", "--inbox", str(inbox))
    assert code == 0, err
    assert "1 alert(s); resume with --since 3" in out  # `one` was shown before
    assert "events 2 missing (never delivered)" in err
    assert json.loads(inbox.read_text())["cursor"] == "3"


def test_alerts_list_since_a_cursor_or_a_time(coordinator: FakeCoordinator) -> None:
    first, second = _event(SUB_A, 1, 5), _event(SUB_A, 2, 6)
    coordinator.add(SUB_A, 1, (first,))  # stored 12:00
    coordinator.add(SUB_A, 2, (second,))  # stored 12:01
    code, out, _ = _run("alerts", "list", "--json", "--since", "1")
    assert [a["id"] for a in json.loads(out)["alerts"]] == [second.id]
    code, out, _ = _run("alerts", "list", "--json", "--since", "2026-11-30T12:00:30Z")
    assert [a["id"] for a in json.loads(out)["alerts"]] == [second.id]
    code, _, err = _run("alerts", "list", "--since", "yesterday")
    assert code == 2 and "neither a cursor" in err


def test_a_batch_that_does_not_open_fails_the_command_naming_the_cursor(
    coordinator: FakeCoordinator,
) -> None:
    coordinator.key = AlertPrivateKey.generate()  # sealed to another key than the bank's
    coordinator.add(SUB_A, 1)
    out = runner.invoke(
        app, ["alerts", "list", "--coordinator", "http://coordinator.test"], catch_exceptions=True
    )
    assert out.exit_code != 0
    assert "alert at cursor 1" in str(out.exception)


def test_the_alert_key_follows_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --alert-key-file, the alert key is the alert-key.txt beside --key-file (as
    its help says), not the one in the default config folder."""
    keys = tmp_path / "keys"
    fake = FakeCoordinator(load_or_create_alert_key(keys / "alert-key.txt"))
    monkeypatch.delenv("CREDITSHARE_ALERT_KEY_FILE", raising=False)
    monkeypatch.delenv("CREDITSHARE_KEY_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CREDITSHARE_API_KEY", "cs_test")
    patched = functools.partial(
        creditshare.client.CreditShareClient, transport=httpx.MockTransport(fake.handler)
    )
    monkeypatch.setattr(creditshare.client, "CreditShareClient", patched)
    one = _event(SUB_A, 1, 5)
    fake.add(SUB_A, 1, (one,))
    key_file = str(keys / "paillier-key.json")
    code, out, err = _run("alerts", "list", "--json", "--key-file", key_file)
    assert code == 0, err
    assert [a["id"] for a in json.loads(out)["alerts"]] == [one.id]
    assert not (tmp_path / "config").exists()


def test_subscribe_parses_signals_and_thresholds(
    coordinator: FakeCoordinator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from creditshare.client import Identity

    monkeypatch.setattr(Identity, "load", classmethod(lambda cls, folder: _identity()))
    code, out, err = _run(
        "alerts",
        "subscribe",
        USCC[SUB_A],
        "--identity",
        str(tmp_path),
        "--consent",
        "cd" * 16,
        "--signal",
        "court_judgment=2",
        "--signal",
        "dishonest_debtor",
        "--chain",
        "yrd",
    )
    assert code == 0, err
    (body,) = coordinator.posted
    assert body["signals"] == [
        {"type": "court_judgment", "threshold": 2},
        {"type": "dishonest_debtor", "threshold": None},
    ]
    assert body["chains"] == ["yrd"] and body["subscription_id"] in out
    code, _, err = _run(
        "alerts",
        "subscribe",
        USCC[SUB_A],
        "--identity",
        str(tmp_path),
        "--consent",
        "cd" * 16,
        "--signal",
        "court_judgment=two",
    )
    assert code == 2 and "the threshold after '=' is a number" in err


def _identity() -> creditshare.client.Identity:
    from creditshare.crypto import SigningKey

    return creditshare.client.Identity("demo-bank", SigningKey.generate(), (b"unused",))


def test_the_readme_monitoring_commands_exist_in_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `creditshare` command in the README's "Post-loan monitoring" section parses
    (with the API key and identity exported, as the section does)."""
    from tests.unit.test_deploy_files import (
        ROOT,
        cli_problem,
        creditshare_invocations,
        shell_commands,
    )

    monkeypatch.setenv("CREDITSHARE_API_KEY", "cs_test")
    monkeypatch.setenv("CREDITSHARE_IDENTITY", "identity")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Post-loan monitoring\n", 1)[1].split("\n## ", 1)[0]
    problems, checked = [], 0
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        # A placeholder such as `<consent id>` stands for one value (not a redirection).
        block = re.sub(r"<[a-z][a-z ]*>", "PLACEHOLDER", block)
        for words in shell_commands(block):
            args = creditshare_invocations(words)
            if args is None:
                continue
            checked += 1
            problem = cli_problem(args, "README.md (Post-loan monitoring)")
            if problem:
                problems.append(problem)
    assert problems == []
    assert checked >= 10


def test_monitoring_cycle_prints_each_nodes_part(coordinator: FakeCoordinator) -> None:
    code, out, err = _run("monitoring", "cycle")
    assert code == 0, err
    assert "cycle 7 (ledger entry 41): 2 subscription(s)" in out
    assert "yrd-court: 2 batches, 0 unknown, 0 ended" in out
    assert "prd-court: unavailable" in out
    code, out, err = _run("monitoring", "cycle", "--json")
    assert json.loads(out)["number"] == 7


def test_alerts_watch_prints_each_alert_as_it_comes_and_keeps_the_inbox(
    coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    from tests.unit.test_client_alerts import _sse

    one = _event(SUB_A, 1, 5)
    row = coordinator.add(SUB_A, 1, (one,))
    # One alert, the connection ends; reconnecting, the cursor is refused: watch stops.
    coordinator.streams = [_sse(row), 404]
    inbox = tmp_path / "inbox.json"
    args = ["alerts", "watch", "--json", "--inbox", str(inbox)]
    out = runner.invoke(app, [*args, "--coordinator", "http://coordinator.test"])
    assert "cursor 99 does not exist" in str(out.exception)
    (line,) = out.stdout.splitlines()
    assert json.loads(line)["id"] == one.id
    saved = json.loads(inbox.read_text())
    assert saved["cursor"] == "1" and saved["seen"] == [one.id]
    streams = [r for r in coordinator.requests if r.url.path == "/v1/alerts/stream"]
    assert streams[1].headers["last-event-id"] == "1"


def test_score_change_subscribe_and_list_use_the_banks_paillier_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--signal score_change=N [--model ID] signs the model and the bank's Paillier key
    (made on first use); list decrypts score rows with it; a bank without one is told
    which row it could not read."""
    from tests.unit.test_client_scores import ScoringCoordinator

    alert_file, key_file = tmp_path / "alert-key.txt", tmp_path / "paillier-key.json"
    fake = ScoringCoordinator(load_or_create_alert_key(alert_file))
    monkeypatch.setenv("CREDITSHARE_ALERT_KEY_FILE", str(alert_file))
    monkeypatch.setenv("CREDITSHARE_API_KEY", "cs_test")
    monkeypatch.setenv("CREDITSHARE_KEY_FILE", str(key_file))
    patched = functools.partial(
        creditshare.client.CreditShareClient, transport=httpx.MockTransport(fake.handler)
    )
    monkeypatch.setattr(creditshare.client, "CreditShareClient", patched)
    monkeypatch.setattr(
        creditshare.client.Identity, "load", classmethod(lambda cls, folder: _identity())
    )
    code, _, err = _run(
        "alerts", "subscribe", USCC[SUB_A], "--consent", "cd" * 16, "--identity",
        str(tmp_path), "--signal", "score_change=30", "--signal", "court_judgment",
        "--model", "other-v2",
    )  # fmt: skip
    assert code == 0, err
    (body,) = fake.posted
    key = load_key(key_file)
    assert (body["model_id"], body["key_fingerprint"]) == ("other-v2", key.public_key.fingerprint())
    assert {"type": "score_change", "threshold": 30} in body["signals"]
    fake.score(key, SUB_A, 1, 600)
    fake.score(key, SUB_A, 2, 640)
    code, out, err = _run("alerts", "list", "--json")
    assert code == 0, err
    (alert,) = json.loads(out)["alerts"]
    assert (alert["type"], alert["before"], alert["after"]) == ("score_change", "600", "640")
    code, out, err = _run("alerts", "list")
    assert code == 0 and "1 alert(s); resume with --since 2" in out, err
    key_file.unlink()
    failed = runner.invoke(app, ["alerts", "list", "--coordinator", "http://coordinator.test"])
    assert failed.exit_code != 0
    assert "alert at cursor 1" in str(failed.exception) and "Paillier key" in str(failed.exception)
