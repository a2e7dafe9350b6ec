"""Paillier keys, validated ciphertexts and fixed-point encoding.

Knows nothing of HTTP, gRPC or storage: the layers above turn bytes and text
into these types at their edges.
"""

from creditshare.crypto._ciphertext import Ciphertext
from creditshare.crypto._encoding import MAX_SCALE, FixedPointEncoding
from creditshare.crypto._keys import MAX_KEY_BITS, MIN_KEY_BITS, PrivateKey, PublicKey

__all__ = [
    "MAX_KEY_BITS",
    "MAX_SCALE",
    "MIN_KEY_BITS",
    "Ciphertext",
    "FixedPointEncoding",
    "PrivateKey",
    "PublicKey",
]
