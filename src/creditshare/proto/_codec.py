"""The protobuf forms of signed tree heads, receipts and training settings, in one place.

The coordinator writes these messages and data nodes read them (and the other way
round for the head a node says it trusts): one module owns both directions, so a
field cannot be dropped or bounded differently on one side. Reading bounds every
part to the size a real one has before anything is hashed, parsed or verified, since
the coordinator is not trusted: a receipt bounds the work a request can cause.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from creditshare.errors import InvalidInputError
from creditshare.federated import TrainingConfig
from creditshare.ledger import (
    HASH_SIZE,
    MAX_PROOF_HASHES,
    MAX_RECORD_BYTES,
    SIGNATURE_SIZE,
    Receipt,
    SignedTreeHead,
    leaf_hash,
)
from creditshare.proto.creditshare.v1 import node_pb2, training_pb2
from creditshare.trees import TreeConfig

__all__ = [
    "PRIVACY_BUDGET_REFUSAL",
    "REFUSAL_METADATA",
    "TRUSTED_SIZE_METADATA",
    "ProvenReceipt",
    "check_receipt_shape",
    "head_from_pb",
    "head_to_pb",
    "is_privacy_budget_refusal",
    "privacy_budget_metadata",
    "receipt_from_pb",
    "receipt_to_pb",
    "settings_from_pb",
    "settings_to_pb",
    "tree_settings_from_pb",
    "tree_settings_to_pb",
    "trusted_size_from",
    "trusted_size_metadata",
]

#: Trailing metadata carrying a node's trusted tree size with a stale-head refusal.
TRUSTED_SIZE_METADATA = "creditshare-trusted-size"
#: Trailing metadata naming why a node refused, where the status code alone is
#: ambiguous: RESOURCE_EXHAUSTED is both "this regulator's privacy budget would be
#: exceeded" (nothing spent; asking again this period is refused again) and "too busy
#: now" (try later). The words of a refusal are for people, never parsed.
REFUSAL_METADATA = "creditshare-refusal"
#: Its value for a regulator's query refused for the privacy budget.
PRIVACY_BUDGET_REFUSAL = "privacy-budget"
_MAX_SIZE = 1 << 63


def head_to_pb(head: SignedTreeHead) -> node_pb2.SignedTreeHead:
    return node_pb2.SignedTreeHead(
        size=head.size,
        root=head.root,
        timestamp_ms=head.timestamp_ms,
        signature=head.signature,
        key_id=head.key_id,
    )


def _check_head_shape(pb: node_pb2.SignedTreeHead, what: str) -> None:
    if len(pb.root) != HASH_SIZE or len(pb.signature) != SIGNATURE_SIZE or len(pb.key_id) > 64:
        raise InvalidInputError(
            f"{what} must have a {HASH_SIZE}-byte root and a {SIGNATURE_SIZE}-byte signature"
        )
    if pb.size >= _MAX_SIZE:
        raise InvalidInputError(f"{what} size is over 2^63-1")


def head_from_pb(pb: node_pb2.SignedTreeHead, what: str = "tree_head") -> SignedTreeHead:
    """The head a message holds, shape-checked (not its signature: call ``verify``)."""
    _check_head_shape(pb, what)
    return SignedTreeHead(pb.size, pb.root, pb.timestamp_ms, pb.signature, pb.key_id)


@dataclass(frozen=True, slots=True)
class ProvenReceipt:
    """A receipt with the consistency proof from the head its reader last accepted."""

    receipt: Receipt
    consistency_from: int
    consistency_proof: tuple[bytes, ...]


def receipt_to_pb(
    receipt: Receipt, consistency_from: int = 0, consistency_proof: Sequence[bytes] = ()
) -> node_pb2.QueryReceipt:
    return node_pb2.QueryReceipt(
        leaf_index=receipt.index,
        leaf_data=receipt.data,
        tree_head=head_to_pb(receipt.head),
        inclusion_proof=list(receipt.inclusion_proof),
        consistency_from=consistency_from,
        consistency_proof=list(consistency_proof),
    )


def check_receipt_shape(pb: node_pb2.QueryReceipt) -> None:
    """Refuse a receipt whose parts are not the sizes a real one has."""
    if not 0 < len(pb.leaf_data) <= MAX_RECORD_BYTES:
        raise InvalidInputError(f"receipt leaf_data must be 1 to {MAX_RECORD_BYTES} bytes")
    for name, proof in (
        ("inclusion_proof", pb.inclusion_proof),
        ("consistency_proof", pb.consistency_proof),
    ):
        if len(proof) > MAX_PROOF_HASHES or any(len(h) != HASH_SIZE for h in proof):
            raise InvalidInputError(
                f"receipt {name} must be at most {MAX_PROOF_HASHES} hashes of {HASH_SIZE} bytes"
            )
    _check_head_shape(pb.tree_head, "receipt tree_head")
    if not pb.leaf_index < pb.tree_head.size or pb.consistency_from >= _MAX_SIZE:
        raise InvalidInputError("receipt leaf_index must lie inside its tree head's size")


def receipt_from_pb(pb: node_pb2.QueryReceipt) -> ProvenReceipt:
    """The receipt a message holds, shape-checked first (not verified: the caller does)."""
    check_receipt_shape(pb)
    receipt = Receipt(
        index=pb.leaf_index,
        data=pb.leaf_data,
        leaf_hash=leaf_hash(pb.leaf_data),
        head=head_from_pb(pb.tree_head, "receipt tree_head"),
        inclusion_proof=tuple(pb.inclusion_proof),
    )
    return ProvenReceipt(receipt, pb.consistency_from, tuple(pb.consistency_proof))


def trusted_size_metadata(size: int) -> tuple[tuple[str, str]]:
    """The trailing metadata a node sends with a stale-head refusal."""
    return ((TRUSTED_SIZE_METADATA, str(size)),)


def trusted_size_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> int | None:
    """The trusted size a stale-head refusal carried, or None."""
    for key, value in metadata or ():
        if key == TRUSTED_SIZE_METADATA:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


def privacy_budget_metadata() -> tuple[tuple[str, str]]:
    """The trailing metadata a node sends with a privacy-budget refusal."""
    return ((REFUSAL_METADATA, PRIVACY_BUDGET_REFUSAL),)


def is_privacy_budget_refusal(metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether a refusal's trailing metadata says it is for the privacy budget."""
    return any(
        key == REFUSAL_METADATA and value == PRIVACY_BUDGET_REFUSAL for key, value in metadata or ()
    )


def settings_to_pb(config: TrainingConfig) -> training_pb2.TrainingSettings:
    """Every field of the config, by name (the message mirrors the model)."""
    return training_pb2.TrainingSettings(**config.to_document())


def settings_from_pb(pb: training_pb2.TrainingSettings) -> TrainingConfig:
    """The config a message holds, validated as the coordinator validated it: a field
    out of range (or left out: it reads 0) is an InvalidInputError naming it."""
    names = TrainingConfig.model_fields
    return TrainingConfig.from_document({n: getattr(pb, n) for n in names})


def tree_settings_to_pb(config: TreeConfig) -> training_pb2.TreeSettings:
    """Every field of the tree config, by name (the message mirrors the model)."""
    return training_pb2.TreeSettings(**config.to_document())


def tree_settings_from_pb(pb: training_pb2.TreeSettings) -> TreeConfig:
    """The tree config a message holds, validated as the coordinator validated it (a
    field left out reads 0 or "" and is refused where that is out of range)."""
    names = TreeConfig.model_fields
    return TreeConfig.from_document({n: getattr(pb, n) for n in names})
