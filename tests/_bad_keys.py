"""Numbers that are not Paillier moduli, one for each way a requester's key can be wrong.

Each is a real number of the stated shape (a real square of a real 1024-bit prime,
and so on), built from a seeded generator so a failure reproduces. ``unchecked_key``
builds a ``PublicKey`` *around* validation, for tests of the loops that must stay
bounded even if a bad modulus got in some other way.
"""

from __future__ import annotations

import random
from functools import cache

import gmpy2
from phe import paillier

from creditshare.crypto import PublicKey

__all__ = ["BAD_MODULI", "bad_modulus", "perfect_square", "unchecked_key"]

#: name → fragment the refusal message must contain.
BAD_MODULI: dict[str, str] = {
    "perfect-square": "perfect power",
    "prime": "is prime",
    "factor-65537": "small prime factor",
    "even": "even",
    "perfect-cube": "perfect power",
    "close-factors": "Fermat",
    "4097-bits": "at most 4096",
    "2047-bits": "2047 bits",
}


def _random_bits(rng: random.Random, bits: int, top: int = 1) -> int:
    """A ``bits``-bit number with its top ``top`` bits set."""
    value = rng.getrandbits(bits)
    return value | (((1 << top) - 1) << (bits - top))


@cache
def perfect_square() -> int:
    rng = random.Random(1)
    p = int(gmpy2.next_prime(_random_bits(rng, 1024, top=2)))  # p ≥ 1.5·2^1023
    return p * p


@cache
def bad_modulus(name: str) -> int:
    """The modulus called ``name`` in ``BAD_MODULI``, with its exact bit length checked."""
    rng = random.Random(name)
    if name == "perfect-square":
        n = perfect_square()
    elif name == "prime":
        n = int(gmpy2.next_prime(_random_bits(rng, 2048)))
    elif name == "factor-65537":
        low, high = (1 << 2047) // 65537 + 1, (1 << 2048) // 65537 - (1 << 1024)
        n = 65537 * int(gmpy2.next_prime(rng.randrange(low, high)))
    elif name == "even":
        n = 2 * (_random_bits(rng, 2047) | 1)
    elif name == "perfect-cube":
        root, _ = gmpy2.iroot(gmpy2.mpz(1) << 2047, 3)
        p = int(gmpy2.next_prime(root + 1))
        n = p**3
    elif name == "close-factors":
        p = int(gmpy2.next_prime(_random_bits(rng, 1024, top=2)))
        n = p * int(gmpy2.next_prime(p + rng.getrandbits(400)))
    elif name == "4097-bits":
        n = _random_bits(rng, 4097) | 1
    elif name == "2047-bits":
        n = _random_bits(rng, 2047) | 1
    else:
        raise KeyError(name)
    expected_bits = {"4097-bits": 4097, "2047-bits": 2047}.get(name, 2048)
    assert n.bit_length() == expected_bits, (name, n.bit_length())
    return n


def unchecked_key(n: int) -> PublicKey:
    """A ``PublicKey`` for ``n`` that BYPASSES validation (``PublicKey(n)`` would refuse it).

    Only for tests of the attempt caps: production code has no way to do this.
    """
    key = PublicKey.__new__(PublicKey)
    key.n = n
    key.n_squared = n * n
    key._phe = paillier.PaillierPublicKey(n)
    return key
