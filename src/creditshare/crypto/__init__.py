"""Paillier keys, HPKE alert keys, validated ciphertexts, fixed-point encoding, Ed25519.

Knows nothing of HTTP, gRPC or storage: the layers above turn bytes and text
into these types at their edges.
"""

from creditshare.crypto._ciphertext import Ciphertext
from creditshare.crypto._crt import PrivateEncryptor
from creditshare.crypto._encoding import MAX_SCALE, FixedPointEncoding
from creditshare.crypto._fast import FastEncryptor, dot, powmod_many
from creditshare.crypto._hpke import SEAL_OVERHEAD, AlertPrivateKey, AlertPublicKey, SealedOpenError
from creditshare.crypto._keys import MAX_KEY_BITS, MIN_KEY_BITS, PrivateKey, PublicKey
from creditshare.crypto._packing import PackedEncoding, SlotLayout
from creditshare.crypto._pool import Encryptor, PooledEncryptor
from creditshare.crypto._signing import SIGNATURE_BYTES, SigningKey, VerifyKey, decode_signature

__all__ = [
    "MAX_KEY_BITS",
    "MAX_SCALE",
    "MIN_KEY_BITS",
    "SEAL_OVERHEAD",
    "SIGNATURE_BYTES",
    "AlertPrivateKey",
    "AlertPublicKey",
    "Ciphertext",
    "Encryptor",
    "FastEncryptor",
    "FixedPointEncoding",
    "PackedEncoding",
    "PooledEncryptor",
    "PrivateEncryptor",
    "PrivateKey",
    "PublicKey",
    "SealedOpenError",
    "SigningKey",
    "SlotLayout",
    "VerifyKey",
    "decode_signature",
    "dot",
    "powmod_many",
]
