"""A node logs each call with the request id the coordinator sent as gRPC metadata."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from creditshare.ledger import LogSigner
from creditshare.node import build_server
from creditshare.proto import node_pb2, node_pb2_grpc

from .conftest import node_log_lines, tax_node


async def test_node_logs_each_call_with_the_request_id_it_was_sent(
    tmp_path: Path, data_dir: Path
) -> None:
    settings = tax_node(tmp_path, data_dir, LogSigner.generate())
    with node_log_lines() as lines:
        server, port = await build_server(settings)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = node_pb2_grpc.DataNodeStub(channel)
                await stub.Describe(
                    node_pb2.DescribeRequest(), metadata=(("x-request-id", "it-1"),)
                )
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Score(
                        node_pb2.ScoreRequest(uscc="91350100M000100Y43"),
                        metadata=(("x-request-id", "it-2"),),
                    )
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                # An id the node cannot trust to be log-safe is dropped, not written.
                await stub.Describe(
                    node_pb2.DescribeRequest(), metadata=(("x-request-id", "bad id; rm -rf"),)
                )
                await stub.Describe(node_pb2.DescribeRequest())
        finally:
            await server.stop(None)

    calls = [line for line in lines if line["logger"] == "creditshare.node.rpc"]
    assert [(c["rpc"], c["code"], c.get("request_id")) for c in calls] == [
        ("Describe", "ok", "it-1"),
        ("Score", "invalid_argument", "it-2"),
        ("Describe", "ok", None),
        ("Describe", "ok", None),
    ]
    assert all(isinstance(c["duration_ms"], float) for c in calls)
    # The service's own line about the refusal carries the id too.
    refusal = [line for line in lines if line["message"].startswith("refused:")]
    assert [line.get("request_id") for line in refusal] == ["it-2"]
