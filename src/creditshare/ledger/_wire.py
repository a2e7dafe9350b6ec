"""The JSON forms of a ledger entry and a consistency proof, as they travel over HTTP.

The coordinator writes these shapes and enterprises read them back: one module owns
both directions, so the client's parser refuses exactly what the server would never
send (bounded sizes, strict base64, field types), naming the field, before anything
is hashed or verified. A tree head's own form is ``SignedTreeHead.to_dict``/``from_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from creditshare.errors import InvalidInputError
from creditshare.ledger._fields import b64, get_b64, get_int, get_list, get_mapping
from creditshare.ledger._log import Receipt
from creditshare.ledger._merkle import HASH_SIZE, leaf_hash
from creditshare.ledger._records import MAX_RECORD_BYTES, parse_record
from creditshare.ledger._tree_head import SignedTreeHead

__all__ = [
    "MAX_PROOF_HASHES",
    "entry_document",
    "parse_entry",
    "parse_proof",
    "proof_document",
]

#: A Merkle path holds one hash per tree level (64 levels cover 2^64 leaves); a
#: consistency proof at most two per level. Anything longer is not a proof.
MAX_PROOF_HASHES = 128
_MAX_INCLUSION_HASHES = 64


def entry_document(receipt: Receipt) -> dict[str, object]:
    """A ledger entry: its record (readable), the leaf bytes, and their inclusion proof."""
    return {
        "index": receipt.index,
        "record": parse_record(receipt.data).to_document(),
        "leaf_data": b64(receipt.data),
        "inclusion_proof": [b64(h) for h in receipt.inclusion_proof],
        "tree_head": receipt.head.to_dict(),
    }


def parse_entry(document: object) -> Receipt:
    """The receipt a ledger entry carries; ``InvalidInputError`` names the bad field.

    The entry's ``record`` is only a readable copy: what counts is ``leaf_data``, the
    bytes the proof covers. Call ``Receipt.verify`` before believing it.
    """
    what = "ledger entry"
    if not isinstance(document, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(document).__name__}")
    index = get_int(document, "index", what)
    if index < 0:
        raise InvalidInputError(f"{what}.index must not be negative, got {index}")
    data = get_b64(document, "leaf_data", what, max_length=MAX_RECORD_BYTES)
    if not data:
        raise InvalidInputError(f"{what}.leaf_data must not be empty")
    proof = get_list(document, "inclusion_proof", what, HASH_SIZE, max_items=_MAX_INCLUSION_HASHES)
    head = SignedTreeHead.from_dict(get_mapping(document, "tree_head", what))
    if index >= head.size:
        raise InvalidInputError(
            f"{what}.index {index} lies outside its tree head of size {head.size}"
        )
    return Receipt(index, data, leaf_hash(data), head, tuple(proof))


def proof_document(hashes: Sequence[bytes]) -> dict[str, list[str]]:
    """A consistency proof between two tree sizes."""
    return {"hashes": [b64(h) for h in hashes]}


def parse_proof(document: object) -> list[bytes]:
    """The hashes of a consistency proof; ``InvalidInputError`` names the bad one."""
    what = "consistency proof"
    if not isinstance(document, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(document).__name__}")
    return get_list(document, "hashes", what, HASH_SIZE, max_items=MAX_PROOF_HASHES)
