"""``PrivateEncryptor``: DJN obfuscators modulo p² and q², recombined by CRT.

Checked through the real private key of a real 2048-bit key: its ciphertexts must be
usable exactly like ``FastEncryptor``'s (decrypt, add together, re-randomise), bulk
encryption must equal one-by-one encryption with and without worker processes, and the
state must never be serialisable. Timings live in ``bench/crypto.py``.
"""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gmpy2
import pytest

from creditshare.crypto import (
    Ciphertext,
    FastEncryptor,
    FixedPointEncoding,
    PrivateEncryptor,
    PrivateKey,
)
from creditshare.errors import InvalidCiphertextError, InvalidInputError

#: A bound on waiting for worker processes, not a performance claim.
WAIT = 120.0


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="module")
def encryptor(key: PrivateKey) -> PrivateEncryptor:
    return PrivateEncryptor(key)


def test_ciphertexts_decrypt_to_the_plaintext(key: PrivateKey, encryptor: PrivateEncryptor) -> None:
    n = key.public_key.n
    for m in (0, 1, 2, 12345, n // 3, n - 1, n - 2**70):
        c = encryptor.encrypt_encoded(m)
        assert c.public_key == key.public_key
        assert key.raw_decrypt(c.value) == m
        Ciphertext.validated(key.public_key, c.value)  # a unit in range, like any other
    encoding = FixedPointEncoding(10**6)
    assert encoding.decrypt(encryptor.encrypt(-3.25, encoding), key) == -3.25


def test_two_encryptions_differ(encryptor: PrivateEncryptor) -> None:
    values = {encryptor.encrypt_encoded(7).value for _ in range(8)}
    assert len(values) == 8


def test_ciphertexts_add_with_fast_encryptors(key: PrivateKey, encryptor: PrivateEncryptor) -> None:
    fast = FastEncryptor(key.public_key)
    total = encryptor.encrypt_encoded(1000) + fast.encrypt_encoded(234) + encryptor.zero()
    assert key.raw_decrypt(total.value) == 1234
    assert key.raw_decrypt(encryptor.encrypt_encoded(21).multiply(2).value) == 42


def test_rerandomize_keeps_the_plaintext(key: PrivateKey, encryptor: PrivateEncryptor) -> None:
    c = FastEncryptor(key.public_key).encrypt_encoded(99)
    again = encryptor.rerandomize(c)
    assert again.value != c.value
    assert key.raw_decrypt(again.value) == 99
    assert key.raw_decrypt(encryptor.obfuscator()) == 0
    assert key.raw_decrypt(encryptor.zero().value) == 0


def test_obfuscators_are_djn_ones_of_full_length(
    encryptor: PrivateEncryptor, key: PrivateKey
) -> None:
    assert encryptor.exponent_bits == 1024
    with pytest.raises(InvalidInputError, match="DJN assumption"):
        PrivateEncryptor(key, exponent_bits=1023)
    with pytest.raises(InvalidInputError, match="window"):
        PrivateEncryptor(key, window=0)


def test_jacobi_symbol_is_not_fixed(key: PrivateKey, encryptor: PrivateEncryptor) -> None:
    """Every obfuscator carries a fresh random Jacobi symbol (see FastEncryptor)."""
    n = gmpy2.mpz(key.public_key.n)
    zeros = {int(gmpy2.jacobi(encryptor.zero().value, n)) for _ in range(64)}
    assert zeros == {-1, 1}
    c = encryptor.encrypt_encoded(5)
    again = {int(gmpy2.jacobi(encryptor.rerandomize(c).value, n)) for _ in range(64)}
    assert again == {-1, 1}


def test_encrypt_many_equals_one_by_one(key: PrivateKey, encryptor: PrivateEncryptor) -> None:
    n = key.public_key.n
    plaintexts = [0, 1, n - 1, *range(100, 160)]
    many = encryptor.encrypt_many(plaintexts)
    assert [key.raw_decrypt(c.value) for c in many] == plaintexts
    single = [encryptor.encrypt_encoded(m) for m in plaintexts]
    assert [key.raw_decrypt(c.value) for c in single] == plaintexts
    assert encryptor.encrypt_many([]) == []


def test_bad_plaintexts_are_refused_before_any_work(
    key: PrivateKey, encryptor: PrivateEncryptor
) -> None:
    n = key.public_key.n
    with pytest.raises(InvalidInputError, match=r"\[0, n\)"):
        encryptor.encrypt_encoded(n)
    with pytest.raises(InvalidInputError, match=r"plaintext 2"):
        encryptor.encrypt_many([1, 2, -1])
    with pytest.raises(InvalidInputError, match=r"plaintext 0"):
        encryptor.encrypt_many([True])
    other = PrivateKey.generate()
    with pytest.raises(InvalidCiphertextError, match="different public key"):
        encryptor.rerandomize(FastEncryptor(other.public_key).encrypt_encoded(1))
    with pytest.raises(InvalidInputError, match="workers"):
        PrivateEncryptor(key, workers=-1)
    with pytest.raises(InvalidInputError, match="PrivateKey"):
        PrivateEncryptor(key.public_key)  # type: ignore[arg-type]


def test_pickling_is_refused(encryptor: PrivateEncryptor) -> None:
    for clone in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="cannot be serialised"):
            clone(encryptor)
    assert "p=" not in repr(encryptor) and "q=" not in repr(encryptor)


def test_workers_make_obfuscators_ahead(key: PrivateKey) -> None:
    n = key.public_key.n
    with PrivateEncryptor(key, workers=1, buffer=512) as pooled:
        assert pooled.workers == 1
        deadline = time.monotonic() + WAIT
        plaintexts = list(range(n - 300, n))
        taken: list[Ciphertext] = []
        # Poll until a worker's batch arrives (it builds its tables first).
        while pooled.pooled == 0 and time.monotonic() < deadline:
            taken.extend(pooled.encrypt_many(plaintexts[len(taken) % 300 :][:1]))
            time.sleep(0.05)
        assert pooled.pooled > 0, "no obfuscator came from the worker"
        many = pooled.encrypt_many(plaintexts)
        assert [key.raw_decrypt(c.value) for c in many] == plaintexts
        assert all(key.raw_decrypt(c.value) in plaintexts for c in taken)
        n_mpz = gmpy2.mpz(n)
        assert {int(gmpy2.jacobi(c.value, n_mpz)) for c in many} == {-1, 1}
    assert pooled.workers == 0
    pooled.close()  # idempotent
    assert key.raw_decrypt(pooled.encrypt_encoded(3).value) == 3  # still works in-process


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper has exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    """Workers hold the key's factors: they must not outlive a SIGKILLed bureau."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            from creditshare.crypto import PrivateEncryptor, PrivateKey
            if __name__ == "__main__":  # spawned workers import this file too
                encryptor = PrivateEncryptor(PrivateKey.generate(2048), workers=2, buffer=256)
                deadline = time.monotonic() + 120
                while encryptor.pooled == 0 and time.monotonic() < deadline:
                    encryptor.zero()
                    time.sleep(0.05)
                print(" ".join(str(p.pid) for p in encryptor._processes), flush=True)
                time.sleep(600)
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + WAIT
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "encryption workers outlived their parent"


def test_a_dead_worker_leaves_encryption_working(key: PrivateKey) -> None:
    with PrivateEncryptor(key, workers=1, buffer=256) as pooled:
        pooled._processes[0].kill()
        pooled._processes[0].join(timeout=60)
        plaintexts = list(range(50))
        assert [key.raw_decrypt(c.value) for c in pooled.encrypt_many(plaintexts)] == plaintexts
