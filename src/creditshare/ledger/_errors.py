"""Errors that only the ledger raises, below ``LedgerError`` in ``creditshare.errors``.

They live here rather than in ``errors.py`` because only ledger code and its
callers need them; they still derive from ``LedgerError`` so the HTTP and gRPC
edges that already map ``LedgerError`` keep working without a change::

    LedgerError
    ├── EmptyLogError          the log has no entries, so there is no signed head yet
    └── StaleTreeHeadError     the head (or its proof) is older than the trusted one: retry
"""

from __future__ import annotations

from creditshare.errors import LedgerError

__all__ = ["EmptyLogError", "StaleTreeHeadError"]


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
