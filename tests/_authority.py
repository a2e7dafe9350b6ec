"""A chain CA with a bank and enterprises it certified, for tests of one node in-process.

Requests made here are signed the way the SDK signs them and carry the consent the
enterprise signed, so a node under test checks them exactly as it checks real ones;
tests that attack one part change that part only (``record(..., **overrides)``).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from creditshare.consent import ConsentGrant, Purpose, SignedConsent
from creditshare.crypto import SigningKey
from creditshare.departments import DEFAULT_MODEL_ID
from creditshare.errors import InvalidInputError
from creditshare.federated import PsiTranscript, TrainingConfig
from creditshare.identity import Chain
from creditshare.ledger import QueryRecord
from creditshare.pki import init_ca
from creditshare.proto import node_pb2, training_pb2
from creditshare.signed import (
    SignedPsiTranscript,
    SignedQuery,
    SignedTrainingJob,
    psi_transcript_document,
    query_document,
    training_document,
)
from creditshare.trees import TreeConfig

from ._pki import make_credential, make_crl

__all__ = ["TestAuthority", "admit_consenting_bank", "authority"]

#: Record fields that the requester signs too: an override changes both, consistently.
_SIGNED_TOO = {"model_id", "purpose", "indicators", "chains", "requester", "consent_id"}


class TestAuthority:
    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(
        self,
        folder: Path,
        chain: Chain = Chain.YRD,
        bank_id: str = "bank-1",
        ca_dir: Path | None = None,
    ) -> None:
        """A new CA in ``folder``, or the existing one in ``ca_dir`` (a federation's)."""
        self.folder = folder
        self.ca_dir = ca_dir or folder / "ca"
        if ca_dir is None:
            init_ca(chain.value, self.ca_dir)
        self.ca_cert = self.ca_dir / "ca.crt"
        self.bank_id = bank_id
        self.bank_key, self.bank_credential = make_credential(self.ca_dir, folder, bank_id, "bank")
        self.bureau_key, self.bureau_credential = make_credential(
            self.ca_dir, folder, "bureau-1", "bureau"
        )
        self.crl = make_crl(self.ca_dir, folder)
        self._enterprises: dict[str, tuple[SigningKey, bytes]] = {}

    def enterprise(self, uscc: str) -> tuple[SigningKey, bytes]:
        if uscc not in self._enterprises:
            self._enterprises[uscc] = make_credential(
                self.ca_dir, self.folder, f"ent-{uscc.lower()}", "enterprise", uscc
            )
        return self._enterprises[uscc]

    def consent(
        self,
        uscc: str,
        *,
        indicators: tuple[str, ...] = ("*",),
        purpose: str = Purpose.PRE_LOAN_REVIEW.value,
        grantee: str | None = None,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
    ) -> SignedConsent:
        return _consent(
            self, uscc, indicators, purpose, grantee or self.bank_id, valid_from, valid_until
        )

    def credentials(self, uscc: str | None = None, **parts: Any) -> node_pb2.Credentials:
        try:
            enterprise = [self.enterprise(uscc)[1]] if uscc else []
        except InvalidInputError:  # a malformed USCC names no enterprise
            enterprise = []
        fields: dict[str, Any] = {
            "requester": [self.bank_credential],
            "enterprise": enterprise,
            "revocation_lists": [self.crl],
        }
        return node_pb2.Credentials(**(fields | parts))

    def record(
        self,
        uscc: str,
        key_fingerprint: str,
        *,
        consent: SignedConsent | None = None,
        **overrides: Any,
    ) -> QueryRecord:
        """A query record as an honest coordinator writes it for the bank's signed request;
        fields in ``overrides`` the bank signs change the signed request too, the others
        change only the record (what a dishonest coordinator would do)."""
        signed_too = {k: v for k, v in overrides.items() if k in _SIGNED_TOO}
        indicators = tuple(signed_too.get("indicators", ("*",)))
        purpose = str(signed_too.get("purpose", Purpose.PRE_LOAN_REVIEW.value))
        if consent is None:
            try:
                consent = self.consent(uscc, indicators=indicators, purpose=purpose)
            except InvalidInputError:  # a test of a malformed USCC: the node refuses it first
                return QueryRecord(
                    "query",
                    uuid.uuid4().hex,
                    datetime.now(UTC),
                    uscc,
                    self.bank_id,
                    "bank",
                    purpose,
                    "0" * 32,
                    DEFAULT_MODEL_ID,
                    key_fingerprint,
                    ("yrd",),
                    indicators,
                )
        now = datetime.now(UTC).replace(microsecond=0)
        fields: dict[str, Any] = (
            {
                "kind": "query",
                "query_id": uuid.uuid4().hex,
                "time": now,
                "uscc": uscc,
                "requester": self.bank_id,
                "requester_role": "bank",
                "purpose": purpose,
                "consent_id": consent.grant.consent_id,
                "model_id": DEFAULT_MODEL_ID,
                "key_fingerprint": key_fingerprint,
                "chains": ("yrd",),
            }
            | signed_too
            | {"indicators": consent.grant.indicators}
        )
        document = query_document(
            query_id=fields["query_id"],
            requester=fields["requester"],
            uscc=uscc,
            purpose=fields["purpose"],
            consent_id=fields["consent_id"],
            chains=list(fields["chains"]),
            model_id=fields["model_id"],
            key_fingerprint=key_fingerprint,
            time=now,
        )
        signed = SignedQuery.sign(document, self.bank_key)
        fields |= {k: v for k, v in overrides.items() if k not in _SIGNED_TOO}
        return QueryRecord(**fields, request=signed.to_json(), consent=consent.to_json())

    def training_record(
        self,
        job_id: str,
        key_fingerprint: str,
        nodes: tuple[str, ...],
        config: TrainingConfig | TreeConfig | None = None,
        **overrides: Any,
    ) -> QueryRecord:
        """A training job's record, signed by the bureau for ``config`` (default: the
        defaults) (``overrides``: the record only)."""
        now = datetime.now(UTC).replace(microsecond=0)
        signed = SignedTrainingJob.sign(
            training_document(
                job_id=job_id,
                requester="bureau-1",
                key_fingerprint=key_fingerprint,
                nodes=nodes,
                config_sha256=(config or TrainingConfig()).digest(),
                time=now,
            ),
            self.bureau_key,
        )
        fields: dict[str, Any] = {
            "kind": "training",
            "query_id": job_id,
            "time": now,
            "uscc": "",
            "requester": "bureau-1",
            "requester_role": "bureau",
            "purpose": Purpose.MODEL_TRAINING.value,
            "consent_id": "",
            "model_id": "m-" + job_id[:8],
            "key_fingerprint": key_fingerprint,
            "chains": ("yrd",),
            "indicators": (),
        } | overrides
        return QueryRecord(**fields, request=signed.to_json())

    def training_credentials(self) -> node_pb2.Credentials:
        return node_pb2.Credentials(requester=[self.bureau_credential], revocation_lists=[self.crl])

    def psi_signature(
        self, job_id: str, node: str, domain: bytes, points: int, transcript: bytes
    ) -> bytes:
        """The bureau's signature over a PSI run that sent ``node`` ``points`` points whose
        running hash (``PsiTranscript.digest``) is ``transcript``."""
        document = psi_transcript_document(
            job_id=job_id,
            requester="bureau-1",
            node=node,
            domain=domain,
            points=points,
            transcript_sha256=transcript,
        )
        return SignedPsiTranscript.sign(document, self.bureau_key).signature

    def sign_psi(
        self, request: training_pb2.PsiAnswerRequest, node: str = "yrd-tax"
    ) -> training_pb2.PsiAnswerRequest:
        """``request`` (a whole run in one chunk) with the bureau's transcript signature."""
        transcript = PsiTranscript()
        transcript.add(list(request.blinded))
        request.transcript_signature = self.psi_signature(
            request.job_id, node, request.domain, transcript.count, transcript.digest()
        )
        return request


@cache
def _consent(
    owner: TestAuthority,
    uscc: str,
    indicators: tuple[str, ...],
    purpose: str,
    grantee: str,
    valid_from: datetime | None,
    valid_until: datetime | None,
) -> SignedConsent:
    now = datetime.now(UTC)
    grant = ConsentGrant.create(
        uscc,
        grantee,
        purpose,
        valid_from or now - timedelta(minutes=5),
        valid_until or now + timedelta(days=2),
        chains=tuple(Chain),
        indicators=indicators,
    )
    return grant.sign(owner.enterprise(uscc)[0])


@cache
def authority() -> TestAuthority:
    """One CA for the whole test session (made in a temporary folder, removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="creditshare-test-ca-"))
    atexit.register(shutil.rmtree, folder, True)
    return TestAuthority(folder)


def admit_consenting_bank(client: Any, services: Any, uscc: str, enterprise: str) -> None:
    """On an in-process coordinator (``services``), the authority's bank with an API key
    and its credential on file, and ``enterprise`` (``uscc``) consenting to its pre-loan
    queries; ``client`` (a TestClient) then sends the bank's key and that consent."""
    signers = authority()
    bank = services.participants.register(signers.bank_id, "bank", "Bank")
    api_key = services.participants.issue_key(signers.bank_id).api_key
    services.credentials.add(bank, signers.bank_credential, None)
    signing, _ = signers.enterprise(uscc)
    services.participants.register(
        enterprise, "enterprise", "Ent", uscc=uscc, signing_key=signing.verify_key.to_text()
    )
    now = datetime.now(UTC)
    grant = ConsentGrant.create(
        uscc,
        signers.bank_id,
        Purpose.PRE_LOAN_REVIEW,
        now - timedelta(minutes=1),
        now + timedelta(days=1),
    )
    services.consents.grant(grant.sign(signing), services.participants.get(enterprise))
    client.headers["Authorization"] = f"Bearer {api_key}"
    client.headers["X-Consent"] = grant.consent_id
