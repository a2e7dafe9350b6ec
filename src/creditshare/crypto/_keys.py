"""Paillier key types with explicit constructors and serialisers.

Built on ``phe`` (which uses gmpy2 when present) but never exposes phe's classes:
callers get ``PublicKey`` and ``PrivateKey``, whose only ways in are checked
constructors, so a modulus that is not a plausible Paillier key (wrong size, even,
a small factor, a perfect power, a prime) cannot enter the system through any door
(config, HTTP, gRPC, file). Everything downstream (fixed-base tables, obfuscator
draws, ciphertext checks) may therefore assume n = p·q with two large primes; the
loops that rely on it still carry attempt caps (see ``_fast``) in case a key ever
arrives some other way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

import gmpy2
from phe import paillier

from creditshare.errors import InvalidKeyError, KeyTooSmallError

__all__ = ["MAX_KEY_BITS", "MIN_KEY_BITS", "SMALL_FACTOR_BOUND", "PrivateKey", "PublicKey"]

#: Smallest modulus accepted anywhere; NIST SP 800-57 puts 2048-bit factoring at 112 bits.
MIN_KEY_BITS = 2048
#: Largest modulus accepted from the outside: encryption cost grows with the cube of
#: the size, so an 8192-bit key would let one caller buy ~64x the work of a 2048-bit one.
MAX_KEY_BITS = 4096

#: Every prime factor below this bound is searched for (trial division by one gcd).
#: A real Paillier modulus has two prime factors of ~|n|/2 bits, so it has none; a
#: modulus that does is no key: answers under it can be decrypted from public values
#: (n = 65537·q gives φ(n) to anyone), and honest ciphertexts would share a factor with n.
SMALL_FACTOR_BOUND = 1 << 20
#: Miller–Rabin strength passed to ``gmpy2.is_prime``: GMP runs Baillie–PSW and then
#: ``reps - 24`` random-base rounds, so 32 means BPSW plus 8 rounds (no known BPSW
#: pseudoprime exists; the extra rounds cost ~20 ms only when the input *is* prime).
_PRIME_TEST_REPS = 32
#: Steps of Fermat's method tried: n = a² − b² for a just above √n factors n when its
#: two primes are within ~2^(|n|/4) of each other. Independent random primes are never
#: that close; a modulus whose are is factored by anyone in microseconds.
_FERMAT_STEPS = 64
#: Moduli remembered as validated (and, separately, as refused): a bank queries with the
#: same key again and again, so validation is paid once per key and process.
VALIDATED_CACHE_SIZE = 1024
_REFUSED_CACHE_SIZE = 256


class _SmallPrimes:
    """The product of all primes below ``SMALL_FACTOR_BOUND``, made on first use.

    ~1.5 Mbit; ``gmpy2.primorial`` builds it in ~15 ms, so importing the package does
    not pay for it and processes that never see an outside key never do.
    """

    _lock = threading.Lock()
    _value: Any = None

    @classmethod
    def product(cls) -> Any:
        if cls._value is None:
            with cls._lock:
                if cls._value is None:
                    cls._value = gmpy2.primorial(SMALL_FACTOR_BOUND - 1)
        return cls._value


class _Verdicts:
    """Bounded, thread-safe LRU of moduli already judged: n → None (valid) or the reason.

    Valid and refused moduli are kept apart so a flood of distinct bad keys cannot evict
    the good ones (it only makes itself pay for validation again).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._valid: OrderedDict[int, None] = OrderedDict()
        self._refused: OrderedDict[int, str] = OrderedDict()

    def lookup(self, n: int) -> tuple[bool, str | None]:
        """(known, reason): reason None for a known-valid modulus."""
        with self._lock:
            if n in self._valid:
                self._valid.move_to_end(n)
                return True, None
            reason = self._refused.get(n)
            if reason is not None:
                self._refused.move_to_end(n)
                return True, reason
        return False, None

    def remember(self, n: int, reason: str | None) -> None:
        with self._lock:
            if reason is None:
                self._valid[n] = None
                self._valid.move_to_end(n)
                while len(self._valid) > VALIDATED_CACHE_SIZE:
                    self._valid.popitem(last=False)
            else:
                self._refused[n] = reason
                self._refused.move_to_end(n)
                while len(self._refused) > _REFUSED_CACHE_SIZE:
                    self._refused.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._valid.clear()
            self._refused.clear()


