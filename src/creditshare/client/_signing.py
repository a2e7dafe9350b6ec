"""The signed fields a query or training job carries, for a given body.

The SDK calls these for every request; they are public for anyone who builds request
bodies by hand (a risk engine in another language re-implements exactly this: the
document, its canonical JSON, the domain prefix, an Ed25519 signature).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from creditshare.client._identity import Identity
from creditshare.crypto import AlertPublicKey
from creditshare.federated import TrainingConfig
from creditshare.identity import Uscc
from creditshare.monitoring import choices_from_json
from creditshare.signed import (
    SignedQuery,
    SignedSubscription,
    SignedTrainingJob,
    query_document,
    subscription_document,
    training_document,
)
from creditshare.trees import TreeConfig

__all__ = ["sign_job", "sign_query", "sign_subscription"]


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def sign_query(identity: Identity, body: Mapping[str, Any]) -> dict[str, str]:
    """``query_id``, ``requested_at`` and ``signature`` for a POST /v1/queries ``body``."""
    query_id, now = secrets.token_hex(16), _now()
    document = query_document(
        query_id=query_id,
        requester=identity.participant_id,
        uscc=str(Uscc.parse(str(body["uscc"]))),
        purpose=str(body["purpose"]),
        consent_id=str(body["consent_id"]),
        chains=[str(c) for c in body.get("chains") or ()],
        model_id=str(body["model_id"]),
        key_fingerprint=str(body["key_fingerprint"]),
        time=now,
    )
    return _fields("query_id", SignedQuery.sign(document, identity.signing_key))


def sign_job(identity: Identity, body: Mapping[str, Any]) -> dict[str, str]:
    """``job_id``, ``requested_at``, ``config_sha256`` and ``signature`` for a POST
    /v1/training-jobs ``body``.

    The signature covers the body's ``config`` (absent: the logistic defaults; with
    ``"model_type": "gbdt"``: a ``TreeConfig``) by its hash, so every node trains with
    exactly these settings or refuses the job.
    """
    job_id, now = secrets.token_hex(16), _now()
    settings = body.get("config") or {}
    config = (
        TreeConfig.from_document(settings)
        if settings.get("model_type") == "gbdt"
        else TrainingConfig.from_document(settings)
    )
    config_sha256 = config.digest()
    document = training_document(
        job_id=job_id,
        requester=identity.participant_id,
        key_fingerprint=str(body["key_fingerprint"]),
        nodes=[str(n) for n in body["nodes"]],
        config_sha256=config_sha256,
        time=now,
    )
    signed = SignedTrainingJob.sign(document, identity.signing_key)
    return _fields("job_id", signed) | {"config_sha256": config_sha256}


def sign_subscription(identity: Identity, body: Mapping[str, Any]) -> dict[str, str]:
    """``subscription_id``, ``requested_at`` and ``signature`` for a POST /v1/subscriptions
    ``body`` (its ``signals`` as canonical ``[{type, threshold}]``, ``alert_key`` base64).

    The signature covers the alert key: nodes seal this subscription's alerts to that
    key and no other, so a relay cannot substitute its own. With score_change it covers
    ``model_id`` and ``key_fingerprint`` (the bank's Paillier key) the same way.
    """
    subscription_id, now = secrets.token_hex(16), _now()
    document = subscription_document(
        subscription_id=subscription_id,
        requester=identity.participant_id,
        uscc=str(Uscc.parse(str(body["uscc"]))),
        consent_id=str(body["consent_id"]),
        chains=[str(c) for c in body.get("chains") or ()],
        signals=choices_from_json(list(body["signals"])),
        alert_key=AlertPublicKey.from_text(str(body["alert_key"])),
        time=now,
        model_id=str(body.get("model_id", "")),
        key_fingerprint=str(body.get("key_fingerprint", "")),
    )
    return _fields("subscription_id", SignedSubscription.sign(document, identity.signing_key))


def _fields(
    id_field: str, signed: SignedQuery | SignedTrainingJob | SignedSubscription
) -> dict[str, str]:
    """The body fields that carry a signed document's id, time and signature."""
    wire = signed.to_json()
    return {
        id_field: wire["document"][id_field],
        "requested_at": wire["document"]["time"],
        "signature": wire["signature"],
    }
