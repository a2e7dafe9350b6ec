"""Canonical JSON bytes: the one encoding that signatures and ledger leaves commit to.

Sorted keys, no insignificant whitespace, UTF-8: two parties that agree on a
document agree on its bytes, so a signature or a leaf hash means one thing.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["canonical_json", "parse_canonical"]


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
