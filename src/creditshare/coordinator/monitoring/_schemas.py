"""Request and response bodies of the monitoring routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field, StrictInt, field_validator

from creditshare.coordinator._schemas import (
    CONSENT_ID_PATTERN,
    REQUEST_ID_PATTERN,
    SIGNATURE_PATTERN,
    InputModel,
)
from creditshare.identity import Chain
from creditshare.monitoring import MAX_SIGNALS

__all__ = [
    "AlertOut",
    "AlertPageOut",
    "CycleNodeOut",
    "CycleOut",
    "DeliveryOut",
    "SignalIn",
    "SignalOut",
    "SubscriptionIn",
    "SubscriptionNodeOut",
    "SubscriptionOut",
    "ThresholdOut",
    "WebhookIn",
    "WebhookOut",
]


class SignalIn(InputModel):
    type: str = Field(
        min_length=1, max_length=64, description="a signal type (GET /v1/signals lists them)"
    )
    threshold: StrictInt | None = Field(
        default=None, description="the signal's threshold (default: the signal's own)"
    )


class ThresholdOut(BaseModel):
    minimum: int
    maximum: int
    default: int


class SignalOut(BaseModel):
    type: str
    severity: Literal["low", "medium", "high"]
    rule: str
    description: str
    threshold: ThresholdOut | None = Field(description="null: the signal takes no threshold")
    nodes: list[str] = Field(description="the nodes that raise it (from their schemas)")
    chains: list[Chain]


class SubscriptionIn(InputModel):
    subscription_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="chosen by the bank (128 random bits, lowercase hex); part of what it signs",
    )
    uscc: str = Field(min_length=1, max_length=64, description="the enterprise watched")
    consent_id: str = Field(
        pattern=CONSENT_ID_PATTERN, description="the enterprise's post_loan_monitoring consent"
    )
    chains: list[Chain] | None = Field(
        default=None, max_length=len(Chain), description="default: the consent's chains"
    )
    signals: list[SignalIn] = Field(min_length=1, max_length=MAX_SIGNALS)
    alert_key: str = Field(
        min_length=1, max_length=64, description="base64 X25519 public key alerts are sealed to"
    )
    model_id: str | None = Field(
        default=None,
        max_length=64,
        description="with score_change: the model whose score is watched (part of what is signed)",
    )
    key_fingerprint: str | None = Field(
        default=None,
        max_length=64,
        description="with score_change: the bank's registered Paillier key the score shares are "
        "encrypted under (part of what is signed)",
    )
    requested_at: AwareDatetime = Field(description="when the bank signed the subscription")
    signature: str = Field(
        pattern=SIGNATURE_PATTERN,
        description="base64 Ed25519 signature over the signed-subscription document",
    )

    @field_validator("chains")
    @classmethod
    def _distinct(cls, chains: list[Chain] | None) -> list[Chain] | None:
        return None if chains is None else sorted(set(chains))


class SubscriptionNodeOut(BaseModel):
    node: str
    registered: bool


class SubscriptionOut(BaseModel):
    subscription_id: str
    uscc: str
    consent_id: str
    chains: list[str]
    signals: list[dict[str, str | int | None]]
    alert_key_fingerprint: str
    model_id: str = Field(default="", description="score_change: the model whose score is watched")
    status: Literal["active", "ended"]
    created_at: datetime
    ended_at: datetime | None
    ended_reason: str
    ledger_index: int
    nodes: list[SubscriptionNodeOut]


class CycleNodeOut(BaseModel):
    node: str
    batches: int
    unknown: int
    ended: int
    error: str | None


class CycleOut(BaseModel):
    number: int
    ledger_index: int
    started_at: datetime
    finished_at: datetime | None
    subscriptions: int
    nodes: list[CycleNodeOut]


class AlertOut(BaseModel):
    cursor: str
    subscription_id: str
    node: str
    chain: str
    department: str
    cycle: int
    stored_at: str
    sealed: str = Field(
        description="base64 HPKE-sealed batch (only the bank's alert key opens it); empty for a "
        "score"
    )
    kind: Literal["batch", "score"] = Field(
        description="batch: one node's sealed batch; score: the subscription's encrypted score "
        "this cycle (score_change)"
    )
    encrypted_score: str | None = Field(
        default=None,
        description="score: Enc(linear score) under the bank's Paillier key, all nodes' shares "
        "and the model's intercept added",
    )
    scale: int | None = Field(default=None, description="score: its fixed-point scale")
    model_id: str | None = None
    score_scale: dict[str, float] | None = Field(
        default=None, description="score: the model's published scale (linear to points)"
    )
    threshold: int | None = Field(default=None, description="score: the points that make an alert")


class AlertPageOut(BaseModel):
    alerts: list[AlertOut]
    next_cursor: str = Field(description="pass as ?after= to read on (unchanged: nothing new)")


class WebhookIn(InputModel):
    url: str = Field(min_length=1, max_length=2000)


class WebhookOut(BaseModel):
    url: str
    created_at: datetime
    secret: str | None = Field(
        default=None, description="shown once, when the webhook is set: verify calls with it"
    )


class DeliveryOut(BaseModel):
    webhook_id: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    alerts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