_VERDICTS = _Verdicts()


def _structural_flaw(n: int) -> str | None:
    """Why n (of an accepted size) cannot be a Paillier modulus, or None.

    The order is cheapest first; each message says what is wrong and never quotes n.
    """
    if n % 2 == 0:
        return "Paillier modulus is even (it has the small prime factor 2): not a valid key"
    mpz = gmpy2.mpz(n)
    if gmpy2.gcd(_SmallPrimes.product() % mpz, mpz) != 1:
        return (
            "Paillier modulus has a small prime factor (below 2^20): not a valid key, "
            "answers under it could be decrypted by anyone"
        )
    if gmpy2.is_power(mpz):
        return (
            "Paillier modulus is a perfect power (a square, cube, ...): not a valid key, "
            "it must be the product of two distinct primes"
        )
    if gmpy2.is_prime(mpz, _PRIME_TEST_REPS):
        return (
            "Paillier modulus is prime: not a valid key, answers under it could be "
            "decrypted by anyone"
        )
    a = gmpy2.isqrt(mpz) + 1
    for _ in range(_FERMAT_STEPS):
        if gmpy2.is_square(a * a - mpz):
            return (
                "Paillier modulus has two factors so close together that Fermat's method "
                "finds them: not a valid key, answers under it could be decrypted by anyone"
            )
        a += 1
    return None


_PRIVATE_KIND = "creditshare/paillier-private-key/v1"


class PublicKey:
    """A Paillier public key (g = n + 1), validated once, thoroughly, on construction.

    The checks, cheapest first: an int; bit length within [``MIN_KEY_BITS``,
    ``MAX_KEY_BITS``] (``KeyTooSmallError`` below it); odd; no prime factor below
    ``SMALL_FACTOR_BOUND`` (2^20, one gcd with their product); not a perfect power
    (``gmpy2.is_power``: a square p² would make obfuscator loops spin and leaks φ);
    not a probable prime (Baillie–PSW plus 8 Miller–Rabin rounds); its factors not so
    close that a few steps of Fermat's method find them. Failures raise
    ``InvalidKeyError`` saying which check failed, never quoting the modulus.

    Cost (measured, gmpy2 2.3, one x86-64 core): a first validation of a genuine
    2048-bit key takes ~3 ms (~1 ms for the gcd, ~2 ms for the primality test), ~16 ms
    at 4096 bits, plus ~15 ms once per process to build the product of the small
    primes; a prime modulus costs ~25 ms. Verdicts are kept in a bounded, thread-safe
    LRU keyed by n (``VALIDATED_CACHE_SIZE`` valid moduli, fewer refused ones), so a
    key seen again costs a dictionary lookup (~10 µs with the object's construction).
    """

    __slots__ = ("_phe", "n", "n_squared")

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise InvalidKeyError("Paillier modulus must be a positive integer")
        bits = n.bit_length()
        if bits < MIN_KEY_BITS:
            raise KeyTooSmallError(bits, MIN_KEY_BITS)
        if bits > MAX_KEY_BITS:
            raise InvalidKeyError(f"Paillier key is {bits} bits; at most {MAX_KEY_BITS} accepted")
        known, reason = _VERDICTS.lookup(n)
        if not known:
            reason = _structural_flaw(n)
            _VERDICTS.remember(n, reason)
        if reason is not None:
            raise InvalidKeyError(reason)
        self.n = n
        self.n_squared = n * n
        self._phe = paillier.PaillierPublicKey(n)

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    @property
    def ciphertext_length(self) -> int:
        """Bytes in a serialised ciphertext: fixed, so lengths leak nothing."""
        return (self.n_squared.bit_length() + 7) // 8

    @property
    def max_plaintext(self) -> int:
        """Largest magnitude the fixed-point encoding may use (a third of n, as in phe)."""
        return self.n // 3 - 1

    def to_bytes(self) -> bytes:
        return self.n.to_bytes((self.n.bit_length() + 7) // 8, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        if not data:
            raise InvalidKeyError("public key is empty")
        return cls(int.from_bytes(data, "big"))

    def to_text(self) -> str:
        """Standard base64 of the big-endian modulus: the JSON form."""
        return base64.b64encode(self.to_bytes()).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise InvalidKeyError("public key is not valid base64") from exc
        return cls.from_bytes(raw)

    def fingerprint(self) -> str:
        """Short stable identifier for logs and receipts (never the key itself)."""
        return hashlib.sha256(self.to_bytes()).hexdigest()[:16]

    def verify_decryption(self, ciphertext: int, plaintext: int, r: int) -> bool:
        """True when c = (1 + n·m)·r^n mod n², i.e. m really is the plaintext of c."""
        n, nsq = self.n, self.n_squared
        if not (0 <= plaintext < n and 0 < r < n):
            return False
        return (1 + n * plaintext) * int(gmpy2.powmod(r, n, nsq)) % nsq == ciphertext % nsq

    def raw_encrypt(self, plaintext: int) -> int:
        """Encrypt an already-encoded integer in [0, n) with a fresh obfuscator."""
        if not 0 <= plaintext < self.n:
            raise ValueError("encoded plaintext must lie in [0, n)")
        return int(self._phe.raw_encrypt(plaintext))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.bits}, fingerprint={self.fingerprint()})"


