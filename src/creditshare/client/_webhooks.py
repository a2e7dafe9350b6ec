"""Checking a webhook call from the coordinator (Standard Webhooks, v1 signatures).

The coordinator signs ``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256
under the secret it showed the bank once (``whsec_`` + base64). A receiver checks the
signature in constant time against every ``v1,`` signature in the header (there may be
several while a secret is being rotated) and refuses a timestamp more than the
tolerance away from its clock, so a captured call cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from creditshare.errors import WebhookSignatureError

__all__ = ["WEBHOOK_TOLERANCE_SECONDS", "sign_webhook", "verify_webhook"]

#: How far a webhook's timestamp may be from the receiver's clock, either way.
WEBHOOK_TOLERANCE_SECONDS = 300


def _secret_bytes(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSignatureError(
            "the webhook secret is not 'whsec_' followed by base64 (as PUT /v1/webhook showed it)"
        ) from None


def sign_webhook(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for a call (what the coordinator sends)."""
    message = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: int = WEBHOOK_TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """The JSON payload of a webhook call whose signature verifies under ``secret``.

    ``headers`` as received (names in any case); ``body`` exactly as received, before
    any JSON parsing (a re-serialised body would not verify). Raises
    ``WebhookSignatureError`` saying what was wrong, never which signature was expected.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [
        h for h in ("webhook-id", "webhook-timestamp", "webhook-signature") if not lowered.get(h)
    ]
    if missing:
        raise WebhookSignatureError(f"the webhook call has no {', '.join(missing)} header")
    raw = body.encode("utf-8") if isinstance(body, str) else body
    stamp = lowered["webhook-timestamp"].strip()
    if not stamp.isdigit():
        raise WebhookSignatureError("webhook-timestamp is not a unix time in seconds")
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > tolerance:
        raise WebhookSignatureError(
            f"webhook-timestamp is {int(now) - int(stamp)} s from this clock, beyond the "
            f"tolerance of {tolerance} s (a replayed or delayed call)"
        )
    expected = sign_webhook(secret, lowered["webhook-id"], int(stamp), raw).encode("ascii")
    offered = lowered["webhook-signature"].split()
    matched = False
    for candidate in offered:
        # Compare every candidate (no early exit): the time taken says nothing.
        matched |= hmac.compare_digest(candidate.encode("ascii", "replace"), expected)
    if not matched:
        raise WebhookSignatureError(
            f"none of the {len(offered)} signature(s) in webhook-signature matches the body "
            "under this secret"
        )
    try:
        payload = json.loads(raw)
    except ValueError:
        raise WebhookSignatureError("the signed webhook body is not JSON") from None
    if not isinstance(payload, dict):
        raise WebhookSignatureError("the signed webhook body is not a JSON object")
    return payload
