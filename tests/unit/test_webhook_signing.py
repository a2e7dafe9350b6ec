"""Standard Webhooks signing, webhook URLs, and the retry schedule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from creditshare.coordinator.monitoring._webhooks import (
    WebhookDispatcher,
    WebhookStore,
    check_url,
    new_secret,
    signature,
)
from creditshare.errors import InvalidInputError


def test_signature_matches_the_standard_webhooks_example() -> None:
    """The example of the Standard Webhooks specification (and its reference libraries)."""
    assert (
        signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_signature_covers_id_timestamp_and_body() -> None:
    secret = new_secret()
    base = signature(secret, "msg_1", 100, b"{}")
    assert signature(secret, "msg_2", 100, b"{}") != base
    assert signature(secret, "msg_1", 101, b"{}") != base
    assert signature(secret, "msg_1", 100, b"{ }") != base
    assert signature(new_secret(), "msg_1", 100, b"{}") != base


def test_secrets_are_fresh_32_byte_keys() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(s.startswith("whsec_") and len(s) == 6 + 44 for s in secrets)


@pytest.mark.parametrize(
    "url", ["https://bank.example/hooks", "http://10.0.0.5:8080/a?b=c", "https://[::1]:9/x"]
)
def test_plain_http_urls_are_accepted(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://bank.example/", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("//bank.example/", "http:// or https://"),
        ("https://a:b@bank.example/", "credentials"),
        ("https://a@bank.example/", "credentials"),
        ("https://bank.example/#x", "fragment"),
        ("https://[::1/", "malformed"),
        ("https://" + "a" * 2000 + ".example/", "over 2000"),
    ],
)
def test_other_urls_are_refused_saying_why(url: str, words: str) -> None:
    with pytest.raises(InvalidInputError, match="webhook url") as caught:
        check_url(url)
    assert words in str(caught.value)


def test_backoff_doubles_up_to_the_cap() -> None:
    dispatcher = WebhookDispatcher(
        WebhookStore.__new__(WebhookStore),
        lambda: datetime.now(UTC),
        max_attempts=12,
        initial_backoff=5,
        max_backoff=60,
        timeout=10,
    )
    assert [dispatcher.backoff(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
