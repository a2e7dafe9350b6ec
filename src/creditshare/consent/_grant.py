"""The consent artefact: what an enterprise signs to let one grantee use its data.

Modelled on India's Account Aggregator consent artefact: a purpose, a data scope
(chains and indicators), a validity window and a use limit, signed by the data
subject. The signature covers canonical bytes, and the consent id is a hash of
them, so neither the coordinator nor the grantee can alter a grant unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from creditshare._canonical import canonical_json, format_time, parse_time
from creditshare.crypto import SigningKey, VerifyKey, decode_signature
from creditshare.errors import InvalidInputError
from creditshare.identity import Chain, Uscc

__all__ = ["ALL_INDICATORS", "MAX_USES", "ConsentGrant", "Purpose", "SignedConsent"]

ALL_INDICATORS = "*"
_DOMAIN = b"creditshare/consent/v1\n"
#: Indicator names one consent may list, and their length: a consent's scope is
#: written into every ledger record that uses it, so it must stay small.
MAX_INDICATORS = 32
MAX_INDICATOR_NAME = 48
#: The largest use limit a consent may carry: what the database's integer column holds.
MAX_USES = 2**31 - 1


class Purpose(StrEnum):
    PRE_LOAN_REVIEW = "pre_loan_review"
    POST_LOAN_MONITORING = "post_loan_monitoring"
    MODEL_TRAINING = "model_training"


@dataclass(frozen=True, slots=True)
class ConsentGrant:
    uscc: str
    grantee: str
    purpose: Purpose
    chains: tuple[Chain, ...]
    indicators: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime
    max_uses: int | None
    nonce: str

    @classmethod
    def create(
        cls,
        uscc: str,
        grantee: str,
        purpose: Purpose | str,
        valid_from: datetime,
        valid_until: datetime,
        chains: tuple[Chain | str, ...] = tuple(Chain),
        indicators: tuple[str, ...] = (ALL_INDICATORS,),
        max_uses: int | None = None,
    ) -> ConsentGrant:
        grant = cls.from_document(
            {
                "uscc": uscc,
                "grantee": grantee,
                "purpose": str(purpose),
                "chains": [str(c) for c in chains],
                "indicators": list(indicators),
                "valid_from": format_time(valid_from),
                "valid_until": format_time(valid_until),
                "max_uses": max_uses,
                "nonce": secrets.token_hex(16),
            }
        )
        return grant

    def to_document(self) -> dict[str, Any]:
        return {
            "uscc": self.uscc,
            "grantee": self.grantee,
            "purpose": self.purpose.value,
            "chains": [c.value for c in self.chains],
            "indicators": list(self.indicators),
            "valid_from": format_time(self.valid_from),
            "valid_until": format_time(self.valid_until),
            "max_uses": self.max_uses,
            "nonce": self.nonce,
        }

    @classmethod
    def from_document(cls, doc: Any) -> ConsentGrant:
        if not isinstance(doc, dict):
            raise InvalidInputError("consent document must be a JSON object")
        expected = {
            "uscc",
            "grantee",
            "purpose",
            "chains",
            "indicators",
            "valid_from",
            "valid_until",
            "max_uses",
            "nonce",
        }
        if set(doc) != expected:
            missing = sorted(expected - set(doc))
            extra = sorted(set(doc) - expected)
            raise InvalidInputError(
                f"consent document fields: missing {missing or 'none'}, "
                f"unexpected {extra or 'none'}"
            )
        uscc = str(Uscc.parse(str(doc["uscc"])))
        grantee = doc["grantee"]
        if not isinstance(grantee, str) or not grantee:
            raise InvalidInputError("consent grantee must be a participant id")
        try:
            purpose = Purpose(doc["purpose"])
        except ValueError:
            options = ", ".join(p.value for p in Purpose)
            raise InvalidInputError(f"consent purpose must be one of {options}") from None
        chains_raw = doc["chains"]
        if not isinstance(chains_raw, list) or not chains_raw:
            raise InvalidInputError("consent chains must be a non-empty list")
        try:
            chains = tuple(sorted({Chain(c) for c in chains_raw}))
        except ValueError:
            raise InvalidInputError(
                f"consent chains must be among {[c.value for c in Chain]}"
            ) from None
        indicators = doc["indicators"]
        if (
            not isinstance(indicators, list)
            or not indicators
            or len(indicators) > MAX_INDICATORS
            or not all(isinstance(i, str) and 0 < len(i) <= MAX_INDICATOR_NAME for i in indicators)
        ):
            raise InvalidInputError(
                f"consent indicators must be a list of 1 to {MAX_INDICATORS} names of 1 to "
                f"{MAX_INDICATOR_NAME} characters, or ['*']"
            )
        valid_from = parse_time(doc["valid_from"], "valid_from")
        valid_until = parse_time(doc["valid_until"], "valid_until")
        if valid_until <= valid_from:
            raise InvalidInputError("consent valid_until must be after valid_from")
        max_uses = doc["max_uses"]
        if max_uses is not None and (
            isinstance(max_uses, bool)
            or not isinstance(max_uses, int)
            or not 1 <= max_uses <= MAX_USES
        ):
            raise InvalidInputError(
                f"consent max_uses must be an integer from 1 to {MAX_USES}, or null"
            )
        nonce = doc["nonce"]
        if not isinstance(nonce, str) or not 8 <= len(nonce) <= 64:
            raise InvalidInputError("consent nonce must be a string of 8 to 64 characters")
        return cls(
            uscc,
            grantee,
            purpose,
            chains,
            tuple(sorted(set(indicators))),
            valid_from,
            valid_until,
            max_uses,
            nonce,
        )

    def signed_bytes(self) -> bytes:
        return _DOMAIN + canonical_json(self.to_document())

    @property
    def consent_id(self) -> str:
        return hashlib.sha256(self.signed_bytes()).hexdigest()[:32]

    def covers_indicator(self, name: str) -> bool:
        return ALL_INDICATORS in self.indicators or name in self.indicators

    def sign(self, key: SigningKey) -> SignedConsent:
        return SignedConsent(self, key.sign(self.signed_bytes()))


@dataclass(frozen=True, slots=True)
class SignedConsent:
    grant: ConsentGrant
    signature: bytes

    def verify(self, key: VerifyKey) -> None:
        """Raises InvalidSignatureError unless ``key`` signed exactly this grant."""
        key.verify(self.signature, self.grant.signed_bytes())

    def to_json(self) -> dict[str, Any]:
        return {
            "document": self.grant.to_document(),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, body: Any) -> SignedConsent:
        if not isinstance(body, dict) or set(body) != {"document", "signature"}:
            raise InvalidInputError("a signed consent is {document, signature}")
        signature = decode_signature(body["signature"], "consent")
        return cls(ConsentGrant.from_document(body["document"]), signature)
