"""The requester's SDK: talks HTTP to the coordinator, decrypts locally."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from creditshare.client._profile import CreditProfile, decrypt_profile
from creditshare.crypto import PrivateKey
from creditshare.errors import ProblemError, TransportError
from creditshare.identity import Uscc

__all__ = ["DEFAULT_MODEL_ID", "CreditShareClient"]

DEFAULT_MODEL_ID = "sme-scorecard-v1"


class CreditShareClient:
    """A bank's or bureau's connection to a coordinator.

    ``transport`` lets tests substitute an httpx transport; production uses the
    default network transport.
    """

    def __init__(
        self,
        base_url: str,
        private_key: PrivateKey,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._key = private_key
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> CreditShareClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise TransportError(f"coordinator did not answer in time: {exc}") from exc
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach coordinator: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            if not isinstance(body, dict):
                body = {}
            raise ProblemError(
                response.status_code,
                str(body.get("title", response.reason_phrase)),
                str(body.get("detail", response.text[:200])),
                body,
            )
        return response.json()

    def query_raw(
        self, uscc: str, model_id: str = DEFAULT_MODEL_ID, chains: list[str] | None = None
    ) -> dict[str, Any]:
        """The coordinator's encrypted answer, as sent (for audit or archiving)."""
        uscc = str(Uscc.parse(uscc))  # fail fast, before a round trip, with the position
        payload: dict[str, Any] = {
            "uscc": uscc,
            "model_id": model_id,
            "public_key": self._key.public_key.to_text(),
        }
        if chains:
            payload["chains"] = chains
        body: dict[str, Any] = self._request("POST", "/v1/queries", json=payload)
        return body

    def query(
        self, uscc: str, model_id: str = DEFAULT_MODEL_ID, chains: list[str] | None = None
    ) -> CreditProfile:
        return decrypt_profile(self.query_raw(uscc, model_id, chains), self._key)

    def nodes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/v1/nodes")
        return result

    def models(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/v1/models")
        return result
