"""verify_webhook: a bank's receiver accepts only calls signed with its secret, recently."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest

from creditshare.client import verify_webhook
from creditshare.client._webhooks import sign_webhook
from creditshare.errors import ClientError, WebhookSignatureError

NOW = 1_790_000_000
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
BODY = json.dumps(
    {"type": "alerts.batch", "timestamp": "2026-09-21T12:53:20Z", "data": {"alerts": []}}
).encode()


def _headers(
    body: bytes = BODY, secret: str = SECRET, stamp: int = NOW, wid: str = "msg_1"
) -> dict[str, str]:
    return {
        "webhook-id": wid,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_webhook(secret, wid, stamp, body),
    }


def test_a_valid_call_verifies_and_returns_the_payload() -> None:
    payload = verify_webhook(SECRET, _headers(), BODY, now=NOW)
    assert payload["type"] == "alerts.batch"
    # Header names in any case; the body as text; a timestamp within the tolerance.
    upper = {k.title(): v for k, v in _headers(stamp=NOW - 299).items()}
    assert verify_webhook(SECRET, upper, BODY.decode(), now=NOW) == payload


def test_the_signature_is_standard_webhooks_v1() -> None:
    """Standard Webhooks' own test vector."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        sign_webhook(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_a_tampered_body_is_refused() -> None:
    tampered = BODY.replace(b"[]", b'[{"cursor": "1"}]')
    with pytest.raises(WebhookSignatureError, match="none of the 1 signature"):
        verify_webhook(SECRET, _headers(), tampered, now=NOW)


def test_another_secret_is_refused() -> None:
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(WebhookSignatureError, match="matches the body under this secret"):
        verify_webhook(other, _headers(), BODY, now=NOW)


def test_a_changed_id_or_timestamp_is_refused() -> None:
    headers = _headers() | {"webhook-id": "msg_2"}
    with pytest.raises(WebhookSignatureError, match="none of the"):
        verify_webhook(SECRET, headers, BODY, now=NOW)
    headers = _headers() | {"webhook-timestamp": str(NOW + 1)}
    with pytest.raises(WebhookSignatureError, match="none of the"):
        verify_webhook(SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("offset", [301, -301, 86_400])
def test_a_timestamp_beyond_the_tolerance_is_refused(offset: int) -> None:
    headers = _headers(stamp=NOW - offset)
    with pytest.raises(WebhookSignatureError, match="beyond the tolerance of 300 s"):
        verify_webhook(SECRET, headers, BODY, now=NOW)


def test_one_matching_signature_among_several_is_enough() -> None:
    """While a secret rotates the header carries several, space-separated."""
    old = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    good = _headers()["webhook-signature"]
    stale = _headers(secret=old)["webhook-signature"]
    headers = _headers() | {"webhook-signature": f"v1a,xyz {stale} {good}"}
    assert verify_webhook(SECRET, headers, BODY, now=NOW)["type"] == "alerts.batch"
    headers = _headers() | {"webhook-signature": f"{stale} v2,{good[3:]}"}
    with pytest.raises(WebhookSignatureError, match="none of the 2 signature"):
        verify_webhook(SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"webhook-id": ""}, "no webhook-id header"),
        ({"webhook-signature": ""}, "no webhook-signature header"),
        ({"webhook-timestamp": "yesterday"}, "not a unix time"),
    ],
)
def test_missing_or_malformed_headers_are_refused(change: dict[str, str], message: str) -> None:
    with pytest.raises(WebhookSignatureError, match=message):
        verify_webhook(SECRET, _headers() | change, BODY, now=NOW)


def test_a_malformed_secret_or_body_is_a_client_error() -> None:
    with pytest.raises(ClientError, match="not 'whsec_' followed by base64"):
        verify_webhook("whsec_???", _headers(), BODY, now=NOW)
    body: Any = b"[1, 2]"
    with pytest.raises(WebhookSignatureError, match="not a JSON object"):
        verify_webhook(SECRET, _headers(body), body, now=NOW)
