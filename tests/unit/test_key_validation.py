"""A requester's Paillier modulus is validated once, thoroughly, and the verdict cached.

Real numbers of each bad shape (``tests/_bad_keys.py``) and real 2048-bit keys; the
degenerate-loop tests build keys *around* validation on purpose (``unchecked_key``)
and fail through a joined thread with a generous timeout if a loop ever spins again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import gmpy2
import pytest

from creditshare.crypto import FastEncryptor, PrivateKey, PublicKey
from creditshare.crypto import _fast as fast_module
from creditshare.crypto import _keys as keys_module
from creditshare.errors import InvalidInputError, InvalidKeyError, KeyTooSmallError

from .._bad_keys import BAD_MODULI, bad_modulus, perfect_square, unchecked_key

#: How long a thread may take before we call it a hang: a bound on waiting, far above
#: what the work takes on a loaded machine, not a performance claim.
HANG_TIMEOUT = 120.0


def _finishes(work: Callable[[], Any]) -> BaseException | None:
    """Run ``work`` on a thread; the exception it raised (None if none); fails on a hang."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_TIMEOUT)
    assert not thread.is_alive(), "the work never finished: an unbounded loop?"
    return outcome[0]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", sorted(BAD_MODULI))
def test_every_kind_of_bad_modulus_is_refused_with_a_clear_message(name: str) -> None:
    n = bad_modulus(name)
    with pytest.raises(InvalidInputError) as caught:
        PublicKey(n)
    message = str(caught.value)
    assert BAD_MODULI[name] in message
    # The message says what is wrong, never what the modulus is.
    assert str(n)[:40] not in message and format(n, "x")[:40] not in message
    expected = KeyTooSmallError if name == "2047-bits" else InvalidKeyError
    assert type(caught.value) is expected


@pytest.mark.parametrize("name", sorted(BAD_MODULI))
def test_bad_modulus_is_refused_through_bytes_too(name: str) -> None:
    n = bad_modulus(name)
    with pytest.raises(InvalidInputError, match=BAD_MODULI[name]):
        PublicKey.from_bytes(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def test_largest_prime_below_the_small_factor_bound_is_found() -> None:
    factor = int(gmpy2.prev_prime(keys_module.SMALL_FACTOR_BOUND))
    q = int(gmpy2.next_prime((1 << 2047) // factor + 12345))
    n = factor * q
    assert n.bit_length() == 2048
    with pytest.raises(InvalidKeyError, match="small prime factor"):
        PublicKey(n)


def test_bad_modulus_stays_refused_when_asked_again() -> None:
    n = bad_modulus("prime")
    for _ in range(3):
        with pytest.raises(InvalidKeyError, match="is prime"):
            PublicKey(n)


def test_generated_keys_pass_validation() -> None:
    for bits in (2048, 3072):
        key = PrivateKey.generate(bits)
        assert PublicKey(key.public_key.n) == key.public_key
        assert PublicKey(key.public_key.n).bits == bits


def test_a_key_seen_again_is_not_validated_again(
    bank_key: PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_module._VERDICTS.clear()
    calls: list[int] = []
    real = keys_module._structural_flaw

    def counting(n: int) -> str | None:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(keys_module, "_structural_flaw", counting)
    for _ in range(5):
        PublicKey(bank_key.public_key.n)
    assert calls == [bank_key.public_key.n]


def test_verdict_cache_is_bounded_and_forgets_the_oldest() -> None:
    verdicts = keys_module._Verdicts()
    size = keys_module.VALIDATED_CACHE_SIZE
    for n in range(size + 10):
        verdicts.remember(n, None)
    assert verdicts.lookup(0) == (False, None)
    assert verdicts.lookup(size + 9) == (True, None)
    for n in range(1000):
        verdicts.remember(-n - 1, "bad")
    assert verdicts.lookup(-1) == (False, None)
    assert verdicts.lookup(-1000) == (True, "bad")
    # Refused moduli cannot push valid ones out.
    assert verdicts.lookup(size + 9) == (True, None)


def test_concurrent_first_validations_agree(bank_key: PrivateKey) -> None:
    keys_module._VERDICTS.clear()
    n = bank_key.public_key.n
    bad = bad_modulus("perfect-square")
    results: list[str] = []
    lock = threading.Lock()

    def validate(value: int) -> None:
        try:
            PublicKey(value)
            outcome = "ok"
        except InvalidKeyError:
            outcome = "refused"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=validate, args=(v,)) for v in [n, bad] * 8]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_TIMEOUT)
    assert sorted(results) == ["ok"] * 8 + ["refused"] * 8


# --------------------------------------------------------------------------- bounded loops


def test_fast_encryptor_on_a_perfect_square_raises_instead_of_spinning() -> None:
    # Validation is bypassed on purpose: PublicKey refuses this modulus, but the loop
    # that looks for a Jacobi symbol of -1 (none exists modulo a square) must be
    # bounded by itself too.
    key = unchecked_key(perfect_square())
    error = _finishes(lambda: FastEncryptor(key))
    assert isinstance(error, InvalidKeyError)
    assert "Jacobi" in str(error)


def test_random_unit_gives_up_on_a_modulus_without_units() -> None:
    # Bypasses validation: modulo 6 every candidate in [2, 4] shares a factor with 6.
    error = _finishes(lambda: fast_module._random_unit(6))
    assert isinstance(error, InvalidKeyError)
    assert f"{fast_module.MAX_DRAW_ATTEMPTS} random draws" in str(error)


def test_random_unit_refuses_a_modulus_too_small_to_draw_from() -> None:
    with pytest.raises(InvalidKeyError):
        fast_module._random_unit(4)


def test_fast_encryptor_still_works_for_a_real_key(bank_key: PrivateKey) -> None:
    error = _finishes(lambda: FastEncryptor(bank_key.public_key))
    assert error is None
