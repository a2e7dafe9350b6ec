"""The split answer on the wire: one bit per row, least significant bit of each byte
first. Written once here so that the node that packs it and the bureau that unpacks it
cannot drift apart."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pack_bits", "unpack_bits"]


def pack_bits(bits: Sequence[bool]) -> bytes:
    """``bits`` as ⌈len/8⌉ bytes, least significant bit of each byte first."""
    return np.packbits(np.asarray(bits, dtype=bool), bitorder="little").tobytes()


def unpack_bits(data: bytes, count: int) -> list[bool]:
    """The first ``count`` bits of ``data`` (as ``pack_bits`` wrote them); ValueError
    unless ``data`` is exactly ⌈count/8⌉ bytes."""
    if len(data) != (count + 7) // 8:
        raise ValueError(f"{len(data)} bytes cannot hold exactly {count} bits")
    raw = np.frombuffer(data, dtype=np.uint8)
    return [bool(b) for b in np.unpackbits(raw, count=count, bitorder="little")]
