"""The requester's SDK: talks HTTP to the coordinator, decrypts locally."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from creditshare.client._access_log import AccessEntry, verify_access_log
from creditshare.client._profile import CreditProfile, decrypt_profile
from creditshare.consent import Purpose, SignedConsent
from creditshare.crypto import PrivateKey, VerifyKey
from creditshare.errors import ClientError, ProblemError, TransportError
from creditshare.identity import Uscc

__all__ = ["DEFAULT_MODEL_ID", "CreditShareClient"]

DEFAULT_MODEL_ID = "sme-scorecard-v1"


class CreditShareClient:
    """A bank's or bureau's connection to a coordinator.

    ``api_key`` authenticates the participant; ``private_key`` (a bank's or bureau's
    Paillier key) is needed only to query. ``transport`` lets tests substitute an
    httpx transport; production uses the default network transport.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        private_key: PrivateKey | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._key = private_key
        #: Fingerprints this client registered (or found registered) at the coordinator.
        self._registered: set[str] = set()
        self.base_url = base_url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, transport=transport, headers=headers
        )

    @property
    def private_key(self) -> PrivateKey:
        if self._key is None:
            raise ClientError("this client has no Paillier private key; pass private_key=")
        return self._key

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
        self,
        uscc: str,
        consent_id: str,
        purpose: Purpose | str = Purpose.PRE_LOAN_REVIEW,
        model_id: str = DEFAULT_MODEL_ID,
        chains: list[str] | None = None,
    ) -> dict[str, Any]:
        """The coordinator's encrypted answer, as sent (for audit or archiving)."""
        uscc = str(Uscc.parse(uscc))  # fail fast, before a round trip, with the position
        payload: dict[str, Any] = {
            "uscc": uscc,
            "model_id": model_id,
            "purpose": str(purpose),
            "consent_id": consent_id,
            "key_fingerprint": self.ensure_paillier_key(),
        }
        if chains:
            payload["chains"] = chains
        body: dict[str, Any] = self._request("POST", "/v1/queries", json=payload)
        return body

    def query(
        self,
        uscc: str,
        consent_id: str,
        purpose: Purpose | str = Purpose.PRE_LOAN_REVIEW,
        model_id: str = DEFAULT_MODEL_ID,
        chains: list[str] | None = None,
    ) -> CreditProfile:
        raw = self.query_raw(uscc, consent_id, purpose, model_id, chains)
        return decrypt_profile(raw, self.private_key)

    # Paillier keys (banks and bureaus) -------------------------------------------------

    def register_paillier_key(self) -> dict[str, Any]:
        """Register this client's Paillier public key (idempotent); returns the key record."""
        body: dict[str, Any] = self._request(
            "POST", "/v1/paillier-keys", json={"public_key": self.private_key.public_key.to_text()}
        )
        self._registered.add(str(body["fingerprint"]))
        return body

    def ensure_paillier_key(self) -> str:
        """The fingerprint queries and training jobs name; registers the key on first use."""
        fingerprint = self.private_key.public_key.fingerprint()
        if fingerprint not in self._registered:
            self.register_paillier_key()
        return fingerprint

    def paillier_keys(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/v1/paillier-keys")
        return result

    def retire_paillier_key(self, fingerprint: str) -> dict[str, Any]:
        """No new query or job may use the key (rotate: register a new one first)."""
        self._registered.discard(fingerprint)
        result: dict[str, Any] = self._request("POST", f"/v1/paillier-keys/{fingerprint}/retire")
        return result

    # participants (operator) ----------------------------------------------------------

    def register_participant(
        self,
        participant_id: str,
        role: str,
        name: str,
        *,
        uscc: str | None = None,
        signing_key: VerifyKey | None = None,
    ) -> dict[str, Any]:
        """Returns {participant, api_key}; the key is shown only this once."""
        payload = {
            "id": participant_id,
            "role": role,
            "name": name,
            "uscc": uscc,
            "signing_key": signing_key.to_text() if signing_key else None,
        }
        result: dict[str, Any] = self._request("POST", "/v1/participants", json=payload)
        return result

    # consents -------------------------------------------------------------------------

    def grant_consent(self, signed: SignedConsent) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/v1/consents", json=signed.to_json())
        return result

    def revoke_consent(self, consent_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/v1/consents/{consent_id}/revoke")
        return result

    def consent(self, consent_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/consents/{consent_id}")
        return result

    # ledger ---------------------------------------------------------------------------

    def log_public_key(self) -> VerifyKey:
        return VerifyKey.from_text(self._request("GET", "/v1/ledger/public-key")["public_key"])

    def ledger_head(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/ledger/head")
        return result

    def enterprise_queries(self, uscc: str) -> list[dict[str, Any]]:
        path = f"/v1/enterprises/{Uscc.parse(uscc)}/queries"
        result: list[dict[str, Any]] = self._request("GET", path)
        return result

    def verified_enterprise_queries(self, uscc: str, log_key: VerifyKey) -> list[AccessEntry]:
        """The enterprise's access log, every entry proven included under a signed head.

        ``log_key`` should come from a trusted channel (pinned), not from this coordinator.
        """
        code = str(Uscc.parse(uscc))
        return verify_access_log(self.enterprise_queries(code), code, log_key)

    def post(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        """A raw authenticated POST; errors are translated like every other call."""
        return self._request("POST", path, json=payload or {})

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def training_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/training-jobs/{job_id}")
        return result

    def nodes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/v1/nodes")
        return result

    def models(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/v1/models")
        return result
