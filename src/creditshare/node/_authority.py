"""A node's own check of who asked, under which consent, for which key.

The receipt proves a request was recorded; it does not prove the coordinator told the
truth in the record. So before computing anything the node checks, from signatures it
can verify itself with keys the chain operator's CA certified:

- the requester's credential (issued by a CA this node trusts, not expired, not on a
  fresh revocation list) and its signature over the request;
- that the record says what the signed request says: enterprise, purpose, consent,
  chains, model and, above all, the fingerprint of the Paillier key the node is asked to
  encrypt under (a coordinator that swapped in its own key breaks this); for a training
  job, also the hash of the settings the node is asked to train with (a coordinator that
  changed one, or left a field out of the message, breaks this);
- the enterprise's credential and its signature over the consent, and that the consent
  names this requester, purpose, chain and indicators, is within its validity and was
  not revoked (revocations reach the node signed by the enterprise).

A compromised coordinator can still refuse or delay service; it can no longer make a
node answer a request no requester signed or no enterprise authorised.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from creditshare._canonical import canonical_json
from creditshare._recent import RecentlyPassed
from creditshare.consent import (
    ConsentGrant,
    ConsentRevocation,
    ConsentState,
    Purpose,
    SignedConsent,
    check,
)
from creditshare.crypto import VerifyKey
from creditshare.errors import (
    ConsentRefusedError,
    CredentialRefusedError,
    CreditShareError,
    InvalidInputError,
    InvalidSignatureError,
)
from creditshare.identity import Chain
from creditshare.ledger import QueryRecord
from creditshare.node._authority_store import RevokedConsents, StoredRevocationLists
from creditshare.node._receipts import ReceiptRefusedError
from creditshare.pki import Credential, CredentialVerifier
from creditshare.signed import (
    RECORD_TIME_WINDOW,
    SignedCohortQuery,
    SignedQuery,
    SignedSubscription,
    SignedTrainingJob,
)
from creditshare.statistics import CohortQuery

__all__ = ["MAX_CREDENTIALS", "RequestAuthority"]

#: Credentials one request may carry per party (one per chain CA, with room to rotate).
MAX_CREDENTIALS = 8
_REQUESTER_ROLES = ("bank", "bureau")
#: The only role whose signed cohort statistics queries a node answers.
_REGULATOR_ROLE = "regulator"
#: Revocation lists remembered as already handled (a chain's list changes daily).
_SEEN_LISTS = 64
#: How far a signed request's time may sit from the record's (two clocks, one query); the
#: coordinator refuses a statistics query outside it before recording anything.
_SKEW = RECORD_TIME_WINDOW
#: The same for a subscription: the coordinator records it at its own clock, having
#: accepted the bank's signing time within its request skew (minutes, configurable).
_SUBSCRIPTION_SKEW = timedelta(minutes=10)


#: Consent signatures remembered as verified (one per enterprise and bank in recent use).
_REMEMBERED_CONSENTS = 1024


class RequestAuthority:
    def __init__(
        self,
        verifier: CredentialVerifier,
        chain: Chain,
        node_id: str,
        revoked: RevokedConsents,
        clock: Callable[[], datetime],
        stored_lists: StoredRevocationLists | None = None,
    ) -> None:
        self._stored_lists = stored_lists
        self._lock = threading.Lock()
        #: Digests of lists already taken (or found older, or foreign): each request
        #: relays the same few lists, which need parsing and checking only once.
        self._seen_lists: OrderedDict[bytes, None] = OrderedDict()
        self._verifier = verifier
        self._chain = chain
        self._node_id = node_id
        self._revoked = revoked
        self._clock = clock
        # A consent's signature is checked once per (key, signature, signed bytes); its
        # validity and revocation, and the credential's, are checked on every answer.
        self._consent_signatures: RecentlyPassed[tuple[bytes, bytes, bytes]] = RecentlyPassed(
            _REMEMBERED_CONSENTS
        )

    def update_revocations(self, lists: Sequence[bytes]) -> bool:
        """Take newer revocation lists the coordinator relayed; True if any replaced one.

        A list not signed by a trusted CA is skipped rather than refused: the coordinator
        relays every chain's lists, and a node trusts only its own chain's CA. An older
        list than the one held is ignored, so a relay cannot roll revocations back.
        """
        replaced = False
        for data in lists[:MAX_CREDENTIALS]:
            digest = hashlib.sha256(data).digest()
            with self._lock:
                if digest in self._seen_lists:  # the same list again: nothing to learn
                    continue
            with contextlib.suppress(InvalidInputError):  # not from a CA this node trusts
                replaced = self._verifier.update_revocations(data) or replaced
            with self._lock:
                self._seen_lists[digest] = None
                while len(self._seen_lists) > _SEEN_LISTS:
                    self._seen_lists.popitem(last=False)
        if replaced and self._stored_lists is not None:
            for current in self._verifier.revocation_lists():
                self._stored_lists.save(current.issuer_fingerprint, current.number, current.der)
        return replaced

    def _signed_by(
        self,
        certificates: Sequence[bytes],
        what: str,
        verify: Callable[[VerifyKey], None],
        refusal: CreditShareError,
        **expect: str | None,
    ) -> list[Credential]:
        """The party's credentials this node's CA vouches for now, one of whose keys signed
        (``verify`` raises InvalidSignatureError for a key that did not); else ``refusal``."""
        if not certificates:
            raise CredentialRefusedError(f"the {what}'s credential is missing")
        credentials = self._verifier.verify_all(certificates, **expect)
        for credential in credentials:
            try:
                verify(credential.verify_key)
            except InvalidSignatureError:
                continue
            return credentials
        raise refusal

    def check_query(
        self,
        record: QueryRecord,
        requester_credentials: Sequence[bytes],
        enterprise_credentials: Sequence[bytes],
    ) -> None:
        """Raise unless the requester signed this very query and the enterprise consented."""
        if record.request is None:
            raise ReceiptRefusedError("the record holds no signed request")
        try:
            signed = SignedQuery.from_json(record.request)
        except InvalidInputError as exc:
            raise ReceiptRefusedError(f"the recorded request is malformed: {exc}") from exc
        requester = self._signed_by(
            requester_credentials,
            "requester",
            signed.verify,
            ReceiptRefusedError(
                f"the request is not signed by {signed.requester!r}'s certified key"
            ),
            participant_id=signed.requester,
        )
        roles = {c.role for c in requester}
        if not roles <= set(_REQUESTER_ROLES):
            raise CredentialRefusedError(
                f"{signed.requester!r} is certified as {', '.join(sorted(roles))}, "
                "which may not query"
            )
        doc = signed.document
        _require_same(
            "the requester",
            (
                ("query id", record.query_id == doc["query_id"]),
                ("requester", record.requester == doc["requester"]),
                ("uscc", record.uscc == doc["uscc"]),
                ("purpose", record.purpose == doc["purpose"]),
                ("consent", record.consent_id == doc["consent_id"]),
                ("model", record.model_id == doc["model_id"]),
                ("public key", record.key_fingerprint == doc["key_fingerprint"]),
                ("chains", not doc["chains"] or set(record.chains) == set(doc["chains"])),
                # The receipt check bounds the record's age; this bounds the request's.
                _same_time(record.time, signed.time, _SKEW),
            ),
        )
        self._check_consent(
            record,
            signed.document["consent_id"],
            signed.requester,
            signed.document["uscc"],
            signed.document["purpose"],
            enterprise_credentials,
        )

    def _check_consent(
        self,
        record: QueryRecord,
        consent_id: str,
        requester: str,
        uscc: str,
        purpose: str,
        enterprise_credentials: Sequence[bytes],
    ) -> ConsentGrant:
        """Raise unless the record's consent is the one named, signed by the enterprise's
        certified key, and covers ``requester``'s use now; the consent's grant otherwise."""
        if record.consent is None:
            raise ConsentRefusedError("the record holds no signed consent")
        try:
            consent = SignedConsent.from_json(record.consent)
        except InvalidInputError as exc:
            raise ConsentRefusedError(f"the recorded consent is malformed: {exc}") from exc
        grant = consent.grant
        if grant.consent_id != consent_id:
            raise ConsentRefusedError("the recorded consent is not the one the request names")
        signed_bytes = grant.signed_bytes()
        self._signed_by(
            enterprise_credentials,
            "enterprise",
            lambda key: self._consent_signatures.check(
                (key.raw, consent.signature, signed_bytes),
                lambda: key.verify(consent.signature, signed_bytes),
            ),
            ConsentRefusedError("the consent is not signed by the enterprise's certified key"),
            role="enterprise",
            uscc=grant.uscc,
        )
        try:
            wanted = Purpose(purpose)
        except ValueError:
            raise ConsentRefusedError("the request names an unknown purpose") from None
        state = ConsentState(grant, self._revoked.is_revoked(grant.consent_id), uses=0)
        # Use counting stays at the coordinator (availability, not confidentiality); each
        # use is a ledger entry, which `creditshare ledger verify` checks against max_uses.
        check(
            state,
            requester=requester,
            uscc=uscc,
            purpose=wanted,
            chains=[self._chain, *(Chain(c) for c in record.chains)],
            now=self._clock(),
        )
        if tuple(record.indicators) != grant.indicators:
            raise ConsentRefusedError("the record's indicators are not the consent's")
        return grant

    def is_revoked(self, consent_id: str) -> bool:
        """Whether the enterprise withdrew ``consent_id`` (a signed revocation this node holds)."""
        return self._revoked.is_revoked(consent_id)

    def check_subscription(
        self,
        record: QueryRecord,
        signed: SignedSubscription,
        requester_credentials: Sequence[bytes],
        enterprise_credentials: Sequence[bytes],
    ) -> ConsentGrant:
        """Raise unless a certified bank signed this subscription, the record says what it
        signed and the enterprise's post_loan_monitoring consent covers it now (granted to
        that bank, for this chain, valid, not revoked); the consent's grant otherwise."""
        self._signed_by(
            requester_credentials,
            "requester",
            signed.verify,
            ReceiptRefusedError(
                f"the subscription is not signed by {signed.requester!r}'s certified key"
            ),
            participant_id=signed.requester,
            role="bank",
        )
        doc = signed.document
        _require_same(
            "the bank",
            (
                ("subscription id", record.query_id == doc["subscription_id"]),
                ("requester", record.requester == doc["requester"]),
                ("requester role", record.requester_role == "bank"),
                ("uscc", record.uscc == doc["uscc"]),
                ("purpose", record.purpose == doc["purpose"]),
                ("consent", record.consent_id == doc["consent_id"]),
                ("alert key", record.key_fingerprint == signed.alert_key.fingerprint()),
                ("chains", not doc["chains"] or set(record.chains) == set(doc["chains"])),
                _same_time(record.time, signed.time, _SUBSCRIPTION_SKEW),
            ),
        )
        grant = self._check_consent(
            record,
            signed.consent_id,
            signed.requester,
            signed.uscc,
            Purpose.POST_LOAN_MONITORING,
            enterprise_credentials,
        )
        if not doc["chains"] and set(record.chains) != {c.value for c in grant.chains}:
            raise ReceiptRefusedError("the record's chains are not the consent's")
        return grant

    def check_training(
        self,
        record: QueryRecord,
        requester_credentials: Sequence[bytes],
        config_sha256: str | None = None,
    ) -> list[Credential]:
        """Raise unless the bureau signed this job, for this key, naming this node and,
        given ``config_sha256`` (the digest of the settings this node was sent), for
        exactly those settings; the bureau's credentials this node's CA vouches for (the
        keys its PSI transcript must be signed with)."""
        if record.request is None:
            raise ReceiptRefusedError("the record holds no signed training job")
        try:
            signed = SignedTrainingJob.from_json(record.request)
        except InvalidInputError as exc:
            raise ReceiptRefusedError(f"the recorded training job is malformed: {exc}") from exc
        credentials = self._signed_by(
            requester_credentials,
            "requester",
            signed.verify,
            ReceiptRefusedError(
                f"the training job is not signed by {signed.requester!r}'s certified key"
            ),
            participant_id=signed.requester,
            role="bureau",
        )
        doc = signed.document
        _require_same(
            "the bureau",
            (
                ("job id", record.query_id == doc["job_id"]),
                ("requester", record.requester == doc["requester"]),
                ("public key", record.key_fingerprint == doc["key_fingerprint"]),
                ("node", self._node_id in doc["nodes"]),
                (
                    "training settings",
                    config_sha256 is None or config_sha256 == doc["config_sha256"],
                ),
            ),
        )
        return credentials

    def check_cohort(
        self, record: QueryRecord, requester_credentials: Sequence[bytes]
    ) -> CohortQuery:
        """Raise unless a certified regulator signed this very statistics query and the
        record says what it signed; the query otherwise.

        Only the role ``regulator`` may ask: a bank's or bureau's certified key signing
        a cohort query is refused here, whatever the coordinator let through. Every
        field the node computes from (department, dimensions, measures, dates, ε,
        minimum cell, key, catalogue) is read from the signed query, never the relay.
        """
        if record.request is None:
            raise ReceiptRefusedError("the record holds no signed statistics query")
        try:
            signed = SignedCohortQuery.from_json(record.request)
            query = signed.query
        except InvalidInputError as exc:
            raise ReceiptRefusedError(f"the recorded statistics query is malformed: {exc}") from exc
        regulator = self._signed_by(
            requester_credentials,
            "regulator",
            signed.verify,
            ReceiptRefusedError(
                f"the statistics query is not signed by {query.regulator!r}'s certified key"
            ),
            participant_id=query.regulator,
        )
        roles = {c.role for c in regulator}
        if roles != {_REGULATOR_ROLE}:
            raise CredentialRefusedError(
                f"{query.regulator!r} is certified as {', '.join(sorted(roles))}, "
                "which may not run statistics queries (only a regulator may)"
            )
        _require_same(
            "the regulator",
            (
                ("query id", record.query_id == query.request_id),
                ("requester", record.requester == query.regulator),
                ("requester role", record.requester_role == _REGULATOR_ROLE),
                ("purpose", record.purpose == "statistics"),
                ("uscc", record.uscc == ""),
                ("consent", record.consent_id == ""),
                ("public key", record.key_fingerprint == query.key_fingerprint),
                (
                    "chains",
                    not query.chains or set(record.chains) == {str(c) for c in query.chains},
                ),
                _same_time(record.time, query.time, _SKEW),
            ),
        )
        return query

    def revoke(
        self, revocation: ConsentRevocation, enterprise_credentials: Sequence[bytes]
    ) -> bool:
        """Keep an enterprise's signed revocation; False if the consent was revoked already."""
        self._signed_by(
            enterprise_credentials,
            "enterprise",
            revocation.verify,
            ConsentRefusedError("the revocation is not signed by the enterprise's certified key"),
            role="enterprise",
            uscc=revocation.uscc,
        )
        return self._revoked.add(
            revocation.consent_id,
            revocation.uscc,
            revocation.time,
            canonical_json(revocation.to_json()),
        )


def _same_time(recorded: datetime, signed: datetime, limit: timedelta) -> tuple[str, bool]:
    """The record's time against the signed one, named with the skew and the limit when
    they differ too much (the relay's clock, or its queue, is then the one to look at)."""
    skew = abs(recorded - signed)
    if skew <= limit:
        return "time", True
    way = "after" if recorded > signed else "before"
    return (
        f"time (the record is dated {round(skew.total_seconds(), 1):g} s {way} the signed "
        f"time; this node allows at most {limit.total_seconds():g} s)",
        False,
    )


def _require_same(signer: str, checks: Sequence[tuple[str, bool]]) -> None:
    """Refuse a record that differs from the signed statement, naming every field."""
    differing = [name for name, same in checks if not same]
    if differing:
        raise ReceiptRefusedError(
            f"the record does not say what {signer} signed: {', '.join(differing)}"
        )
