"""Consent artefacts signed by enterprises, and the rules that decide whether one covers
a query; shared by the SDK (signs) and the coordinator (stores, checks, counts)."""

from creditshare._canonical import format_time, parse_time
from creditshare.consent._check import ConsentState, check
from creditshare.consent._grant import (
    ALL_INDICATORS,
    MAX_INDICATOR_NAME,
    MAX_INDICATORS,
    MAX_USES,
    ConsentGrant,
    Purpose,
    SignedConsent,
)
from creditshare.consent._revocation import ConsentRevocation

__all__ = [
    "ALL_INDICATORS",
    "MAX_INDICATORS",
    "MAX_INDICATOR_NAME",
    "MAX_USES",
    "ConsentGrant",
    "ConsentRevocation",
    "ConsentState",
    "Purpose",
    "SignedConsent",
    "check",
    "format_time",
    "parse_time",
]
