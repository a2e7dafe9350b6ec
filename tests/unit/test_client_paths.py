"""Every id the SDK puts in a URL path stays inside its one segment.

The console hands form text straight to these calls: an id such as
``bank-1/disable?x=`` must name no participant at all, never reach
``POST /v1/participants/bank-1/disable``. A fake coordinator (httpx.MockTransport)
records the raw request line of each call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from creditshare.client import CreditShareClient

HOSTILE = "bank-1/disable?x=#y%2F"
ESCAPED = "bank-1%2Fdisable%3Fx%3D%23y%252F"


def _calls() -> list[tuple[str, Callable[[CreditShareClient], Any], str]]:
    return [
        (
            "issue_credential",
            lambda c: c.issue_credential(HOSTILE),
            "/v1/participants/{}/credentials",
        ),
        (
            "revoke_credential",
            lambda c: c.revoke_credential(HOSTILE, HOSTILE),
            "/v1/participants/{}/credentials/{}/revoke",
        ),
        (
            "disable_participant",
            lambda c: c.disable_participant(HOSTILE),
            "/v1/participants/{}/disable",
        ),
        (
            "enable_participant",
            lambda c: c.enable_participant(HOSTILE),
            "/v1/participants/{}/enable",
        ),
        (
            "retire_paillier_key",
            lambda c: c.retire_paillier_key(HOSTILE),
            "/v1/paillier-keys/{}/retire",
        ),
        ("consent", lambda c: c.consent(HOSTILE), "/v1/consents/{}"),
        ("revoke_consent", lambda c: c.revoke_consent(HOSTILE), "/v1/consents/{}/revoke"),
        ("training_job", lambda c: c.training_job(HOSTILE), "/v1/training-jobs/{}"),
        (
            "cancel_training_job",
            lambda c: c.cancel_training_job(HOSTILE),
            "/v1/training-jobs/{}/cancel",
        ),
        ("subscription", lambda c: c.subscription(HOSTILE), "/v1/subscriptions/{}"),
        ("unsubscribe", lambda c: c.unsubscribe(HOSTILE), "/v1/subscriptions/{}"),
    ]


@pytest.mark.parametrize(("name", "call", "pattern"), _calls(), ids=[c[0] for c in _calls()])
def test_an_id_with_a_slash_or_a_query_stays_in_its_segment(
    name: str, call: Callable[[CreditShareClient], Any], pattern: str
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    with CreditShareClient("http://c.test", transport=httpx.MockTransport(handler)) as client:
        call(client)
    assert len(seen) == 1, name
    request = seen[0]
    assert request.url.raw_path.decode() == pattern.format(*[ESCAPED] * pattern.count("{}"))
    assert request.url.query == b""
    assert request.url.fragment == ""
