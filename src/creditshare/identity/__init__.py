"""Enterprise identity: the USCC every record is keyed by, and the chain it belongs to."""

from __future__ import annotations

from creditshare.identity.chains import (
    DIVISIONS,
    PROVINCE_NAMES,
    Chain,
    Division,
    chain_for_province,
)
from creditshare.identity.uscc import (
    ALPHABET,
    USCC_LENGTH,
    InvalidUsccError,
    Uscc,
    check_character,
    is_valid_uscc,
    make_uscc,
)

__all__ = [
    "ALPHABET",
    "DIVISIONS",
    "PROVINCE_NAMES",
    "USCC_LENGTH",
    "Chain",
    "Division",
    "InvalidUsccError",
    "Uscc",
    "chain_for_province",
    "check_character",
    "is_valid_uscc",
    "make_uscc",
]
