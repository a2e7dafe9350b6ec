"""One mapping from a failed node call to our failure (``call_failure``): queries name
it in their coverage, training relays raise its error, cosigning rounds and revocations
report its reason, so a gRPC status means the same thing to every caller."""

from __future__ import annotations

import grpc
import pytest

from creditshare.coordinator.relay import HeadKeptMovingError, call_failure
from creditshare.errors import (
    CapacityError,
    CreditShareError,
    InvalidInputError,
    LedgerError,
    NodeFailedError,
)


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("code", "details", "kind", "reason", "error"),
    [
        (grpc.StatusCode.UNAVAILABLE, "connect failed", "unavailable", "unavailable", None),
        (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "",
            "deadline_exceeded",
            "deadline exceeded",
            None,
        ),
        (
            grpc.StatusCode.PERMISSION_DENIED,
            "receipt is too old",
            "permission_denied",
            "permission_denied: receipt is too old",
            None,
        ),
        (grpc.StatusCode.NOT_FOUND, "", "not_found", "not_found", None),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "scale must be positive",
            "invalid_argument",
            "invalid_argument: scale must be positive",
            InvalidInputError,
        ),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "too many jobs",
            "resource_exhausted",
            "resource_exhausted: too many jobs",
            CapacityError,
        ),
    ],
)
def test_a_grpc_status_maps_to_one_failure_and_one_error(
    code: grpc.StatusCode,
    details: str,
    kind: str,
    reason: str,
    error: type[CreditShareError] | None,
) -> None:
    failure = call_failure(_rpc_error(code, details))
    assert (failure.kind, failure.reason) == (kind, reason)
    raised = failure.error("yrd-tax")
    if error is None:
        assert isinstance(raised, NodeFailedError)
        assert (raised.node, raised.reason) == ("yrd-tax", reason)
    else:
        assert type(raised) is error
        assert str(raised) == f"node yrd-tax: {details}"


def test_ledger_problems_are_the_node_call_failing() -> None:
    moving = call_failure(HeadKeptMovingError("tree head kept moving; gave up"))
    assert (moving.kind, moving.reason) == ("head_moving", "tree head kept moving; gave up")
    ledger = call_failure(LedgerError("node trusts a larger tree"))
    assert (ledger.kind, ledger.reason) == ("ledger", "ledger: node trusts a larger tree")
    assert str(ledger.error("yrd-tax")) == "node yrd-tax: ledger: node trusts a larger tree"
