"""A query names the bank's Paillier key; the SDK registers it only when the coordinator
says it does not know it, so a short-lived client's query is one round trip.

A fake coordinator (httpx.MockTransport) knows the key once it is registered and
answers every other refusal as the real one would; the calls are recorded in order.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from creditshare.client import CreditShareClient, Identity
from creditshare.crypto import PrivateKey
from creditshare.errors import ProblemError

from .._authority import authority

USCC = "91350100M000100Y43"
CONSENT = "0123456789abcdef" * 2


class FakeCoordinator:
    def __init__(self, known: bool = False, refusal: dict[str, Any] | None = None) -> None:
        self.known = known
        self.refusal = refusal
        self.calls: list[str] = []
        self.query_ids: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/v1/paillier-keys":
            self.known = True
            return httpx.Response(201, json={"fingerprint": "f"})
        self.query_ids.append(json.loads(request.content)["query_id"])
        if self.refusal is not None:
            return httpx.Response(422, json=self.refusal)
        if not self.known:
            return httpx.Response(
                422,
                json={"status": 422, "title": "Invalid input", "field": "key_fingerprint"},
            )
        return httpx.Response(200, json={"query_id": self.query_ids[-1]})


def _client(coordinator: FakeCoordinator, key: PrivateKey) -> CreditShareClient:
    signers = authority()
    return CreditShareClient(
        "http://coordinator",
        api_key="k",
        private_key=key,
        identity=Identity.of(signers.bank_key, (signers.bank_credential,)),
        transport=httpx.MockTransport(coordinator),
    )


def test_a_known_key_costs_no_registration(bank_key: PrivateKey) -> None:
    coordinator = FakeCoordinator(known=True)
    with _client(coordinator, bank_key) as client:
        client.query_raw(USCC, CONSENT)
    assert coordinator.calls == ["POST /v1/queries"]


def test_an_unknown_key_is_registered_and_the_query_signed_again(bank_key: PrivateKey) -> None:
    coordinator = FakeCoordinator()
    with _client(coordinator, bank_key) as client:
        answer = client.query_raw(USCC, CONSENT)
        client.query_raw(USCC, CONSENT)
    assert coordinator.calls == [
        "POST /v1/queries",
        "POST /v1/paillier-keys",
        "POST /v1/queries",
        "POST /v1/queries",
    ]
    assert answer["query_id"] == coordinator.query_ids[1] != coordinator.query_ids[0]


@pytest.mark.parametrize(
    "refusal",
    [
        {"status": 422, "title": "Invalid USCC", "field": "uscc"},
        {"status": 422, "title": "Invalid input", "field": "key_fingerprint"},
    ],
)
def test_other_refusals_and_a_second_key_refusal_are_raised(
    bank_key: PrivateKey, refusal: dict[str, Any]
) -> None:
    coordinator = FakeCoordinator(refusal=refusal)
    with _client(coordinator, bank_key) as client, pytest.raises(ProblemError) as raised:
        client.query_raw(USCC, CONSENT)
    assert raised.value.status == 422
    registers = coordinator.calls.count("POST /v1/paillier-keys")
    assert registers == (1 if refusal["field"] == "key_fingerprint" else 0)
    assert coordinator.calls.count("POST /v1/queries") == 1 + registers
