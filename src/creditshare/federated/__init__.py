"""Federated training for credit bureaus: PSI alignment, then vertical logistic regression.

The protocol engine here is transport-free: parties exchange ciphertexts and
blinded points through method calls, so the same code runs in one process (tests,
benchmarks) and across the coordinator and data nodes.
"""

from creditshare.federated._config import TrainingConfig, describe_validation_error
from creditshare.federated._metrics import auc, ks, log_loss
from creditshare.federated._preprocessing import FeatureTransform, ModelShard, Preprocessing
from creditshare.federated._psi import (
    POINT_BYTES,
    PsiParty,
    PsiRequest,
    PsiResponse,
    bureau_intersect,
    bureau_request,
    hash_to_u,
    node_answer,
)
from creditshare.federated._psi_stream import (
    DEFAULT_PSI_CHUNK,
    MAX_PSI_CHUNK,
    BureauChunk,
    BureauRun,
    NodeRun,
    PsiTranscript,
    TranscriptCheck,
    id_array,
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
    "DEFAULT_PSI_CHUNK",
    "EVAL_SCORE_BITS",
    "EVAL_SLOT_BITS",
    "MAX_PSI_CHUNK",
    "MIN_BATCH_ROWS",
    "POINT_BYTES",
    "BureauChunk",
    "BureauParty",
    "BureauRun",
    "EpochReport",
    "FeatureTransform",
    "HostEndpoint",
    "HostParty",
    "LevelGroups",
    "LevelSumsEndpoint",
    "LevelSumsFit",
    "ModelShard",
    "NodeRun",
    "Preprocessing",
    "PsiParty",
    "PsiRequest",
    "PsiResponse",
    "PsiTranscript",
    "TrainingConfig",
    "TrainingResult",
    "TranscriptCheck",
    "WoeFeature",
    "WoeTable",
    "auc",
    "bureau_intersect",
    "bureau_request",
    "describe_validation_error",
    "evaluation_scores",
    "hash_to_u",
    "id_array",
    "ks",
    "log_loss",
    "node_answer",
    "share_level_sums",
    "split_batches",
    "train",
    "weight_of_evidence",
]