class PrivateKey:
    """A Paillier private key; it stays with the requester that generated it."""

    __slots__ = ("_phe", "public_key")

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        if p * q != public_key.n or p <= 1 or q <= 1 or p == q:
            raise InvalidKeyError("private key factors do not match the public modulus")
        self.public_key = public_key
        self._phe = paillier.PaillierPrivateKey(public_key._phe, p, q)

    @classmethod
    def generate(cls, bits: int = MIN_KEY_BITS) -> PrivateKey:
        if bits < MIN_KEY_BITS:
            raise KeyTooSmallError(bits, MIN_KEY_BITS)
        pub, priv = paillier.generate_paillier_keypair(n_length=bits)
        return cls(PublicKey(int(pub.n)), int(priv.p), int(priv.q))

    def raw_decrypt(self, ciphertext: int) -> int:
        """Decrypt to the encoded integer in [0, n) (CRT inside phe)."""
        return int(self._phe.raw_decrypt(ciphertext))

    def decrypt_with_proof(self, ciphertext: int) -> tuple[int, int]:
        """(m, r) with c = (1 + n·m)·r^n mod n²: anyone can check that m is c's plaintext.

        Only the key holder can find r (an n-th root modulo n needs φ(n)), so a party
        that hands back a decryption cannot substitute a value of its choosing.
        """
        n = self.public_key.n
        m = self.raw_decrypt(ciphertext)
        residue = ciphertext * (1 - n * m) % self.public_key.n_squared  # = r^n mod n²
        phi = (int(self._phe.p) - 1) * (int(self._phe.q) - 1)
        r = int(gmpy2.powmod(residue % n, gmpy2.invert(n, phi), n))
        return m, r

    def to_json_bytes(self) -> bytes:
        doc = {
            "kind": _PRIVATE_KIND,
            "n": format(self.public_key.n, "x"),
            "p": format(int(self._phe.p), "x"),
            "q": format(int(self._phe.q), "x"),
        }
        return json.dumps(doc, indent=2).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes) -> PrivateKey:
        # Error messages name the field only: the text of a parse error would quote
        # the (secret) digits of p or q.
        try:
            doc: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise InvalidKeyError("private key file is not JSON") from None
        if not isinstance(doc, dict) or doc.get("kind") != _PRIVATE_KIND:
            raise InvalidKeyError(f"not a {_PRIVATE_KIND} document")
        values: dict[str, int] = {}
        for name in ("n", "p", "q"):
            text = doc.get(name)
            try:
                values[name] = int(text, 16) if isinstance(text, str) else -1
            except ValueError:
                values[name] = -1
            if values[name] <= 0:
                raise InvalidKeyError(f"private key field {name!r} is missing or not hex") from None
        return cls(PublicKey(values["n"]), values["p"], values["q"])

    def __repr__(self) -> str:
        # Deliberately no factors: a private key must never end up in a log line.
        return f"PrivateKey(public={self.public_key!r})"
