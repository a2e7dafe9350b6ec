"""Decrypting a coordinator answer into a credit profile the bank can read.

Only nodes whose decrypted presence flag is 1 contribute indicators to the
profile: a node without a record answers encryptions of zero, which would
otherwise read as "grade A, no arrears".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from creditshare.crypto import Ciphertext, FixedPointEncoding, PrivateKey, SlotLayout
from creditshare.departments import PRESENCE_INDICATOR
from creditshare.errors import ClientError, CreditShareError, ScoreUnavailableError

__all__ = [
    "DEFAULT_MODEL_ID",
    "PRESENCE_INDICATOR",
    "CreditProfile",
    "Indicator",
    "ScoreScale",
    "decrypt_profile",
    "probability_of_default",
]


#: The model queries and score_change subscriptions use unless told another.
DEFAULT_MODEL_ID = "sme-scorecard-v1"


@dataclass(frozen=True, slots=True)
class ScoreScale:
    """points = base − (pdo / ln 2)·(linear + ln base_odds), clamped to [minimum, maximum]."""

    base_score: float = 600.0
    base_odds: float = 50.0
    points_to_double_odds: float = 40.0
    minimum: float = 300.0
    maximum: float = 900.0

    def __post_init__(self) -> None:
        if not (self.base_odds > 0 and self.points_to_double_odds > 0):
            raise ClientError("score scale needs positive base_odds and points_to_double_odds")
        if self.minimum >= self.maximum:
            raise ClientError("score scale minimum must be below its maximum")

    def points(self, linear: float) -> int:
        factor = self.points_to_double_odds / math.log(2)
        raw = self.base_score - factor * (linear + math.log(self.base_odds))
        return round(min(self.maximum, max(self.minimum, raw)))


def probability_of_default(linear: float) -> float:
    """Logistic link, computed without overflow for large |linear|."""
    if linear >= 0:
        return 1.0 / (1.0 + math.exp(-linear))
    z = math.exp(linear)
    return z / (1.0 + z)


@dataclass(frozen=True, slots=True)
class Indicator:
    node: str
    chain: str
    department: str
    name: str
    description: str
    value: float
    label: str | None


@dataclass(frozen=True, slots=True)
class CreditProfile:
    query_id: str
    uscc: str
    model_id: str
    linear_score: float
    probability_of_default: float
    score: int
    nodes_with_records: list[str]
    indicators: list[Indicator]
    answered: list[str]
    failed: list[dict[str, str]]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def chains_with_records(self) -> list[str]:
        return sorted({i.chain for i in self.indicators if i.name == PRESENCE_INDICATOR})


def _label(value: float, bands: list[str]) -> str | None:
    index = round(value)
    if bands and abs(value - index) < 1e-6 and 0 <= index < len(bands):
        return bands[index]
    return None


def decrypt_profile(body: dict[str, Any], key: PrivateKey) -> CreditProfile:
    """Decrypt a coordinator answer; a malformed body is a ClientError, never a KeyError.

    An answer without a score (a tree model's scoring chain failed at a node) raises
    ``ScoreUnavailableError`` naming the node, with the decrypted indicators attached:
    a profile never carries a score that is not the model's."""
    try:
        return _decrypt_profile(body, key)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, CreditShareError):
            raise
        raise ClientError(f"malformed answer from the coordinator: {exc!r}") from exc


def _decrypt_profile(body: dict[str, Any], key: PrivateKey) -> CreditProfile:
    public = key.public_key
    if body.get("public_key_fingerprint") != public.fingerprint():
        raise ClientError("the answer was encrypted for a different public key")
    encoding = FixedPointEncoding(int(body["scale"]))

    def open_(text: str) -> float:
        return encoding.decrypt(Ciphertext.from_text(public, text), key)

    packing = body.get("packing")
    if packing:
        # One decryption per packed ciphertext opens every slot at once.
        layout = SlotLayout(
            int(packing["slot_bits"]),
            int(packing["slots_per_ciphertext"]),
            int(packing["additions"]),
        )
        slots: list[int] = []
        for text in packing["ciphertexts"]:
            ciphertext = Ciphertext.from_text(public, text)
            total = FixedPointEncoding.decode_integer(key.raw_decrypt(ciphertext.value), public)
            slots.extend(layout.unpack(total))
        linear = slots[0] / encoding.scale
        decrypted = [
            (item, slots[int(item["slot"])] / encoding.scale) for item in body["indicators"]
        ]
    else:
        missing = body.get("score_unavailable")
        linear = 0.0 if missing else open_(body["encrypted_score"])
        decrypted = [(item, open_(item["ciphertext"])) for item in body["indicators"]]
    scale = ScoreScale(**body["score_scale"])
    present = {
        item["node"]
        for item, value in decrypted
        if item["name"] == PRESENCE_INDICATOR and round(value) == 1
    }
    indicators = [
        Indicator(
            node=item["node"],
            chain=item["chain"],
            department=item["department"],
            name=item["name"],
            description=item["description"],
            value=value,
            label=_label(value, item["bands"]),
        )
        for item, value in decrypted
        if item["node"] in present
    ]
    missing = body.get("score_unavailable")
    if missing:
        raise ScoreUnavailableError(
            str(body["query_id"]), str(missing["node"]), str(missing["reason"]), indicators, body
        )
    return CreditProfile(
        query_id=body["query_id"],
        uscc=body["uscc"],
        model_id=body["model_id"],
        linear_score=linear,
        probability_of_default=probability_of_default(linear),
        score=scale.points(linear),
        nodes_with_records=sorted(present),
        indicators=indicators,
        answered=list(body["coverage"]["answered"]),
        failed=[dict(f) for f in body["coverage"]["failed"]],
        raw=body,
    )
