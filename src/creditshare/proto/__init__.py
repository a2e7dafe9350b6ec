"""Generated gRPC stubs (committed; regenerate with `make proto`).

Import the messages and stubs from here rather than the generated path.
"""

from creditshare.proto.creditshare.v1 import (
    node_pb2,
    node_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)

__all__ = ["node_pb2", "node_pb2_grpc", "training_pb2", "training_pb2_grpc"]
