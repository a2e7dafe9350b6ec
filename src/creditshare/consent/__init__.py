"""Consent artefacts signed by enterprises; shared by the SDK (signs) and coordinator (checks)."""

from creditshare.consent._grant import (
    ALL_INDICATORS,
    MAX_INDICATOR_NAME,
    MAX_INDICATORS,
    ConsentGrant,
    Purpose,
    SignedConsent,
    format_time,
    parse_time,
)

__all__ = [
    "ALL_INDICATORS",
    "MAX_INDICATORS",
    "MAX_INDICATOR_NAME",
    "ConsentGrant",
    "Purpose",
    "SignedConsent",
    "format_time",
    "parse_time",
]
