"""``PooledEncryptor``: obfuscators from worker processes, real 2048-bit keys."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from creditshare.crypto import (
    Ciphertext,
    FixedPointEncoding,
    PooledEncryptor,
    PrivateKey,
)
from creditshare.errors import InvalidCiphertextError, InvalidInputError


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate(2048)


def test_pooled_ciphertexts_decrypt_validate_and_never_repeat(key: PrivateKey) -> None:
    encoding = FixedPointEncoding(1 << 20)
    with PooledEncryptor(key.public_key, workers=1, buffer=512) as pool:
        deadline = time.monotonic() + 30
        while pool.pooled == 0 and time.monotonic() < deadline:
            pool.zero()  # until the worker's first batch arrives
            time.sleep(0.05)
        assert pool.pooled > 0, "no obfuscator ever came from the worker"
        values = [0.0, -1.5, 3.25, 1e6, -7.0] * 60
        ciphertexts = pool.encrypt_many(values, encoding)
        for value, c in zip(values, ciphertexts, strict=True):
            Ciphertext.validated(key.public_key, c.value)
            assert (c.value - 1) % key.public_key.n != 0  # randomised
            assert encoding.decrypt(c, key) == value
        # Every ciphertext used a different obfuscator, pooled or local.
        assert len({c.value for c in ciphertexts}) == len(ciphertexts)
        again = pool.rerandomize(ciphertexts[1])
        assert again.value != ciphertexts[1].value
        assert encoding.decrypt(again, key) == -1.5
        assert key.raw_decrypt(pool.zero().value) == 0
        # Pooled and stock ciphertexts add together.
        total = ciphertexts[2] + encoding.encrypt(1.0, key.public_key)
        assert encoding.decrypt(total, key) == 4.25


def test_without_workers_it_still_encrypts(key: PrivateKey) -> None:
    encoding = FixedPointEncoding(1 << 10)
    with PooledEncryptor(key.public_key, workers=0, buffer=256) as pool:
        c = pool.encrypt(2.5, encoding)
        assert encoding.decrypt(c, key) == 2.5
        assert pool.pooled == 0 and pool.local == 1


def test_pooled_encryptor_refuses_bad_input(key: PrivateKey) -> None:
    other = PrivateKey.generate(2048).public_key
    with PooledEncryptor(key.public_key, workers=0, buffer=256) as pool:
        with pytest.raises(InvalidInputError, match=r"\[0, n\)"):
            pool.encrypt_encoded(key.public_key.n)
        with pytest.raises(InvalidCiphertextError, match="different public key"):
            pool.rerandomize(Ciphertext(other, 5))
        with pytest.raises(TypeError, match="cannot be serialised"):
            pickle.dumps(pool)
    with pytest.raises(InvalidInputError, match="workers"):
        PooledEncryptor(key.public_key, workers=-1)
    with pytest.raises(InvalidInputError, match="buffer"):
        PooledEncryptor(key.public_key, workers=0, buffer=10)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper has exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves no chance to close the pool: the workers must notice by themselves."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            from creditshare.crypto import PooledEncryptor, PrivateKey
            if __name__ == "__main__":  # spawned workers import this file too
                key = PrivateKey.generate(2048).public_key
                pool = PooledEncryptor(key, workers=2, buffer=256)
                time.sleep(2)  # the workers are up and filling the queue
                assert all(p.is_alive() for p in pool._workers)
                print(" ".join(str(p.pid) for p in pool._workers), flush=True)
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
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "obfuscator workers outlived their parent"
