"""One exception tree for the whole package.

Every error creditshare raises on purpose derives from ``CreditShareError`` so a
caller can catch "ours" in one place. The HTTP and gRPC edges map the classes
below to status codes exactly once (``coordinator/_problems.py``,
``node/_service.py``); nothing else chooses a status.

    CreditShareError
    ├── InvalidInputError            bad input from a caller: 422 / INVALID_ARGUMENT
    │   ├── InvalidUsccError         (identity.uscc) names the wrong position
    │   ├── KeyTooSmallError         Paillier modulus below the 2048-bit floor
    │   ├── InvalidKeyError          not a usable Paillier public key
    │   ├── InvalidCiphertextError   outside 0 < c < n², or shares a factor with n
    │   ├── EncodingOverflowError    a value does not fit the fixed-point range
    │   └── ImportRejectedError      a data file was refused (file, line, reason)
    ├── NotFoundError                unknown model / node / chain: 404 / NOT_FOUND
    │   └── GoneError                existed once, deleted (pruned alerts): 410
    ├── AuthenticationError          no or bad credential: 401
    ├── PermissionDeniedError        wrong role, someone else's resource, no consent: 403
    │   ├── ConsentRefusedError      the consent does not cover this query (recorded)
    │   ├── CredentialRefusedError   a participant credential the chain CA does not vouch for
    │   └── PrivacyBudgetExceededError a statistics query past a node's ε budget: RESOURCE_EXHAUSTED
    ├── ConflictError                the resource exists already: 409
    │   └── OutOfOrderError          a step before the one it needs: 409 / FAILED_PRECONDITION
    ├── RateLimitedError             over a participant or enterprise limit: 429
    ├── NoNodeAnsweredError          every node in scope failed: 503
    ├── CapacityError                a node (or the coordinator) is full: 503 / RESOURCE_EXHAUSTED
    ├── NodeFailedError              a relayed call to one node failed: 502
    ├── DecryptionOverflowError      a decrypted sum wrapped around the modulus
    ├── RevocationStaleError         revocation data too old to decide: 503 / FAILED_PRECONDITION
    ├── LedgerError                  the verifiable query log
    │   ├── InvalidProofError        an inclusion or consistency proof does not verify
    │   ├── InvalidSignatureError    a tree head (or other signed object) fails its signature
    │   ├── InconsistentTreeHeadError a head that forks from one already accepted
    │   └── LedgerIntegrityError     stored log does not extend the last signed head: 503
    ├── ConfigurationError           a service was configured inconsistently
    │   ├── StaleRecordError         a stored record its schema cannot read: FAILED_PRECONDITION
    │   ├── StaleShardError          a model shard trained on another schema: FAILED_PRECONDITION
    │   └── StatisticsUnavailableError a node's snapshot it cannot answer from: FAILED_PRECONDITION
    └── ClientError                  raised by creditshare.client only
        ├── TransportError           coordinator unreachable or timed out
        ├── ProblemError             coordinator answered an RFC 9457 problem
        ├── UnwitnessedHeadError     a tree head with fewer valid cosignatures than the quorum
        ├── SplitViewError           two heads of one size with different roots: a split view
        ├── AlertBatchError          a stored alert batch that does not open as what it claims
        ├── ScoreUnavailableError    a tree model's scoring chain failed: no score, indicators kept
        └── WebhookSignatureError    a webhook call whose Standard Webhooks signature fails
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlertBatchError",
    "AuthenticationError",
    "CapacityError",
    "ClientError",
    "ConfigurationError",
    "ConflictError",
    "ConsentRefusedError",
    "CredentialRefusedError",
    "CreditShareError",
    "DecryptionOverflowError",
    "EncodingOverflowError",
    "GoneError",
    "ImportRejectedError",
    "InconsistentTreeHeadError",
    "InvalidCiphertextError",
    "InvalidInputError",
    "InvalidKeyError",
    "InvalidProofError",
    "InvalidSignatureError",
    "KeyTooSmallError",
    "LedgerError",
    "LedgerIntegrityError",
    "NoNodeAnsweredError",
    "NodeFailedError",
    "NotFoundError",
    "OutOfOrderError",
    "PermissionDeniedError",
    "PrivacyBudgetExceededError",
    "ProblemError",
    "RateLimitedError",
    "RevocationStaleError",
    "ScoreUnavailableError",
    "SplitViewError",
    "StaleRecordError",
    "StaleShardError",
    "StatisticsUnavailableError",
    "TransportError",
    "UnwitnessedHeadError",
    "WebhookSignatureError",
]


class CreditShareError(Exception):
    """Root of every error raised by creditshare on purpose.

    ``field`` names the request field the error concerns, where one does (a grantee that
    is no participant, a model id taken): the coordinator's problem body carries it, so a
    form can show the refusal next to that field.
    """

    field: str | None = None

    def at(self, field: str) -> CreditShareError:
        """This error, naming the request ``field`` it concerns (``raise X(...).at("id")``)."""
        self.field = field
        return self


class InvalidInputError(CreditShareError, ValueError):
    """The caller sent something we cannot accept; the message says what and where."""


class KeyTooSmallError(InvalidInputError):
    """A Paillier key below the minimum size; refused at every entry point."""

    def __init__(self, bits: int, minimum: int) -> None:
        super().__init__(f"Paillier key is {bits} bits; at least {minimum} bits are required")
        self.bits = bits
        self.minimum = minimum


class InvalidKeyError(InvalidInputError):
    """Bytes or JSON that do not describe a usable Paillier public key."""


class InvalidCiphertextError(InvalidInputError):
    """A ciphertext that is malformed, out of range or not a unit modulo n²."""


class EncodingOverflowError(InvalidInputError):
    """A plaintext value too large for the fixed-point range of the key and scale."""


class ImportRejectedError(InvalidInputError):
    """A data file that was refused whole; nothing from it was written."""

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        where = f"{file}, line {line}" if line is not None else file
        super().__init__(f"{where}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason


class NotFoundError(CreditShareError, LookupError):
    """A model, node or chain that the registry does not know."""


class GoneError(NotFoundError):
    """Something that existed and was deleted on purpose (alerts past their retention):
    asking again will not help, starting over will."""


class AuthenticationError(CreditShareError):
    """No credential, or one that does not match; deliberately says no more than that."""


class PermissionDeniedError(CreditShareError):
    """An authenticated caller asking for something its role or ownership does not allow."""


class PrivacyBudgetExceededError(PermissionDeniedError):
    """A regulator's statistics query that would take it past a node's privacy budget
    (ε per period): refused before anything is computed, and nothing is spent. A
    permission, not a capacity: waiting a moment does not help, the next period does."""


class ConsentRefusedError(PermissionDeniedError):
    """The consent named does not cover the query; the refusal is recorded in the ledger."""


class CredentialRefusedError(PermissionDeniedError):
    """A participant credential that is not (or no longer) vouched for by a trusted chain CA.

    The message says exactly why (another CA, expired, revoked, names another role or
    participant) and never quotes key bytes, so it can be logged and returned as is.
    """


class ConflictError(CreditShareError):
    """The resource already exists."""


class OutOfOrderError(ConflictError):
    """A protocol step asked before the step it needs (or a second time): e.g. a
    training Forward before the job's WOE table is set. 409 over HTTP; a node answers
    FAILED_PRECONDITION."""


class RateLimitedError(CreditShareError):
    """Over a rate or quota limit; ``retry_after`` seconds until the next attempt may pass."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CapacityError(CreditShareError):
    """Busy, not broken: every slot is taken (e.g. a node's training jobs); try later."""


