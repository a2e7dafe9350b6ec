"""Errors that only the ledger raises, below ``LedgerError`` in ``creditshare.errors``.

They live here rather than in ``errors.py`` because only ledger code and its
callers need them; they still derive from ``LedgerError`` so the HTTP and gRPC
edges that already map ``LedgerError`` keep working without a change::

    LedgerError
    ├── EmptyLogError          the log has no entries, so there is no signed head yet
    └── StaleTreeHeadError     the head (or its proof) is older than the trusted one: retry

``LedgerIntegrityError`` (storage no longer extends the last signed head) is in
``errors.py`` because the HTTP edge maps it to 503; ``integrity_error`` builds it
with the one wording every check uses, which names the operator's next step.
"""

from __future__ import annotations

from creditshare.errors import LedgerError, LedgerIntegrityError

__all__ = ["VERIFY_COMMAND", "EmptyLogError", "StaleTreeHeadError", "integrity_error"]

#: The command an operator runs to see every problem in the stored log.
VERIFY_COMMAND = "creditshare ledger verify --config FILE"


def integrity_error(what: str) -> LedgerIntegrityError:
    """``LedgerIntegrityError`` saying ``what`` mismatched, that signing stops, and how
    to inspect it. ``what`` names indices and sizes only, never record contents."""
    return LedgerIntegrityError(
        f"the stored ledger does not extend its last signed tree head: {what}. "
        f"The coordinator signs nothing until it is restarted on a database that does; "
        f"inspect it with `{VERIFY_COMMAND}`"
    )


class EmptyLogError(LedgerError):
    """The log has no entries: there is no signed tree head to return or prove against.

    A distinct class so that an edge can answer "not found" for it rather than the
    generic ledger failure.
    """


class StaleTreeHeadError(LedgerError):
    """A tree head, or the proof offered with it, starts from an out-of-date size.

    This is not evidence of a fork: the sender raced with another head (or proved
    from a size the receiver no longer trusts). ``trusted_size`` tells the sender
    which size to prove from when it retries.
    """

    def __init__(self, message: str, trusted_size: int) -> None:
        super().__init__(message)
        self.trusted_size = trusted_size
