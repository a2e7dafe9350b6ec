"""An enterprise checking its own access log against the signed ledger.

Each entry must (1) hash to the leaf the proof starts from, (2) be included in
a tree head (3) signed by the pinned log key, and (4) concern this enterprise.
An entry failing any check is reported, not silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from creditshare.crypto import VerifyKey
from creditshare.errors import ClientError, CreditShareError
from creditshare.ledger import QueryRecord, SignedTreeHead, parse_entry, parse_record

__all__ = ["AccessEntry", "verify_access_log"]


@dataclass(frozen=True, slots=True)
class AccessEntry:
    index: int
    record: QueryRecord
    tree_size: int
    verified: bool
    problem: str = ""
    #: The signed head the entry is proven under (None if the entry was malformed).
    head: SignedTreeHead | None = None
    #: Witnesses whose cosigned head extends ``head`` (empty: unwitnessed).
    witnessed_by: tuple[str, ...] = ()


def verify_access_log(
    entries: list[dict[str, Any]], uscc: str, log_key: VerifyKey
) -> list[AccessEntry]:
    result: list[AccessEntry] = []
    for entry in entries:
        try:
            receipt = parse_entry(entry)  # the server's own form, bounded and strict
            record = parse_record(receipt.data)
        except CreditShareError as exc:
            raise ClientError(f"malformed access-log entry: {exc}") from exc
        problem = ""
        try:
            receipt.verify(log_key.cryptography_key)
            if record.uscc != uscc:
                problem = "entry concerns another enterprise"
        except CreditShareError as exc:
            problem = str(exc)
        result.append(
            AccessEntry(
                receipt.index, record, receipt.head.size, not problem, problem, receipt.head
            )
        )
    return result
