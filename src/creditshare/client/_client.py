"""The requester's SDK: talks HTTP to the coordinator, decrypts locally."""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from creditshare.client._access_log import AccessEntry, verify_access_log
from creditshare.client._http import problem_of, segment
from creditshare.client._identity import Identity
from creditshare.client._listings import ListingCalls
from creditshare.client._monitoring import MonitoringCalls
from creditshare.client._profile import DEFAULT_MODEL_ID, CreditProfile, decrypt_profile
from creditshare.client._signing import sign_query
from creditshare.client._statistics import StatisticsCalls
from creditshare.client._witness import HeadMemory, VerifiedHead, WitnessPolicy, split_view
from creditshare.consent import ConsentRevocation, Purpose, SignedConsent
from creditshare.crypto import AlertPrivateKey, PrivateKey, SigningKey, VerifyKey
from creditshare.errors import (
    ClientError,
    CreditShareError,
    InvalidInputError,
    InvalidProofError,
    ProblemError,
    SplitViewError,
    TransportError,
    UnwitnessedHeadError,
)
from creditshare.identity import Uscc
from creditshare.ledger import (
    Cosignature,
    SignedTreeHead,
    log_origin,
    parse_proof,
    verify_consistency,
)

__all__ = ["DEFAULT_MODEL_ID", "CreditShareClient", "Signer"]

#: Adds the signed fields (id, time, signature; a job's config_sha256) for a body:
#: ``sign_query``, ``sign_job``.
Signer = Callable[[Identity, Mapping[str, Any]], dict[str, str]]

log = logging.getLogger("creditshare.client")


