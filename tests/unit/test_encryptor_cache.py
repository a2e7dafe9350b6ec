"""Nodes encrypt with a fixed-base table once a requester's key has been seen."""

from __future__ import annotations

import time

from creditshare.crypto import FastEncryptor, FixedPointEncoding, PrivateKey
from creditshare.node._encryptors import EncryptorCache


def _wait_for_table(cache: EncryptorCache, key: PrivateKey) -> FastEncryptor:
    deadline = time.monotonic() + 30  # a bound on waiting, not a performance claim
    while time.monotonic() < deadline:
        encryptor = cache.get(key.public_key)
        if isinstance(encryptor, FastEncryptor):
            return encryptor
        time.sleep(0.02)
    raise AssertionError("the table was never built")


def test_first_use_is_stock_then_the_table_takes_over(bank_key: PrivateKey) -> None:
    cache = EncryptorCache(max_keys=2)
    encoding = FixedPointEncoding(1000)
    first = cache.get(bank_key.public_key)
    assert not isinstance(first, FastEncryptor)
    fast = _wait_for_table(cache, bank_key)
    assert isinstance(fast, FastEncryptor)
    for encryptor in (first, fast):
        c = encryptor.encrypt(-12.5, encoding)
        assert encoding.decrypt(c, bank_key) == -12.5
    cache.close()


def test_least_recently_used_key_is_evicted(bank_key: PrivateKey) -> None:
    other = PrivateKey.generate()
    cache = EncryptorCache(max_keys=1)
    cache.warm([bank_key.public_key])
    assert isinstance(cache.get(bank_key.public_key), FastEncryptor)
    cache.warm([other.public_key])
    assert isinstance(cache.get(other.public_key), FastEncryptor)
    assert not isinstance(cache.get(bank_key.public_key), FastEncryptor)  # evicted, rebuilding
    cache.close()


def test_disabled_cache_never_builds_tables(bank_key: PrivateKey) -> None:
    cache = EncryptorCache(enabled=False)
    for _ in range(3):
        assert not isinstance(cache.get(bank_key.public_key), FastEncryptor)
    cache.close()
