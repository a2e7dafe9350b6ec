"""The SDK's operations calls: ``readiness()`` gives /readyz's body on 503 as on 200 (the
body says what failed), ``metrics_text()`` sends the client's own key."""

from __future__ import annotations

import httpx
import pytest

from creditshare.client import CreditShareClient
from creditshare.errors import ProblemError


def _client(handler: httpx.MockTransport, api_key: str | None = "cs_key") -> CreditShareClient:
    return CreditShareClient("http://coordinator", api_key=api_key, transport=handler)


@pytest.mark.parametrize("status", [200, 503])
def test_readiness_returns_the_body_when_ready_and_when_not(status: int) -> None:
    body = {"status": "ok" if status == 200 else "not ready", "checks": {"database": "failed"}}
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(status, json=body)

    with _client(httpx.MockTransport(answer)) as client:
        assert client.readiness() == body
    assert seen == ["/readyz"]


def test_readiness_raises_any_other_refusal() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"title": "Internal", "detail": "boom"})

    with _client(httpx.MockTransport(answer)) as client, pytest.raises(ProblemError) as caught:
        client.readiness()
    assert caught.value.status == 500


def test_metrics_text_sends_the_clients_key_and_returns_text() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/metrics"
        if request.headers.get("Authorization") != "Bearer cs_key":
            return httpx.Response(401, json={"title": "Unauthorized", "detail": "no key"})
        return httpx.Response(200, text="# TYPE up gauge\nup 1\n")

    with _client(httpx.MockTransport(answer)) as client:
        assert client.metrics_text() == "# TYPE up gauge\nup 1\n"
    anonymous = _client(httpx.MockTransport(answer), api_key=None)
    with anonymous, pytest.raises(ProblemError) as caught:
        anonymous.metrics_text()
    assert caught.value.status == 401
