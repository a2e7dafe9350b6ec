"""Generated gRPC stubs (committed; regenerate with `make proto`).

Import the messages and stubs from here rather than the generated path.
"""

from creditshare.proto.creditshare.v1 import (
    node_pb2,
    node_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)

__all__ = [
    "GRPC_MESSAGE_OPTIONS",
    "node_pb2",
    "node_pb2_grpc",
    "training_pb2",
    "training_pb2_grpc",
]

#: gRPC's default 4 MB message cap holds only ~8,000 ciphertexts at 2048 bits;
#: training batches and PSI sets are larger. Callers still chunk big transfers.
GRPC_MESSAGE_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)