class NoNodeAnsweredError(CreditShareError):
    """Every node in scope failed: there is no partial result worth returning."""

    def __init__(self, failures: list[dict[str, str]]) -> None:
        super().__init__("no node in scope answered")
        self.failures = failures


class NodeFailedError(CreditShareError):
    """A call relayed to one data node failed; the message names the node and why."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"node {node}: {reason}")
        self.node = node
        self.reason = reason


class DecryptionOverflowError(CreditShareError):
    """A decrypted value fell outside the encodable range: the sum wrapped."""


class RevocationStaleError(CreditShareError):
    """The revocation list in hand is missing or too old to say a credential is not revoked.

    The service, not the request, is at fault: the caller may retry once the operator
    has delivered a fresh list (``creditshare pki crl``), hence 503 / FAILED_PRECONDITION
    rather than a refusal of the credential itself.
    """


class LedgerError(CreditShareError):
    """Base of the verifiable log's errors."""


class InvalidProofError(LedgerError):
    """A Merkle inclusion or consistency proof that does not verify."""


class InvalidSignatureError(LedgerError):
    """An Ed25519 signature that does not verify (tree head, receipt, consent)."""


class InconsistentTreeHeadError(LedgerError):
    """A tree head that is not an append-only extension of one already accepted."""


class LedgerIntegrityError(LedgerError):
    """The stored log no longer extends the last tree head this coordinator signed or
    verified (rows changed, missing or replaced underneath it).

    Signing on would fork the log, so the coordinator refuses every append from then
    until it is restarted on a database that passes its start-up check; the edge
    answers 503 (the service, not the request, is at fault). The message says what
    mismatched and names ``creditshare ledger verify`` for the full audit.
    """


