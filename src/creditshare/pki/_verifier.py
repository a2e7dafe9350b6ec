"""What a node holds to decide whether a participant's credential is vouched for.

A ``CredentialVerifier`` knows the trusted chain CA certificates (from a PEM
bundle the operator installs, never from the coordinator) and, per CA, the
newest revocation list it has been given. ``verify`` answers one question for
a set of certificates a request carries: is one of them a credential a trusted
CA issued, valid now, not revoked by a list that is itself fresh enough, and
for the participant, role and USCC the request claims?

The same few credentials arrive with every query, so the expensive part
(parsing and the issuer's ECDSA signature) is cached by the DER's SHA-256 in a
bounded LRU; time, revocation and the claimed names are checked on every call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from creditshare.errors import (
    ConfigurationError,
    CredentialRefusedError,
    InvalidInputError,
    RevocationStaleError,
)
from creditshare.identity import InvalidUsccError, Uscc
from creditshare.pki._ca import CLOCK_SKEW
from creditshare.pki._credential import (
    PARTICIPANT_ID,
    Credential,
    credential_from_certificate,
    fingerprint,
    load_one_certificate,
)
from creditshare.pki._inspect import is_ca, load_certificate_bundle
from creditshare.pki._revocation import RevocationList

__all__ = ["MAX_CREDENTIALS", "CredentialVerifier"]

#: At most this many certificates per request: a party has one credential, two
#: while it rolls over to a new one; more is an attempt to make the node work.
MAX_CREDENTIALS = 8
_CACHE_SIZE = 1024


def _cn(certificate: x509.Certificate) -> str:
    """A printable name for messages: the CN if it is a participant id, else "a certificate"."""
    try:
        values = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:  # pragma: no cover - malformed names fail at load already
        return "a certificate"
    value = values[0].value if len(values) == 1 else None
    if isinstance(value, str) and PARTICIPANT_ID.fullmatch(value):
        return f"credential of {value!r}"
    return "a certificate"


class CredentialVerifier:
    """Trusted chain CAs plus their newest revocation lists; thread-safe.

    ``max_revocation_age`` bounds how old (by thisUpdate) a CA's list may be for
    ``verify`` to rely on it; ``clock`` returns the current aware UTC time (tests
    pass a fixed one).
    """

    def __init__(
        self,
        trusted_cas: Sequence[x509.Certificate],
        *,
        max_revocation_age: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        if not trusted_cas:
            raise ConfigurationError("a credential verifier needs at least one trusted CA")
        for ca in trusted_cas:
            if not isinstance(ca, x509.Certificate) or not is_ca(ca):
                raise ConfigurationError(
                    "every trusted certificate must be a chain CA certificate (ca.crt)"
                )
        if max_revocation_age <= timedelta(0):
            raise ConfigurationError("max_revocation_age must be positive")
        self._cas: dict[str, x509.Certificate] = {fingerprint(ca): ca for ca in trusted_cas}
        self._max_age = max_revocation_age
        self._clock = clock
        self._lock = threading.Lock()
        self._lists: dict[str, RevocationList] = {}
        # DER hash -> a verified credential, or the refusal message for that certificate.
        self._cache: OrderedDict[bytes, Credential | str] = OrderedDict()

    @classmethod
    def from_file(
        cls,
        path: Path,
        *,
        max_revocation_age: timedelta,
        clock: Callable[[], datetime],
    ) -> CredentialVerifier:
        """Trust every CA certificate in the PEM bundle ``path``."""
        return cls(
            load_certificate_bundle(Path(path), "trusted CA bundle"),
            max_revocation_age=max_revocation_age,
            clock=clock,
        )

    # --- revocation lists --------------------------------------------------------------

    def update_revocations(self, data: bytes) -> bool:
        """Take a CA's revocation list if it is newer than the one held; True if it replaced.

        The list must be signed by one of the trusted CAs (InvalidInputError
        otherwise). An older or equal CRL number is ignored (False): a replayed
        list must never un-revoke a credential.
        """
        parsed = RevocationList.parse(data)
        issuer = next((fp for fp, ca in self._cas.items() if parsed.signed_by(ca)), None)
        if issuer is None:
            raise InvalidInputError("the revocation list is not signed by a trusted chain CA")
        verified = dataclasses.replace(parsed, issuer_fingerprint=issuer)
        with self._lock:
            current = self._lists.get(issuer)
            if current is not None and current.number >= verified.number:
                return False
            self._lists[issuer] = verified
            return True

    def revocation_lists(self) -> list[RevocationList]:
        """The newest list held per CA (to persist, and to load back after a restart)."""
        with self._lock:
            return list(self._lists.values())

    # --- credentials ---------------------------------------------------------------------

    def _check_issuer(self, certificate: x509.Certificate) -> str | None:
        """Fingerprint of the trusted CA that signed ``certificate``, or None."""
        for fp, ca in self._cas.items():
            if ca.subject != certificate.issuer:
                continue
            try:
                certificate.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return fp
        return None

    def _examine(self, der: bytes) -> Credential | str:
        """Parse, find the issuer, check the shape: a credential, or why not (cached)."""
        key = hashlib.sha256(der).digest()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        certificate = load_one_certificate(der, "credential")  # garbage is not cached
        outcome: Credential | str
        issuer = self._check_issuer(certificate)
        if issuer is None:
            outcome = f"{_cn(certificate)} is not issued by a trusted CA"
        else:
            try:
                outcome = credential_from_certificate(certificate, issuer_fingerprint=issuer)
            except InvalidInputError as exc:
                outcome = f"{exc}"
        with self._lock:
            self._cache[key] = outcome
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return outcome

    def verify(
        self,
        certificates: Sequence[bytes],
        *,
        participant_id: str | None = None,
        role: str | None = None,
        uscc: str | None = None,
    ) -> Credential:
        """The credential among ``certificates`` that a trusted CA vouches for right now
        (the first, if several do); raises as ``verify_all``."""
        return self.verify_all(certificates, participant_id=participant_id, role=role, uscc=uscc)[0]

    def verify_all(
        self,
        certificates: Sequence[bytes],
        *,
        participant_id: str | None = None,
        role: str | None = None,
        uscc: str | None = None,
    ) -> list[Credential]:
        """Every credential among ``certificates`` that a trusted CA vouches for right now.

        A party may present several: one per chain CA (a node trusts only its own) and,
        across a key rotation, the old key's and the new one's, so what it signed before
        the rotation still verifies. Raises InvalidInputError for malformed input (not
        bytes, oversize, garbage, more than ``MAX_CREDENTIALS``), CredentialRefusedError
        naming the reason when no certificate qualifies (a reason about one this node's
        CA issued, such as "revoked", before "not issued by a trusted CA"), and
        RevocationStaleError when the issuing CA's revocation list is missing or too old
        to decide.
        """
        if isinstance(certificates, bytes | str) or not isinstance(certificates, Sequence):
            raise InvalidInputError("credentials must be a sequence of certificates")
        if len(certificates) > MAX_CREDENTIALS:
            raise InvalidInputError(
                f"{len(certificates)} credentials presented; at most {MAX_CREDENTIALS}"
            )
        if not certificates:
            raise CredentialRefusedError("no credential presented")
        wanted_uscc = None
        if uscc is not None:
            try:
                wanted_uscc = Uscc.parse(uscc).code
            except InvalidUsccError:
                raise InvalidInputError(
                    "the USCC to match the credential against is invalid"
                ) from None
        examined = [self._examine(c) for c in certificates]
        found = [c for c in examined if isinstance(c, Credential)]
        if not found:
            raise CredentialRefusedError(next(c for c in examined if isinstance(c, str)))
        valid: list[Credential] = []
        refusals: list[CredentialRefusedError] = []
        for credential in found:
            try:
                self._check_names(credential, participant_id, role, wanted_uscc)
                self._check_time(credential)
                self._check_revocation(credential)
            except CredentialRefusedError as exc:
                refusals.append(exc)
            else:
                valid.append(credential)
        if not valid:
            raise refusals[0]
        return valid

    @staticmethod
    def _check_names(
        credential: Credential, participant_id: str | None, role: str | None, uscc: str | None
    ) -> None:
        who = f"credential of {credential.participant_id!r}"
        if participant_id is not None and credential.participant_id != participant_id:
            raise CredentialRefusedError(
                f"{who} names participant {credential.participant_id!r}, not {participant_id!r}"
            )
        if role is not None and credential.role != role:
            raise CredentialRefusedError(f"{who} names role {credential.role}, not {role}")
        if uscc is not None and credential.uscc != uscc:
            # The USCC itself stays out of the message (it ends up in logs).
            raise CredentialRefusedError(f"{who} names another enterprise's USCC")

    def _check_time(self, credential: Credential) -> None:
        now = self._clock()
        who = f"credential of {credential.participant_id!r}"
        if now < credential.not_before - CLOCK_SKEW:
            raise CredentialRefusedError(
                f"{who} is not valid yet (from {credential.not_before.isoformat()})"
            )
        if now > credential.not_after + CLOCK_SKEW:
            raise CredentialRefusedError(f"{who} expired at {credential.not_after.isoformat()}")

    def _check_revocation(self, credential: Credential) -> None:
        now = self._clock()
        with self._lock:
            revocations = self._lists.get(credential.issuer_fingerprint)
        ca = self._cas[credential.issuer_fingerprint]
        ca_name = ca.subject.rfc4514_string()
        if revocations is None:
            raise RevocationStaleError(
                f"the node's revocation data is too old: it holds no revocation list from {ca_name}"
            )
        if revocations.this_update < now - self._max_age or now > revocations.next_update:
            raise RevocationStaleError(
                f"the node's revocation data is too old: the list from {ca_name} "
                f"(number {revocations.number}) dates from {revocations.this_update.isoformat()}"
                f" and is due for renewal at {revocations.next_update.isoformat()}"
            )
        if credential.serial in revocations.revoked_serials:
            raise CredentialRefusedError(f"credential of {credential.participant_id!r} was revoked")
