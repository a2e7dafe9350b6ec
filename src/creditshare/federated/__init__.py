"""Federated training for credit bureaus: PSI alignment, then vertical logistic regression.

The protocol engine here is transport-free: parties exchange ciphertexts and
blinded points through method calls, so the same code runs in one process (tests,
benchmarks) and across the coordinator and data nodes.
"""

from creditshare.federated._config import TrainingConfig, describe_validation_error
from creditshare.federated._metrics import auc, ks, log_loss
from creditshare.federated._preprocessing import FeatureTransform, ModelShard, Preprocessing
from creditshare.federated._psi import (
    PsiParty,
    PsiRequest,
    PsiResponse,
    bureau_intersect,
    bureau_request,
    hash_to_u,
    node_answer,
)
from creditshare.federated._vlr import (
    EVAL_SCORE_BITS,
    EVAL_SLOT_BITS,
    MIN_BATCH_ROWS,
    BureauParty,
    EpochReport,
    HostEndpoint,
    HostParty,
    TrainingResult,
    evaluation_scores,
    split_batches,
    train,
)
from creditshare.federated._woe import (
    LevelGroups,
    LevelSumsEndpoint,
    LevelSumsFit,
    WoeFeature,
    WoeTable,
    share_level_sums,
    weight_of_evidence,
)

__all__ = [
    "EVAL_SCORE_BITS",
    "EVAL_SLOT_BITS",
    "MIN_BATCH_ROWS",
    "BureauParty",
    "EpochReport",
    "FeatureTransform",
    "HostEndpoint",
    "HostParty",
    "LevelGroups",
    "LevelSumsEndpoint",
    "LevelSumsFit",
    "ModelShard",
    "Preprocessing",
    "PsiParty",
    "PsiRequest",
    "PsiResponse",
    "TrainingConfig",
    "TrainingResult",
    "WoeFeature",
    "WoeTable",
    "auc",
    "bureau_intersect",
    "bureau_request",
    "describe_validation_error",
    "evaluation_scores",
    "hash_to_u",
    "ks",
    "log_loss",
    "node_answer",
    "share_level_sums",
    "split_batches",
    "train",
    "weight_of_evidence",
]
