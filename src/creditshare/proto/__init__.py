"""Generated gRPC stubs (committed; regenerate with `make proto`).

Import the messages and stubs from here rather than the generated path. Beside them,
the one hand-written converter between our types and their messages (``_codec``):
tree heads, receipts, the trusted-size metadata and training settings. Only the
services that speak gRPC (coordinator and node) import this package; the client
talks HTTP only.
"""

from creditshare.proto._codec import (
    PRIVACY_BUDGET_REFUSAL,
    REFUSAL_METADATA,
    TRUSTED_SIZE_METADATA,
    ProvenReceipt,
    check_receipt_shape,
    head_from_pb,
    head_to_pb,
    is_privacy_budget_refusal,
    privacy_budget_metadata,
    receipt_from_pb,
    receipt_to_pb,
    settings_from_pb,
    settings_to_pb,
    tree_settings_from_pb,
    tree_settings_to_pb,
    trusted_size_from,
    trusted_size_metadata,
)
from creditshare.proto.creditshare.v1 import (
    monitoring_pb2,
    monitoring_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    statistics_pb2,
    statistics_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)

__all__ = [
    "GRPC_MESSAGE_OPTIONS",
    "PRIVACY_BUDGET_REFUSAL",
    "REFUSAL_METADATA",
    "TRUSTED_SIZE_METADATA",
    "ProvenReceipt",
    "check_receipt_shape",
    "head_from_pb",
    "head_to_pb",
    "is_privacy_budget_refusal",
    "monitoring_pb2",
    "monitoring_pb2_grpc",
    "node_pb2",
    "node_pb2_grpc",
    "privacy_budget_metadata",
    "receipt_from_pb",
    "receipt_to_pb",
    "settings_from_pb",
    "settings_to_pb",
    "statistics_pb2",
    "statistics_pb2_grpc",
    "training_pb2",
    "training_pb2_grpc",
    "tree_settings_from_pb",
    "tree_settings_to_pb",
    "trusted_size_from",
    "trusted_size_metadata",
]

#: gRPC's default 4 MB message cap holds only ~8,000 ciphertexts at 2048 bits;
#: training batches and PSI sets are larger. Callers still chunk big transfers.
GRPC_MESSAGE_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)
