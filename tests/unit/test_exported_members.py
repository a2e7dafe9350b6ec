"""Every public package declares ``__all__``, and every name in it exists.

Modelled on httpx's test of the same name: the public surface changes only on purpose.
"""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "creditshare.cli",
    "creditshare.client",
    "creditshare.consent",
    "creditshare.coordinator",
    "creditshare.coordinator.relay",
    "creditshare.crypto",
    "creditshare.demo",
    "creditshare.departments",
    "creditshare.errors",
    "creditshare.identity",
    "creditshare.ledger",
    "creditshare.monitoring",
    "creditshare.node",
    "creditshare.pki",
    "creditshare.proto",
    "creditshare.signed",
    "creditshare.synth",
    "creditshare.trees",
    "creditshare.federated",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_and_are_unique(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported, name
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], missing
    assert len(set(exported)) == len(exported)


def test_client_surface_is_pinned() -> None:
    import creditshare.client as client

    assert set(client.__all__) == {
        "DEFAULT_MODEL_ID",
        "AccessEntry",
        "CreditProfile",
        "CreditShareClient",
        "Indicator",
        "ScoreScale",
        "decrypt_profile",
        "default_key_path",
        "load_key",
        "load_or_create_key",
        "load_or_create_signing_key",
        "load_signing_key",
        "probability_of_default",
        "read_labels",
        "save_key",
        "verify_access_log",
        "RemoteHost",
        "TrainedModel",
        "train_model",
        "Identity",
        "default_identity_dir",
        "sign_job",
        "sign_query",
        "DEFAULT_HEADS_FILE",
        "HeadMemory",
        "VerifiedHead",
        "WitnessPolicy",
        "Alert",
        "AlertInbox",
        "Gap",
        "default_alert_key_path",
        "load_alert_key",
        "load_or_create_alert_key",
        "sign_subscription",
        "verify_webhook",
        "CohortAnswer",
        "NodeOutcome",
        "cohort_rows",
        "sign_cohort_query",
    }


def test_crypto_surface_is_pinned() -> None:
    import creditshare.crypto as crypto

    assert set(crypto.__all__) == {
        "MAX_KEY_BITS",
        "MAX_SCALE",
        "MIN_KEY_BITS",
        "Ciphertext",
        "FixedPointEncoding",
        "PrivateKey",
        "PublicKey",
        "SigningKey",
        "VerifyKey",
        "FastEncryptor",
        "dot",
        "powmod_many",
        "PackedEncoding",
        "SlotLayout",
        "Encryptor",
        "PooledEncryptor",
        "PrivateEncryptor",
        "SIGNATURE_BYTES",
        "decode_signature",
        "AlertPrivateKey",
        "AlertPublicKey",
        "SEAL_OVERHEAD",
        "SealedOpenError",
    }
