"""BENCHMARK ONLY: a data node whose "encryption" is the identity, and its decryption.

``bench/query.py`` measures what privacy costs by running the very same federation
(coordinator, nodes, mutual TLS, consent, ledger, packed answers, client decryption)
with Paillier's randomness removed. Nothing in ``src/`` can switch encryption off:
the switch is this file, which the benchmark starts *instead of* ``python -m
creditshare`` for node processes (``Federation(node_command=...)``). It patches the
crypto in that process and then runs the normal CLI entry point.

A plaintext-mode node answers c = (1 + n·m) mod n², i.e. a Paillier ciphertext with
obfuscator 1. It is well formed (0 < c < n², gcd(c, n) = 1, so it passes every
validation on the way) and adds homomorphically at the coordinator exactly like a real
one, but anyone can read m = (c − 1) / n: the benchmark's client decrypts that way,
with no private-key exponentiation, and refuses any ciphertext that is not of that
form, which proves every node in the run really had its encryption replaced.

Two points cover both node encryption paths (see ``creditshare.node._encryptors``):

* ``PublicKey.raw_encrypt``: stock encryption (phe's fresh r^n), used by the
  ``_StockEncryptor`` for a key's first query and whenever ``fast_encryption`` is off;
  ``FixedPointEncoding.encrypt`` and ``PackedEncoding.encrypt`` go through it too.
* ``FastEncryptor._draw``: every obfuscator of the fixed-base encryptor
  (``encrypt_encoded``, ``encrypt``, ``rerandomize``, ``zero``). Its table is still
  built once per key in the background, as in fast mode; it is simply never used.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import gmpy2

from creditshare.cli import main as cli_main
from creditshare.crypto import FastEncryptor, PrivateKey, PublicKey

__all__ = ["install_plaintext_encryption", "plaintext_decryption"]


def _trivial_encrypt(self: PublicKey, plaintext: int) -> int:
    """(1 + n·m) mod n²: Paillier with obfuscator 1 (same range check as the real one)."""
    if not 0 <= plaintext < self.n:
        raise ValueError("encoded plaintext must lie in [0, n)")
    return (1 + self.n * plaintext) % self.n_squared


def _unit_obfuscator(self: FastEncryptor) -> Any:
    return gmpy2.mpz(1)


def install_plaintext_encryption() -> None:
    """Make every encryption in this process trivially decryptable (irreversible)."""
    mock.patch.object(PublicKey, "raw_encrypt", _trivial_encrypt).start()
    mock.patch.object(FastEncryptor, "_draw", _unit_obfuscator).start()


class NotPlaintextError(AssertionError):
    """A ciphertext had a real obfuscator: some node was not running in plaintext mode."""


@contextmanager
def plaintext_decryption() -> Iterator[list[int]]:
    """Within the block, ``PrivateKey.raw_decrypt`` is m = (c − 1) / n, nothing more.

    Yields a one-element counter of decryptions so the caller can check it was used.
    A ciphertext that is not 1 + n·m raises ``NotPlaintextError``.
    """
    calls = [0]

    def decrypt(self: PrivateKey, ciphertext: int) -> int:
        n = self.public_key.n
        m, rest = divmod(ciphertext - 1, n)
        if rest:
            raise NotPlaintextError("ciphertext has a real obfuscator (c ≢ 1 mod n)")
        calls[0] += 1
        return m % n

    with mock.patch.object(PrivateKey, "raw_decrypt", decrypt):
        yield calls


def main() -> None:
    install_plaintext_encryption()
    print("BENCHMARK ONLY: node encryption replaced by plaintext", file=sys.stderr)
    cli_main()


if __name__ == "__main__":
    main()
