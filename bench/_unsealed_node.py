"""BENCHMARK ONLY: a data node whose alert "sealing" is the identity, and its opening.

``bench/monitoring.py`` measures what sealing costs by running the same monitoring
cycle (coordinator, nodes, mutual TLS, receipts, ledger, fixed-size batches, the bank
opening them) with HPKE replaced by a framing of the same length: 32 zero bytes, the
plaintext, 16 zero bytes. Nothing in ``src/`` can switch sealing off: the switch is
this file, started *instead of* the ``creditshare`` CLI for node processes
(``Federation(node_command=...)``). It patches ``AlertPublicKey.seal`` in that process
and runs the normal entry point; the bench opens with ``unsealed_opening``, which
refuses anything not framed that way, proving every node ran unsealed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from creditshare.cli import main as cli_main
from creditshare.crypto import AlertPrivateKey, AlertPublicKey

__all__ = ["install_unsealed", "unsealed_opening"]

_ENC, _TAG = bytes(32), bytes(16)


def _frame(self: AlertPublicKey, plaintext: bytes, info: bytes) -> bytes:
    return _ENC + plaintext + _TAG


def install_unsealed() -> None:
    mock.patch.object(AlertPublicKey, "seal", _frame).start()


class SealedAfterAllError(AssertionError):
    """A batch was really sealed: some node was not running unsealed."""


@contextmanager
def unsealed_opening() -> Iterator[list[int]]:
    """Within the block, ``AlertPrivateKey.open`` strips the frame; yields a call counter."""
    calls = [0]

    def open_frame(self: AlertPrivateKey, sealed: bytes, info: bytes) -> bytes:
        if not (sealed.startswith(_ENC) and sealed.endswith(_TAG)):
            raise SealedAfterAllError("batch is sealed (not the benchmark's framing)")
        calls[0] += 1
        return sealed[len(_ENC) : -len(_TAG)]

    with mock.patch.object(AlertPrivateKey, "open", open_frame):
        yield calls


def main() -> None:
    install_unsealed()
    print("BENCHMARK ONLY: alert sealing replaced by plain framing", file=sys.stderr)
    cli_main()


if __name__ == "__main__":
    main()