class CreditShareClient(MonitoringCalls, ListingCalls, StatisticsCalls):
    """A bank's, bureau's or regulator's connection to a coordinator.

    ``api_key`` authenticates the participant; ``private_key`` (a bank's, bureau's or
    regulator's Paillier key) is needed only to query; ``identity`` (its signing key and CA-issued
    credentials) signs each query and training job, which every node checks itself.
    ``transport`` lets tests substitute an httpx transport; production uses the default
    network transport. ``head_state`` is a JSON file where the tree heads this client
    accepted are remembered across runs (always remembered in memory), so that a split
    view is caught. ``alert_key`` (a bank's X25519 key, ``load_or_create_alert_key``)
    signs into its monitoring subscriptions and opens the alerts sealed to it.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        private_key: PrivateKey | None = None,
        identity: Identity | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        head_state: Path | None = None,
        alert_key: AlertPrivateKey | None = None,
    ) -> None:
        self._key = private_key
        self._alert_key = alert_key
        self._identity = identity
        self._heads = HeadMemory(head_state)
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

    @property
    def identity(self) -> Identity:
        if self._identity is None:
            raise ClientError(
                "this client has no signing identity; pass identity= (see Identity.load): "
                "nodes answer only requests signed by a certified key"
            )
        return self._identity

    def upload_credentials(self) -> list[dict[str, Any]]:
        """Hand the coordinator this identity's credentials to relay to nodes (idempotent)."""
        out = [
            self._object("POST", "/v1/credentials", json={"certificate": _pem(data)})
            for data in self.identity.credentials
        ]
        return out

    def signed_post(self, path: str, body: dict[str, Any], sign: Signer) -> Any:
        """POST a body the caller signs; if the coordinator has none of this identity's
        credentials yet (a new participant, a new key), upload them and send once more.

        Uploading only when asked keeps every request a single round trip, however many
        short-lived clients (CLI runs, worker processes) a bank uses.
        """
        identity = self.identity
        return self._with_credentials(
            lambda: self._request("POST", path, json=body | sign(identity, body))
        )

    def _with_credentials(self, send: Callable[[], Any]) -> Any:
        try:
            return send()
        except ProblemError as exc:
            if self._identity is None or exc.status != 422 or exc.body.get("field") != "credential":
                raise
        self.upload_credentials()
        return send()

    def credentials(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/v1/credentials")
        return result

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

    def _request(self, method: str, path: str, *, text: bool = False, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise TransportError(
                f"coordinator at {self.base_url} did not answer in time: {exc}"
            ) from exc
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach the coordinator at {self.base_url}: {exc}") from exc
        if response.status_code == 204:
            return None
        if response.status_code >= 400:
            raise problem_of(response)
        return response.text if text else response.json()

    def query_raw(
        self,
        uscc: str,
        consent_id: str,
        purpose: Purpose | str = Purpose.PRE_LOAN_REVIEW,
        model_id: str = DEFAULT_MODEL_ID,
        chains: list[str] | None = None,
    ) -> dict[str, Any]:
        """The coordinator's encrypted answer, as sent (for audit or archiving).

        The Paillier key is registered only when the coordinator says it does not know
        it (then the query is signed and sent once more): a short-lived client (a CLI
        run, a worker) makes one round trip per query, not two.
        """
        uscc = str(Uscc.parse(uscc))  # fail fast, before a round trip, with the position
        fingerprint = self.private_key.public_key.fingerprint()
        chains = sorted(set(chains)) if chains else None
        payload: dict[str, Any] = {
            "uscc": uscc,
            "model_id": model_id,
            "purpose": str(purpose),
            "consent_id": consent_id,
            "key_fingerprint": fingerprint,
        }
        if chains:
            payload["chains"] = chains
        try:
            body: dict[str, Any] = self.signed_post("/v1/queries", payload, sign_query)
        except ProblemError as exc:
            # Nothing was recorded or spent: the coordinator checks the key before both.
            if exc.status != 422 or exc.body.get("field") != "key_fingerprint":
                raise
            if fingerprint in self._registered:
                raise
            self.register_paillier_key()
            body = self.signed_post("/v1/queries", payload, sign_query)
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
        result: dict[str, Any] = self._request(
            "POST", f"/v1/paillier-keys/{segment(fingerprint)}/retire"
        )
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

    def issue_credential(self, participant_id: str) -> dict[str, Any]:
        """A further API key for a participant: {participant, api_key} (shown once)."""
        return self._object("POST", f"/v1/participants/{segment(participant_id)}/credentials")

    def revoke_credential(self, participant_id: str, key_id: str) -> None:
        """Revoke one key (``cs_<key id>.…``); 409 for the last operator's last key."""
        self._request(
            "POST",
            f"/v1/participants/{segment(participant_id)}/credentials/{segment(key_id)}/revoke",
        )

    def disable_participant(self, participant_id: str) -> dict[str, Any]:
        """Suspend a participant (an enterprise's consents are revoked too)."""
        return self._object("POST", f"/v1/participants/{segment(participant_id)}/disable")

    def enable_participant(self, participant_id: str) -> dict[str, Any]:
        return self._object("POST", f"/v1/participants/{segment(participant_id)}/enable")

    def rotate_signing_key(self, participant_id: str, signing_key: VerifyKey) -> dict[str, Any]:
        """Replace an enterprise's consent-signing key; grants signed with the old one are
        refused from now on."""
        return self._object(
            "POST",
            f"/v1/participants/{segment(participant_id)}/signing-key",
            json={"signing_key": signing_key.to_text()},
        )

    def upload_revocation_list(self, crl: bytes) -> dict[str, Any]:
        """Relay a chain CA's revocation list (PEM) to the nodes; operators only."""
        text = crl.decode("ascii", "replace")
        return self._object("PUT", "/v1/revocation-lists", json={"crl": text})

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._request(method, path, **kwargs)
        return result

    # consents -------------------------------------------------------------------------

    def grant_consent(self, signed: SignedConsent) -> dict[str, Any]:
        """Store a consent the enterprise signed. Nodes check its signature against the
        enterprise's credential, so the coordinator wants one on file first: a client with
        the enterprise's ``identity`` uploads it when asked."""
        result: dict[str, Any] = self._with_credentials(
            lambda: self._request("POST", "/v1/consents", json=signed.to_json())
        )
        return result

    def revoke_consent(
        self, consent_id: str, signing_key: SigningKey | None = None
    ) -> dict[str, Any]:
        """Revoke a consent. With the enterprise's ``signing_key`` the revocation is signed
        and handed to every data node of the consent's chains, which then refuse the
        consent themselves; ``nodes`` in the answer says which hold it."""
        body = None
        if signing_key is not None:
            uscc = str(self.consent(consent_id)["uscc"])
            now = datetime.now(UTC).replace(microsecond=0)
            body = ConsentRevocation.create(consent_id, uscc, now, signing_key).to_json()
        path = f"/v1/consents/{segment(consent_id)}/revoke"
        result: dict[str, Any] = self._request("POST", path, json=body)
        return result

    def consent(self, consent_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/consents/{segment(consent_id)}")
        return result

    # ledger ---------------------------------------------------------------------------

    def log_public_key(self) -> VerifyKey:
        return VerifyKey.from_text(self._request("GET", "/v1/ledger/public-key")["public_key"])

    def ledger_head(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/ledger/head")
        return result

    def enterprise_queries(self, uscc: str) -> list[dict[str, Any]]:
        path = f"/v1/enterprises/{segment(Uscc.parse(uscc))}/queries"
        result: list[dict[str, Any]] = self._request("GET", path)
        return result

    def ledger_checkpoint(self) -> str:
        """The newest witnessed head as C2SP checkpoint text (``parse_checkpoint`` reads it)."""
        result: str = self._request("GET", "/v1/ledger/checkpoint", text=True)
        return result

    def cosign_now(self) -> dict[str, Any]:
        """Ask the coordinator to run a cosigning round now; what it collected, per node."""
        return self._object("POST", "/v1/ledger/cosign")

    def _consistency(self, old: SignedTreeHead, new: SignedTreeHead, origin: str) -> None:
        """``new`` extends ``old`` (both accepted or being accepted), else a split view."""
        if old.size == new.size:
            if old.root != new.root:
                raise split_view(origin, new, old, "the head shown")
            return
        if old.size == 0:
            return
        try:
            body = self._request(
                "GET",
                "/v1/ledger/proofs/consistency",
                params={"first": old.size, "second": new.size},
            )
        except ProblemError as exc:
            if exc.status not in (404, 422):
                raise  # busy or down: no evidence either way
            # A log that signed both heads can always prove one extends the other.
            raise SplitViewError(
                f"split view of log {origin}: the head of size {new.size} does not extend "
                f"the head of size {old.size}: the coordinator cannot prove it ({exc.detail}); "
                "both are signed by the log key"
            ) from exc
        try:
            proof = parse_proof(body)
            verify_consistency(old.size, new.size, old.root, new.root, proof)
        except (InvalidInputError, InvalidProofError) as exc:
            raise SplitViewError(
                f"split view of log {origin}: the head of size {new.size} does not extend "
                f"the head of size {old.size} ({exc}); both are signed by the log key, so "
                "the log was forked"
            ) from exc

    def _check_view(self, head: SignedTreeHead, origin: str, what: str) -> None:
        """Refuse ``head`` if it conflicts with any head this client accepted before."""
        known = self._heads.conflict(origin, head)
        if known is not None:
            raise split_view(origin, head, known, what)
        below, above = self._heads.nearest(origin, head.size)
        if below is not None:
            self._consistency(below, head, origin)
        if above is not None:
            self._consistency(head, above, origin)

    def verified_head(self, policy: WitnessPolicy, log_key: VerifyKey) -> VerifiedHead:
        """The newest head a quorum of ``policy``'s witnesses cosigned, checked against
        every head this client accepted before, then remembered.

        - ``InvalidSignatureError``: a head the pinned ``log_key`` did not sign;
        - ``SplitViewError``: a head of a remembered size with another root, or one not
          consistent with a remembered head (the log was forked);
        - ``UnwitnessedHeadError``: fewer than ``policy.quorum`` distinct witnesses
          cosigned it (the message says which witness did not count, and why).
        """
        origin = log_origin(log_key.cryptography_key)
        body = self.ledger_head()
        latest = _signed_head(body, log_key)
        self._check_view(latest, origin, "the latest head")
        document = body.get("witnessed_head")
        if document is None:
            raise UnwitnessedHeadError(
                f"head of size {latest.size} has 0 valid cosignatures of a quorum of "
                f"{policy.quorum}: the coordinator published no cosigned head"
            )
        witnessed = _signed_head(document, log_key)
        self._check_view(witnessed, origin, "the witnessed head")
        cosignatures = []
        for item in body.get("cosignatures") or []:
            try:
                cosignatures.append(Cosignature.from_dict(item))
            except (CreditShareError, TypeError, AttributeError):
                continue  # malformed: it cannot count; the quorum check says who is missing
        witnesses = policy.check(witnessed, cosignatures, origin)
        self._heads.remember(origin, witnessed)
        return VerifiedHead(witnessed, witnesses, latest)

    def verified_enterprise_queries(
        self, uscc: str, log_key: VerifyKey, policy: WitnessPolicy | None = None
    ) -> list[AccessEntry]:
        """The enterprise's access log, every entry proven included under a signed head.

        ``log_key`` should come from a trusted channel (pinned), not from this coordinator.
        With a witness ``policy`` every entry's head must also be a prefix of a head a
        quorum of witnesses cosigned (a round is asked for once if the witnessed head
        lags); entries are then marked ``witnessed_by``. Without one, the heads are
        unwitnessed: the coordinator alone vouches for them (``witnessed_by`` empty).
        """
        code = str(Uscc.parse(uscc))
        entries = verify_access_log(self.enterprise_queries(code), code, log_key)
        if policy is None:
            log.warning(
                "access log checked against unwitnessed heads: no witness policy, so only "
                "the coordinator vouches for this log"
            )
            return entries
        if not entries:
            return entries
        origin = log_origin(log_key.cryptography_key)
        newest = max(e.tree_size for e in entries)
        try:
            verified: VerifiedHead | None = self.verified_head(policy, log_key)
        except UnwitnessedHeadError:
            verified = None  # perhaps only not yet: ask for a round, then decide
        if verified is None or verified.head.size < newest:
            self.cosign_now()
            verified = self.verified_head(policy, log_key)
        heads = {e.head.size: e.head for e in entries if e.head is not None}
        checked: list[AccessEntry] = []
        for entry in entries:
            if not entry.verified or entry.head is None:
                checked.append(entry)
                continue
            if entry.head.size > verified.head.size:
                problem = (
                    f"its head of size {entry.head.size} is newer than the newest head a "
                    f"quorum of witnesses cosigned (size {verified.head.size})"
                )
                checked.append(dataclasses.replace(entry, verified=False, problem=problem))
                continue
            self._consistency(heads[entry.head.size], verified.head, origin)
            checked.append(dataclasses.replace(entry, witnessed_by=verified.witnesses))
        return checked

    def post(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        """A raw authenticated POST; errors are translated like every other call."""
        return self._request("POST", path, json=payload or {})

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def training_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/training-jobs/{segment(job_id)}")
        return result

    def nodes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/v1/nodes")
        return result

    def models(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/v1/models")
        return result


def _pem(data: bytes) -> str:
    """A credential as PEM text (the coordinator's upload form), whichever way it was read."""
    if data.lstrip().startswith(b"-----"):
        return data.decode("ascii")
    return ssl.DER_cert_to_PEM_cert(data)


def _signed_head(document: Any, log_key: VerifyKey) -> SignedTreeHead:
    """A head from the coordinator's JSON, its log signature verified."""
    try:
        head = SignedTreeHead.from_dict(document)
    except (CreditShareError, TypeError) as exc:
        raise ClientError(f"the coordinator sent a malformed tree head: {exc}") from exc
    head.verify(log_key.cryptography_key)
    return head
