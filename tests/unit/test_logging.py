"""Service log lines: one JSON object per line, with the request id, never a secret."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from creditshare._logging import (
    configure_logging,
    make_handler,
    request_id_var,
    valid_request_id,
)
from creditshare._settings import load_settings
from creditshare.coordinator import CoordinatorSettings
from creditshare.crypto import SigningKey
from creditshare.errors import ConfigurationError
from creditshare.node import NodeSettings


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines to a buffer (and nowhere else)."""
    out = io.StringIO()
    logger = logging.getLogger("creditshare.test_logging")
    handler = make_handler("json", out)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_request_id_and_extras(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logger
    token = request_id_var.set("req-1")
    try:
        log.info("answered %s", "yrd-tax", extra={"node": "yrd-tax", "duration_ms": 3.5})
    finally:
        request_id_var.reset(token)
    log.warning("outside any request")
    (inside, outside) = _lines(out)
    assert inside == {
        "time": inside["time"],
        "level": "info",
        "logger": "creditshare.test_logging",
        "message": "answered yrd-tax",
        "request_id": "req-1",
        "node": "yrd-tax",
        "duration_ms": 3.5,
    }
    assert isinstance(inside["time"], str) and inside["time"].endswith("Z")
    assert datetime.fromisoformat(inside["time"].replace("Z", "+00:00")).tzinfo is not None
    assert outside["level"] == "warning" and "request_id" not in outside


def test_a_traceback_stays_inside_its_one_line(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logger
    try:
        raise ValueError("boom\non two lines")
    except ValueError:
        log.exception("failed")
    assert len(out.getvalue().splitlines()) == 1
    (line,) = _lines(out)
    assert line["message"] == "failed"
    assert "ValueError: boom" in str(line["exception"])


def test_extras_named_like_secrets_are_redacted(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logger
    secrets = {
        "api_key": "cs_abc.def",
        "authorization": "Bearer cs_abc.def",
        "consent_signature": "c2lnbmF0dXJl",
        "private_key": "-----BEGIN PRIVATE KEY-----",
        "ciphertext": "1234567890",
    }
    log.info("with secrets", extra=secrets)
    (line,) = _lines(out)
    assert {name: line[name] for name in secrets} == dict.fromkeys(secrets, "[redacted]")
    for value in secrets.values():
        assert value not in out.getvalue()


def test_text_lines_name_the_request() -> None:
    out = io.StringIO()
    log = logging.getLogger("creditshare.test_logging.text")
    handler = make_handler("text", out)
    log.addHandler(handler)
    log.propagate = False
    try:
        token = request_id_var.set("req-2")
        try:
            log.warning("inside")
        finally:
            request_id_var.reset(token)
        log.warning("outside")
    finally:
        log.removeHandler(handler)
    inside, outside = out.getvalue().splitlines()
    assert "[req-2] inside" in inside
    assert "[-] outside" in outside


def test_configure_logging_sends_every_logger_through_one_json_handler() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    try:
        configure_logging("json", "info", stream=out)
        logging.getLogger("uvicorn.error").info("Started server process")
        logging.getLogger("creditshare.node").debug("below the level")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.captureWarnings(False)
    (line,) = _lines(out)
    assert line["logger"] == "uvicorn.error" and line["message"] == "Started server process"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("3f2a9c1e5b7d4e0f8a6b2c4d6e8f0a1b", True),
        ("req-1", True),
        ("lb.trace:0a1b_2c", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("-leading-dash", False),
        ("has space", False),
        ("line\nbreak", False),
        ('quote"', False),
        ("汉字", False),
        (None, False),
    ],
)
def test_request_ids_are_short_and_made_of_safe_characters(value: str | None, valid: bool) -> None:
    assert valid_request_id(value) == (value if valid else None)


def test_operations_settings_default_and_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CREDITSHARE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(
        "CREDITSHARE_NODE_LOG_PUBLIC_KEY", SigningKey.generate().verify_key.to_text()
    )
    monkeypatch.setenv("CREDITSHARE_NODE_ALLOW_INSECURE", "true")
    monkeypatch.setenv("CREDITSHARE_NODE_CREDENTIAL_CA", "/nonexistent/ca.crt")
    monkeypatch.setenv("CREDITSHARE_NODE_NODE_ID", "yrd-tax")
    monkeypatch.setenv("CREDITSHARE_NODE_DEPARTMENT", "tax")
    monkeypatch.setenv("CREDITSHARE_NODE_CHAIN", "yrd")
    monkeypatch.setenv("CREDITSHARE_COORDINATOR_LOG_SIGNING_KEY_FILE", str(tmp_path / "log.pem"))
    monkeypatch.setenv("CREDITSHARE_COORDINATOR_ALLOW_INSECURE", "true")
    node, coordinator = load_settings(NodeSettings), load_settings(CoordinatorSettings)
    assert (node.log_format, node.log_level, node.shutdown_grace_seconds) == ("json", "info", 20)
    assert (coordinator.log_format, coordinator.log_level) == ("json", "info")
    assert coordinator.shutdown_grace_seconds == 20
    assert coordinator.metrics_require_operator_key is False

    monkeypatch.setenv("CREDITSHARE_NODE_LOG_FORMAT", "text")
    monkeypatch.setenv("CREDITSHARE_NODE_LOG_LEVEL", "debug")
    monkeypatch.setenv("CREDITSHARE_NODE_SHUTDOWN_GRACE_SECONDS", "7.5")
    monkeypatch.setenv("CREDITSHARE_COORDINATOR_METRICS_REQUIRE_OPERATOR_KEY", "true")
    node, coordinator = load_settings(NodeSettings), load_settings(CoordinatorSettings)
    assert (node.log_format, node.log_level, node.shutdown_grace_seconds) == ("text", "debug", 7.5)
    assert coordinator.metrics_require_operator_key is True

    monkeypatch.setenv("CREDITSHARE_COORDINATOR_LOG_FORMAT", "xml")
    with pytest.raises(ConfigurationError, match="log_format"):
        load_settings(CoordinatorSettings)
