"""Python SDK for banks, bureaus and regulators: local keys, HTTP to the coordinator, local
decryption."""

from creditshare.client._access_log import AccessEntry, verify_access_log
from creditshare.client._alerts import Alert, AlertInbox, Gap
from creditshare.client._bureau import RemoteHost, TrainedModel, train_model
from creditshare.client._client import DEFAULT_MODEL_ID, CreditShareClient
from creditshare.client._identity import Identity, default_identity_dir
from creditshare.client._keystore import (
    default_alert_key_path,
    default_key_path,
    load_alert_key,
    load_key,
    load_or_create_alert_key,
    load_or_create_key,
    load_or_create_signing_key,
    load_signing_key,
    save_key,
)
from creditshare.client._labels import read_labels
from creditshare.client._profile import (
    CreditProfile,
    Indicator,
    ScoreScale,
    decrypt_profile,
    probability_of_default,
)
from creditshare.client._signing import sign_job, sign_query, sign_subscription
from creditshare.client._statistics import (
    CohortAnswer,
    NodeOutcome,
    cohort_rows,
    sign_cohort_query,
)
from creditshare.client._webhooks import verify_webhook
from creditshare.client._witness import (
    DEFAULT_HEADS_FILE,
    HeadMemory,
    VerifiedHead,
    WitnessPolicy,
)

__all__ = [
    "DEFAULT_HEADS_FILE",
    "DEFAULT_MODEL_ID",
    "AccessEntry",
    "Alert",
    "AlertInbox",
    "CohortAnswer",
    "CreditProfile",
    "CreditShareClient",
    "Gap",
    "HeadMemory",
    "Identity",
    "Indicator",
    "NodeOutcome",
    "RemoteHost",
    "ScoreScale",
    "TrainedModel",
    "VerifiedHead",
    "WitnessPolicy",
    "cohort_rows",
    "decrypt_profile",
    "default_alert_key_path",
    "default_identity_dir",
    "default_key_path",
    "load_alert_key",
    "load_key",
    "load_or_create_alert_key",
    "load_or_create_key",
    "load_or_create_signing_key",
    "load_signing_key",
    "probability_of_default",
    "read_labels",
    "save_key",
    "sign_cohort_query",
    "sign_job",
    "sign_query",
    "sign_subscription",
    "train_model",
    "verify_access_log",
    "verify_webhook",
]
