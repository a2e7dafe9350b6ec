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
from creditshare.monitoring import Signal, SignalChoice, choices_from_json
from creditshare.signed._statements import (
    _CHAIN,
    _CONSENT_ID,
    _FINGERPRINT,
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
    model_id: str = "",
    key_fingerprint: str = "",
) -> dict[str, Any]:
    """The document a bank signs to subscribe (``chains`` empty: the consent's).

    ``model_id`` and ``key_fingerprint`` (the bank's registered Paillier key) are set
    exactly when ``score_change`` is among the signals: nodes encrypt their share of
    that model's score under that key every cycle, and under no other."""
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
            "model_id": model_id,
            "key_fingerprint": key_fingerprint,
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
        "model_id",
        "key_fingerprint",
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
        scored = any(c.signal is Signal.SCORE_CHANGE for c in choices)
        model, fingerprint = doc.get("model_id"), doc.get("key_fingerprint")
        if scored:
            _text(doc, "model_id", _ID, "a model id (score_change is watched)")
            _text(doc, "key_fingerprint", _FINGERPRINT, "a Paillier key fingerprint")
        elif model != "" or fingerprint != "":
            raise InvalidInputError(
                "signed subscription fields 'model_id' and 'key_fingerprint' are empty unless "
                "score_change is watched"
            )
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
    def model_id(self) -> str:
        """The model whose score is watched ("" unless score_change is among the signals)."""
        return str(self.document["model_id"])

    @property
    def key_fingerprint(self) -> str:
        """The Paillier key nodes encrypt score shares under ("" without score_change)."""
        return str(self.document["key_fingerprint"])

    @property
    def alert_key(self) -> AlertPublicKey:
        return AlertPublicKey.from_text(self.document["alert_key"])

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical ``{document, signature}``: what a cycle commits to."""
        return hashlib.sha256(canonical_json(self.to_json())).hexdigest()
