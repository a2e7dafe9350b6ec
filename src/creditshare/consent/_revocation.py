"""An enterprise's signed withdrawal of one consent.

Signed, so a node can believe it without believing the coordinator that carried it,
and refuse the consent from then on even if the coordinator later "forgets" it. Its
own domain prefix keeps it from being mistaken for any other signed document.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from creditshare._canonical import canonical_json, format_time, parse_time
from creditshare.crypto import SigningKey, VerifyKey, decode_signature
from creditshare.errors import InvalidInputError
from creditshare.identity import Uscc

__all__ = ["ConsentRevocation"]

_DOMAIN = b"creditshare/consent-revocation/v1\n"
_CONSENT_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class ConsentRevocation:
    consent_id: str
    uscc: str
    time: datetime
    signature: bytes = b""

    def document(self) -> dict[str, Any]:
        return {
            "v": 1,
            "type": "consent_revocation",
            "consent_id": self.consent_id,
            "uscc": self.uscc,
            "time": format_time(self.time),
        }

    def signed_bytes(self) -> bytes:
        return _DOMAIN + canonical_json(self.document())

    @classmethod
    def create(
        cls, consent_id: str, uscc: str, time: datetime, key: SigningKey
    ) -> ConsentRevocation:
        unsigned = cls.from_document(
            {
                "v": 1,
                "type": "consent_revocation",
                "consent_id": consent_id,
                "uscc": uscc,
                "time": format_time(time),
            }
        )
        return cls(
            unsigned.consent_id, unsigned.uscc, unsigned.time, key.sign(unsigned.signed_bytes())
        )

    def verify(self, key: VerifyKey) -> None:
        """InvalidSignatureError unless ``key`` signed exactly this revocation."""
        key.verify(self.signature, self.signed_bytes())

    @classmethod
    def from_document(cls, doc: Any, signature: bytes = b"") -> ConsentRevocation:
        if not isinstance(doc, dict) or set(doc) != {"v", "type", "consent_id", "uscc", "time"}:
            raise InvalidInputError(
                "a consent revocation document is {v, type, consent_id, uscc, time}"
            )
        if doc["v"] != 1 or doc["type"] != "consent_revocation":
            raise InvalidInputError("not a version 1 consent revocation")
        consent_id = doc["consent_id"]
        if not isinstance(consent_id, str) or not _CONSENT_ID.fullmatch(consent_id):
            raise InvalidInputError("consent revocation consent_id must be 32 lowercase hex digits")
        uscc = str(Uscc.parse(str(doc["uscc"])))
        return cls(consent_id, uscc, parse_time(doc["time"], "time"), signature)

    def to_json(self) -> dict[str, Any]:
        return {
            "document": self.document(),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, body: Any) -> ConsentRevocation:
        if not isinstance(body, dict) or set(body) != {"document", "signature"}:
            raise InvalidInputError("a signed consent revocation is {document, signature}")
        return cls.from_document(
            body["document"], decode_signature(body["signature"], "revocation")
        )
