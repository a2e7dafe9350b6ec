"""A bank's signed monitoring subscription: whom it watches, for what, sealed to which key.

Nodes register a subscription only from the bank's signature over this document (and
the enterprise's signed ``post_loan_monitoring`` consent it names), so a coordinator
cannot widen the signals, change the enterprise or put its own alert key in: the
``alert_key`` here is the only key a node ever seals that subscription's batches to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from creditshare._canonical import canonical_json, format_time, parse_time
from creditshare.crypto import AlertPublicKey
from creditshare.errors import InvalidInputError
from creditshare.monitoring import SignalChoice, choices_from_json
from creditshare.signed._statements import (
    _CHAIN,
    _CONSENT_ID,
    _ID,
    _REQUEST_ID,
    _USCC,
    _fields,
    _list,
    _Signed,
    _text,
)

__all__ = ["SignedSubscription", "subscription_document"]


def subscription_document(
    *,
    subscription_id: str,
    requester: str,
    uscc: str,
    consent_id: str,
    chains: list[str] | tuple[str, ...],
    signals: tuple[SignalChoice, ...] | list[SignalChoice],
    alert_key: AlertPublicKey,
    time: datetime,
) -> dict[str, Any]:
    """The document a bank signs to subscribe (``chains`` empty: the consent's)."""
    return SignedSubscription.checked(
        {
            "v": 1,
            "type": "subscription",
            "subscription_id": subscription_id,
            "requester": requester,
            "uscc": uscc,
            "purpose": "post_loan_monitoring",
            "consent_id": consent_id,
            "chains": sorted(set(chains)),
            "signals": [c.to_json() for c in sorted(signals)],
            "alert_key": alert_key.to_text(),
            "time": format_time(time),
        }
    )


@dataclass(frozen=True, slots=True)
class SignedSubscription(_Signed):
    """A bank's signed subscription to one enterprise's risk events."""

    DOMAIN: ClassVar[bytes] = b"creditshare/signed-subscription/v1\n"
    NAME: ClassVar[str] = "subscription"
    _FIELDS: ClassVar[set[str]] = {
        "v",
        "type",
        "subscription_id",
        "requester",
        "uscc",
        "purpose",
        "consent_id",
        "chains",
        "signals",
        "alert_key",
        "time",
    }

    @classmethod
    def checked(cls, body: Any) -> dict[str, Any]:
        doc = _fields(body, cls._FIELDS, "subscription")
        _text(doc, "subscription_id", _REQUEST_ID, "32 lowercase hex digits")
        _text(doc, "requester", _ID, "a participant id")
        _text(doc, "uscc", _USCC, "an 18-character USCC")
        _text(doc, "consent_id", _CONSENT_ID, "32 lowercase hex digits")
        _list(doc, "chains", _CHAIN, 8)
        if doc.get("purpose") != "post_loan_monitoring":
            raise InvalidInputError("a subscription's purpose must be post_loan_monitoring")
        choices = choices_from_json(doc.get("signals"), "signed subscription field 'signals'")
        if doc["signals"] != [c.to_json() for c in choices]:
            raise InvalidInputError(
                "signed subscription field 'signals' must be sorted by type, thresholds filled"
            )
        if not isinstance(doc.get("alert_key"), str):
            raise InvalidInputError("signed subscription field 'alert_key' must be base64 text")
        AlertPublicKey.from_text(doc["alert_key"])
        parse_time(doc.get("time"), "time")
        return doc

    @property
    def subscription_id(self) -> str:
        return str(self.document["subscription_id"])

    @property
    def uscc(self) -> str:
        return str(self.document["uscc"])

    @property
    def consent_id(self) -> str:
        return str(self.document["consent_id"])

    @property
    def chains(self) -> tuple[str, ...]:
        return tuple(self.document["chains"])

    @property
    def signals(self) -> tuple[SignalChoice, ...]:
        return choices_from_json(self.document["signals"])

    @property
    def alert_key(self) -> AlertPublicKey:
        return AlertPublicKey.from_text(self.document["alert_key"])

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical ``{document, signature}``: what a cycle commits to."""
        return hashlib.sha256(canonical_json(self.to_json())).hexdigest()
