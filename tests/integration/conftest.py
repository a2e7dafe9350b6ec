"""Helpers for tests that run one real data node in-process: its settings and receipts."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from creditshare._logging import make_handler
from creditshare.crypto import Ciphertext, FixedPointEncoding, PrivateKey, VerifyKey
from creditshare.departments import DEFAULT_MODEL_ID, DEFAULT_WEIGHTS
from creditshare.ledger import Ledger, LogSigner, Receipt
from creditshare.node import NodeSettings, import_into_node
from creditshare.proto import node_pb2, receipt_to_pb

from .._authority import authority

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.node_pb2_grpc import DataNodeAsyncStub


def tax_node(
    folder: Path, data_dir: Path, log: LogSigner, database_url: str | None = None
) -> NodeSettings:
    """A YRD tax node (plaintext gRPC: these tests are about the node, not TLS) with data,
    on ``database_url`` (default: a SQLite file in ``folder``)."""
    settings = NodeSettings(
        node_id="yrd-tax",
        department="tax",
        chain="yrd",
        listen="127.0.0.1:0",
        database_url=database_url or f"sqlite:///{folder / 'node.db'}",
        models={DEFAULT_MODEL_ID: {"weights": dict(DEFAULT_WEIGHTS["tax"])}},
        log_public_key=VerifyKey.from_cryptography(log.public_key).to_text(),
        allow_insecure=True,
        credential_ca=authority().ca_cert,
    )
    import_into_node(settings, [data_dir / "yrd" / "tax.csv"])
    return settings


def receipt_message(receipt: Receipt, trusted: int, ledger: Ledger) -> node_pb2.QueryReceipt:
    """A receipt as the coordinator sends it: consistency from the node's trusted size."""
    size = receipt.head.size
    consistency = ledger.consistency_proof(trusted, size) if 0 < trusted < size else []
    return receipt_to_pb(receipt, trusted, consistency)


async def scored_partial(
    node: DataNodeAsyncStub, uscc: str, model_id: str, key: PrivateKey, scale: int, ledger: Ledger
) -> float:
    """One enterprise's partial score for ``model_id`` the way a bank gets it: a query
    recorded in ``ledger``, the node's Score RPC under its receipt, decrypted with ``key``."""
    record = authority().record(uscc, key.public_key.fingerprint(), model_id=model_id)
    logged = ledger.append(record.to_bytes(), record.uscc)
    described = await node.Describe(node_pb2.DescribeRequest())
    score = await node.Score(
        node_pb2.ScoreRequest(
            uscc=uscc,
            model_id=model_id,
            public_key=node_pb2.PaillierPublicKey(n=key.public_key.to_bytes()),
            scale=scale,
            request_id=record.query_id,
            receipt=receipt_message(logged, described.trusted_tree_size, ledger),
            credentials=authority().credentials(uscc),
        )
    )
    return FixedPointEncoding(scale).decrypt(
        Ciphertext.from_bytes(key.public_key, score.partial_score), key
    )


@contextmanager
def node_log_lines() -> Iterator[list[dict[str, Any]]]:
    """The JSON lines the ``creditshare.node`` loggers write inside the block (INFO and
    up), parsed into the yielded list when the block ends."""
    out = io.StringIO()
    handler = make_handler("json", out)
    logger = logging.getLogger("creditshare.node")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        lines.extend(json.loads(line) for line in out.getvalue().splitlines())