class ConfigurationError(CreditShareError):
    """Settings that cannot work together; raised at start-up, never mid-query."""


class StaleRecordError(ConfigurationError):
    """A stored record this node's schema cannot read (imported under another schema).

    The message names the column only, never the stored value: it travels as a gRPC
    status to the coordinator and on into a bank's coverage and training job errors.
    FAILED_PRECONDITION: the node's operator must re-import its records."""


class StaleShardError(ConfigurationError):
    """A stored model shard this node cannot score with: trained on features its schema
    no longer derives the same way, or unreadable. Its queries are refused (scoring with
    it would silently change scores): FAILED_PRECONDITION until the model is retrained."""


class StatisticsUnavailableError(ConfigurationError):
    """A node's snapshot that a statistics query cannot be answered from (more records
    than a cell's slot holds). Found before any ε is spent; FAILED_PRECONDITION: the
    node's operator must act, the regulator cannot."""


class ClientError(CreditShareError):
    """Base of the SDK's own errors."""


class TransportError(ClientError):
    """The coordinator could not be reached or did not answer in time."""


class ProblemError(ClientError):
    """The coordinator refused the request with an RFC 9457 problem body."""

    def __init__(self, status: int, title: str, detail: str, body: dict[str, object]) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.body = body


class UnwitnessedHeadError(ClientError):
    """A tree head that fewer distinct witnesses (data nodes) cosigned than the client's
    quorum: the coordinator might be showing this client a log the nodes never saw.
    The message says the head's size, how many valid cosignatures it had, and why each
    configured witness did not count."""


class SplitViewError(ClientError):
    """The coordinator showed this client two heads of the same size with different
    roots, or a head that does not extend one the client accepted before: proof that
    the log was forked or that different parties are shown different logs."""


class ScoreUnavailableError(ClientError):
    """The answer holds no score: a node of the tree model's scoring chain failed (named
    in ``node``, with ``reason``). A wrong score is never shown instead; the decrypted
    indicators of the nodes holding records are in ``indicators`` and the coordinator's
    answer in ``answer``, so nothing the query spent is lost."""

    def __init__(
        self, query_id: str, node: str, reason: str, indicators: list[Any], answer: dict[str, Any]
    ) -> None:
        super().__init__(
            f"query {query_id}: no score, the tree model's scoring chain failed at node "
            f"{node}: {reason}"
        )
        self.query_id = query_id
        self.node = node
        self.reason = reason
        self.indicators = indicators
        self.answer = answer


class AlertBatchError(ClientError):
    """A stored alert whose sealed batch does not open with the bank's alert key under
    the subscription, node and cycle it is listed with, or opens but names others.

    Either the coordinator moved or altered it, or it was sealed to another key (a
    subscription made with an earlier alert key). Never skipped silently: an event in
    it would be lost. ``cursor`` is the alert's cursor, to report or to resume after."""

    def __init__(self, cursor: str, reason: str) -> None:
        super().__init__(f"alert at cursor {cursor}: {reason}")
        self.cursor = cursor
        self.reason = reason


class WebhookSignatureError(ClientError):
    """A webhook call that does not carry a valid Standard Webhooks signature under the
    bank's secret (missing headers, a timestamp outside the tolerance, no matching
    signature): answer it 4xx and process nothing from it."""
