"""Participants' credentials and the chain CAs' revocation lists, kept to be relayed.

The coordinator is a courier here, not a judge: nodes verify every credential and list
against the CAs they trust. It still checks what it can cheaply (a credential names
the participant uploading it, with its role and USCC; an enterprise's credential holds
the signing key its consents are checked with) so a mistake is a clear 4xx at upload
rather than every node refusing later. Reads are cached briefly: two participants'
credentials and the lists travel with every query.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from creditshare.coordinator._db import CredentialRow, Participant, RevocationListRow
from creditshare.crypto import VerifyKey
from creditshare.errors import (
    InvalidInputError,
    InvalidSignatureError,
    NotFoundError,
    PermissionDeniedError,
)
from creditshare.pki import Credential, RevocationList, parse_credential
from creditshare.proto import node_pb2
from creditshare.signed import (
    SignedCohortQuery,
    SignedQuery,
    SignedSubscription,
    SignedTrainingJob,
)

__all__ = ["MAX_CREDENTIALS", "CredentialStore", "MissingCredentialError", "issuer_key"]

#: Unexpired credentials one participant may hold (one per chain CA, room to renew).
MAX_CREDENTIALS = 8
_CACHE_SECONDS = 5.0


class MissingCredentialError(InvalidInputError):
    """The sender has no credential on file: the SDK uploads its own and sends again."""

    field = "credential"


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def issuer_key(crl: RevocationList) -> str:
    """Which CA a list is from, as stored: SHA-256 of its issuer name (one list per CA)."""
    return hashlib.sha256(crl.issuer.public_bytes()).hexdigest()


class CredentialStore:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        max_skew: timedelta = timedelta(minutes=2),
    ) -> None:
        self._max_skew = max_skew
        self._engine = engine
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, tuple[bytes, ...]]] = {}
        self._lists: tuple[float, tuple[bytes, ...]] | None = None
        #: Parsed keys by credential digest: a credential is parsed once, not per query.
        self._keys: dict[bytes, VerifyKey] = {}
        #: USCC → (when looked up, the enterprise's participant id or None).
        self._enterprises: dict[str, tuple[float, str | None]] = {}

    # -- credentials ---------------------------------------------------------------------

    def add(
        self, participant: Participant, data: bytes, signing_key: VerifyKey | None
    ) -> Credential:
        """Store ``participant``'s credential; ``signing_key``: an enterprise's registered key."""
        credential = parse_credential(data)
        if credential.participant_id != participant.id:
            raise PermissionDeniedError(
                f"the credential names {credential.participant_id!r}, not {participant.id!r}"
            )
        if credential.role != participant.role:
            raise InvalidInputError(
                f"the credential certifies role {credential.role}, but {participant.id!r} "
                f"is registered as {participant.role}"
            )
        if participant.role == "enterprise":
            if credential.uscc != participant.uscc:
                raise InvalidInputError("the credential names another enterprise's USCC")
            if signing_key is not None and credential.verify_key != signing_key:
                raise InvalidInputError(
                    "the credential certifies a different key than the enterprise's registered "
                    "signing key; rotate the signing key first"
                )
        now = self._clock()
        if _utc(credential.not_after) <= now:
            raise InvalidInputError("the credential has expired")
        fingerprint = hashlib.sha256(credential.der).hexdigest()
        with Session(self._engine) as session:
            rows = list(
                session.exec(
                    select(CredentialRow).where(CredentialRow.participant_id == participant.id)
                )
            )
            for row in rows:  # expired ones make room
                if _utc(row.not_after) <= now:
                    session.delete(row)
            live = [r for r in rows if _utc(r.not_after) > now]
            if all(r.fingerprint != fingerprint for r in live):
                if len(live) >= MAX_CREDENTIALS:
                    raise InvalidInputError(
                        f"{participant.id!r} holds {MAX_CREDENTIALS} unexpired credentials "
                        "already; remove one (DELETE /v1/credentials/{fingerprint}) first"
                    )
                session.add(
                    CredentialRow(
                        fingerprint=fingerprint,
                        participant_id=participant.id,
                        serial=format(credential.serial, "x")[:64],
                        der=credential.der,
                        not_after=credential.not_after,
                        uploaded_at=now,
                    )
                )
            session.commit()
        with self._lock:
            self._cache.pop(participant.id, None)
        return credential

    def listed(self, participant_id: str) -> list[CredentialRow]:
        with Session(self._engine) as session:
            query = select(CredentialRow).where(CredentialRow.participant_id == participant_id)
            return list(session.exec(query.order_by(col(CredentialRow.uploaded_at).desc())))

    def remove(self, participant_id: str, fingerprint: str) -> None:
        with Session(self._engine) as session:
            row = session.get(CredentialRow, fingerprint[:64])
            if row is None or row.participant_id != participant_id:
                raise NotFoundError(f"no credential {fingerprint[:64]!r} of {participant_id!r}")
            session.delete(row)
            session.commit()
        with self._lock:
            self._cache.pop(participant_id, None)

    def of(self, participant_id: str) -> tuple[bytes, ...]:
        """The participant's unexpired credentials (DER), newest first; briefly cached."""
        now = self._monotonic()
        with self._lock:
            hit = self._cache.get(participant_id)
            if hit is not None and now - hit[0] < _CACHE_SECONDS:
                return hit[1]
        moment = self._clock()
        ders = tuple(
            row.der for row in self.listed(participant_id) if _utc(row.not_after) > moment
        )[:MAX_CREDENTIALS]
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[participant_id] = (now, ders)
        return ders

    def of_enterprise(self, uscc: str) -> tuple[bytes, ...]:
        """The credentials of the enterprise with this USCC (none if it is not registered);
        the USCC → participant lookup is cached like the credentials themselves."""
        now = self._monotonic()
        with self._lock:
            hit = self._enterprises.get(uscc)
        if hit is None or now - hit[0] >= _CACHE_SECONDS:
            with Session(self._engine) as session:
                participant_id = session.exec(
                    select(Participant.id).where(Participant.uscc == uscc)
                ).first()
            with self._lock:
                if len(self._enterprises) > 4096:
                    self._enterprises.clear()
                self._enterprises[uscc] = (now, participant_id)
            hit = (now, participant_id)
        return self.of(hit[1]) if hit[1] is not None else ()

    def for_nodes(
        self, requester: str | None = None, uscc: str | None = None
    ) -> node_pb2.Credentials:
        """What travels to the nodes with a request: the requester's and the enterprise's
        credentials, and the newest revocation list of each CA."""
        return node_pb2.Credentials(
            requester=list(self.of(requester)) if requester is not None else [],
            enterprise=list(self.of_enterprise(uscc)) if uscc is not None else [],
            revocation_lists=list(self.lists()),
        )

    def verify_keys(self, participant_id: str) -> list[VerifyKey]:
        """The keys the participant's credentials certify (to check its signature early)."""
        keys = []
        for der in self.of(participant_id):
            digest = hashlib.sha256(der).digest()
            with self._lock:
                key = self._keys.get(digest)
            if key is None:
                key = parse_credential(der).verify_key
                with self._lock:
                    if len(self._keys) > 4096:
                        self._keys.clear()
                    self._keys[digest] = key
            keys.append(key)
        return keys

    def check_signed(
        self,
        participant_id: str,
        signed: SignedQuery | SignedTrainingJob | SignedSubscription | SignedCohortQuery,
    ) -> None:
        """Refuse a request signed too far from now, or that its sender's credentials do not
        verify (nodes check it again, against their CA; checking here turns a client's
        mistake into one clear error instead of every node refusing)."""
        if abs(self._clock() - signed.time) > self._max_skew:
            raise InvalidInputError(
                f"requested_at is more than {self._max_skew.total_seconds():.0f} s from the "
                "coordinator's clock: sign each request when you send it"
            )
        keys = self.verify_keys(participant_id)
        if not keys:
            raise MissingCredentialError(
                f"{participant_id!r} has no credential on file: upload the one the chain CA "
                "issued (POST /v1/credentials) before sending signed requests"
            )
        for key in keys:
            try:
                signed.verify(key)
            except InvalidSignatureError:
                continue
            return
        raise PermissionDeniedError(
            "the request signature does not verify with the key any of your credentials certify"
        )

    # -- revocation lists ----------------------------------------------------------------

    def put_list(self, data: bytes) -> RevocationList:
        """Keep a CA's revocation list if it is newer than the one held (by CRL number).

        Parsed, not verified: the coordinator holds no trust anchor it could believe, and
        every node checks the CA's signature itself before it keeps a list."""
        crl = RevocationList.parse(data)
        issuer = issuer_key(crl)
        with Session(self._engine) as session:
            row = session.get(RevocationListRow, issuer)
            if row is not None and row.number >= crl.number:
                raise InvalidInputError(
                    f"the coordinator holds list number {row.number} from this CA already; "
                    f"this one is number {crl.number}"
                )
            row = row or RevocationListRow(
                issuer=issuer,
                number=crl.number,
                der=crl.der,
                this_update=crl.this_update,
                next_update=crl.next_update,
            )
            row.number, row.der = crl.number, crl.der
            row.this_update, row.next_update = crl.this_update, crl.next_update
            session.add(row)
            session.commit()
        with self._lock:
            self._lists = None
        return crl

    def lists(self) -> tuple[bytes, ...]:
        now = self._monotonic()
        with self._lock:
            if self._lists is not None and now - self._lists[0] < _CACHE_SECONDS:
                return self._lists[1]
        with Session(self._engine) as session:
            ders = tuple(row.der for row in session.exec(select(RevocationListRow)))
        with self._lock:
            self._lists = (now, ders)
        return ders

    def list_rows(self) -> list[RevocationListRow]:
        with Session(self._engine) as session:
            return list(session.exec(select(RevocationListRow)))
