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
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
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
from creditshare.pki import Credential, parse_credential
from creditshare.signed import SignedQuery, SignedTrainingJob

__all__ = ["MAX_CREDENTIALS", "CredentialStore", "MissingCredentialError", "UploadedList"]

#: Unexpired credentials one participant may hold (one per chain CA, room to renew).
MAX_CREDENTIALS = 8
#: The largest revocation list accepted (a list revoking thousands is still far below).
MAX_LIST_BYTES = 256 * 1024
_CACHE_SECONDS = 5.0


class MissingCredentialError(InvalidInputError):
    """The sender has no credential on file: the SDK uploads its own and sends again."""

    field = "credential"


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class UploadedList:
    __slots__ = ("issuer", "next_update", "number", "this_update")

    def __init__(self, issuer: str, number: int, this_update: datetime, next_update: datetime):
        self.issuer, self.number = issuer, number
        self.this_update, self.next_update = this_update, next_update


class CredentialStore:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
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

    def check_signed(self, participant_id: str, signed: SignedQuery | SignedTrainingJob) -> None:
        """Refuse a request its sender's credentials do not verify (nodes check it again,
        against their CA; checking here turns a client's mistake into one clear error)."""
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

    def put_list(self, data: bytes) -> UploadedList:
        """Keep a CA's revocation list if it is newer than the one held (by CRL number)."""
        if len(data) > MAX_LIST_BYTES:
            raise InvalidInputError(f"a revocation list is at most {MAX_LIST_BYTES} bytes")
        try:
            crl = (
                x509.load_pem_x509_crl(data)
                if data.lstrip().startswith(b"-----")
                else x509.load_der_x509_crl(data)
            )
            number = int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        except (ValueError, x509.ExtensionNotFound):
            raise InvalidInputError(
                "not an X.509 certificate revocation list with a CRL number"
            ) from None
        next_update = crl.next_update_utc
        if next_update is None:
            raise InvalidInputError("the revocation list has no next update time")
        issuer = hashlib.sha256(crl.issuer.public_bytes()).hexdigest()
        der = crl.public_bytes(Encoding.DER)
        with Session(self._engine) as session:
            row = session.get(RevocationListRow, issuer)
            if row is not None and row.number >= number:
                raise InvalidInputError(
                    f"the coordinator holds list number {row.number} from this CA already; "
                    f"this one is number {number}"
                )
            row = row or RevocationListRow(
                issuer=issuer,
                number=number,
                der=der,
                this_update=crl.last_update_utc,
                next_update=next_update,
            )
            row.number, row.der = number, der
            row.this_update, row.next_update = crl.last_update_utc, next_update
            session.add(row)
            session.commit()
        with self._lock:
            self._lists = None
        return UploadedList(issuer, number, crl.last_update_utc, next_update)

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
