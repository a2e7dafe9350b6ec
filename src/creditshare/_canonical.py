"""Canonical JSON bytes and times: the one encoding that signatures and ledger leaves
commit to.

Sorted keys, no insignificant whitespace, UTF-8: two parties that agree on a
document agree on its bytes, so a signature or a leaf hash means one thing. Times
inside such documents are whole UTC seconds written one way (``2026-01-31T12:00:00Z``)
for the same reason; consents and ledger records both use them.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from creditshare.errors import InvalidInputError

__all__ = ["canonical_json", "format_time", "parse_canonical", "parse_time"]

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: ``_TIME_FORMAT`` as ``format_time`` writes it (zero-padded); other text strptime reads.
_CANONICAL_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


def canonical_json(document: Any) -> bytes:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def parse_canonical(data: bytes) -> Any:
    """Parse bytes that must already be canonical (a re-encoding must give them back)."""
    document = json.loads(data.decode("utf-8"))
    if canonical_json(document) != data:
        raise ValueError("document is not in canonical form")
    return document


def format_time(moment: datetime) -> str:
    """A timezone-aware moment as whole UTC seconds (naive times are refused: ambiguous)."""
    if moment.tzinfo is None:
        raise InvalidInputError("times must be timezone-aware")
    return moment.astimezone(UTC).replace(microsecond=0).strftime(_TIME_FORMAT)


def parse_time(text: Any, field: str) -> datetime:
    """The inverse of ``format_time``; ``field`` names the value in the error."""
    if not isinstance(text, str):
        raise InvalidInputError(f"{field} must be an ISO 8601 UTC time string")
    try:
        canonical = _CANONICAL_TIME.fullmatch(text)
        if canonical is not None:
            # What format_time writes, read without strptime (~20x slower): every
            # request and receipt carries several times and is checked at each node.
            year, month, day, hour, minute, second = map(int, canonical.groups())
            return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInputError(
            f"{field} must look like 2026-01-31T12:00:00Z, got {text[:40]!r}"
        ) from None
