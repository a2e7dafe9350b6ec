"""Nodes encrypt with a fixed-base table once a requester's key has been seen.

The table is built off the request path: ``get``/``warm`` never block, a failing build
falls back to stock encryption for good, and a stuck build holds up neither callers
nor ``close``. Builders that fail or hang are injected (said at each test); waits are
bounded polls with generous timeouts, never speed assertions.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from creditshare.crypto import FastEncryptor, FixedPointEncoding, PrivateKey, PublicKey
from creditshare.crypto._fast import table_window
from creditshare.errors import InvalidKeyError
from creditshare.node._encryptors import EncryptorCache, ValueEncryptor

#: A bound on waiting, not a performance claim.
WAIT = 60.0


def _eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def _wait_for_table(cache: EncryptorCache, key: PrivateKey) -> FastEncryptor:
    found: list[FastEncryptor] = []

    def ready() -> bool:
        encryptor = cache.get(key.public_key)
        if isinstance(encryptor, FastEncryptor):
            found.append(encryptor)
            return True
        return False

    _eventually(ready, "the table was built")
    return found[0]


def _returns_promptly(work: Callable[[], object]) -> None:
    """``work`` finishes while a build is blocked (joined with a generous timeout)."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "blocked behind a table build"


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
    _wait_for_table(cache, bank_key)
    cache.warm([other.public_key])
    _wait_for_table(cache, other)
    assert not isinstance(cache.get(bank_key.public_key), FastEncryptor)  # evicted, rebuilding
    cache.close()


def test_disabled_cache_never_builds_tables(bank_key: PrivateKey) -> None:
    cache = EncryptorCache(enabled=False)
    cache.warm([bank_key.public_key])
    for _ in range(3):
        assert not isinstance(cache.get(bank_key.public_key), FastEncryptor)
    cache.close()


def test_a_failed_build_falls_back_to_stock_encryption_for_good(
    bank_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # Injected failure: the builder raises as FastEncryptor would on a degenerate key.
    calls: list[PublicKey] = []

    def failing(key: PublicKey) -> ValueEncryptor:
        calls.append(key)
        raise InvalidKeyError("injected build failure")

    cache = EncryptorCache(build=failing)
    key = bank_key.public_key
    encoding = FixedPointEncoding(1000)
    with caplog.at_level(logging.WARNING, logger="creditshare.node"):
        cache.get(key)
        _eventually(lambda: cache.failed(key), "the build failure was recorded")
    for _ in range(20):  # later requests: stock encryption, and no new build attempts
        encryptor = cache.get(key)
        assert not isinstance(encryptor, FastEncryptor)
        assert encoding.decrypt(encryptor.encrypt(3.25, encoding), bank_key) == 3.25
    cache.warm([key])
    assert calls == [key]
    logged = [r.getMessage() for r in caplog.records if "could not be built" in r.getMessage()]
    assert len(logged) == 1
    assert key.fingerprint() in logged[0]
    assert str(key.n)[:30] not in logged[0]
    cache.close()


def test_a_stuck_build_blocks_neither_requests_nor_close(bank_key: PrivateKey) -> None:
    # Injected hang: the builder waits until the test releases it.
    release = threading.Event()
    started = threading.Event()

    def stuck(key: PublicKey) -> ValueEncryptor:
        started.set()
        release.wait(WAIT)
        return FastEncryptor(key)

    cache = EncryptorCache(build=stuck)
    key = bank_key.public_key
    builders: list[threading.Thread] = []
    try:
        cache.get(key)
        assert started.wait(WAIT)
        results: list[ValueEncryptor] = []
        _returns_promptly(lambda: results.append(cache.get(key)))
        assert not isinstance(results[0], FastEncryptor)
        _returns_promptly(lambda: cache.warm([key, PrivateKey.generate().public_key]))
        _returns_promptly(cache.close)
        # The builder thread is a daemon: it can never hold up the interpreter's exit.
        builders += [t for t in threading.enumerate() if t.name == "encryptor-table"]
        assert builders and all(t.daemon for t in builders)
    finally:
        release.set()
    # A build that finishes after close is thrown away, and its thread then ends.
    _eventually(lambda: not any(t.is_alive() for t in builders), "the builder thread ended")
    assert not isinstance(cache.get(key), FastEncryptor)


def test_pending_builds_are_bounded(bank_key: PrivateKey) -> None:
    # Injected hang again: while one build is stuck, at most ``max_pending`` keys queue.
    release = threading.Event()
    calls: list[PublicKey] = []

    def stuck(key: PublicKey) -> ValueEncryptor:
        calls.append(key)
        release.wait(WAIT)
        raise InvalidKeyError("injected")

    cache = EncryptorCache(build=stuck, max_pending=1)
    keys = [bank_key.public_key] + [PrivateKey.generate().public_key for _ in range(3)]
    try:
        cache.get(keys[0])
        _eventually(lambda: len(calls) == 1, "the first build started")
        for key in keys[1:]:
            cache.get(key)  # one is queued, the others are answered stock and dropped
    finally:
        release.set()
    _eventually(lambda: cache.failed(keys[1]), "the queued build ran")
    assert calls == keys[:2]
    cache.close()


_STUCK_BUILD_SCRIPT = """
import sys, threading
from creditshare.crypto import PublicKey
from creditshare.node._encryptors import EncryptorCache

started = threading.Event()

def stuck(key):  # injected hang: this build never finishes
    started.set()
    threading.Event().wait()

cache = EncryptorCache(build=stuck)
cache.get(PublicKey(int(sys.argv[1])))
assert started.wait(60)
print("build stuck; exiting", flush=True)
"""


def test_a_stuck_build_does_not_hold_up_process_exit(bank_key: PrivateKey) -> None:
    # A real interpreter whose only table build never returns must still exit (the
    # thread pool this replaced was joined at exit, so a node never stopped on SIGTERM).
    proc = subprocess.run(
        [sys.executable, "-c", _STUCK_BUILD_SCRIPT, str(bank_key.public_key.n)],
        capture_output=True,
        text=True,
        timeout=120,  # a hang fails the test here; not a performance claim
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "build stuck; exiting" in proc.stdout


def test_table_memory_stays_bounded_whatever_the_key_size() -> None:
    # ~(|n|/2w)·2^w entries of |n²|/8 bytes each, as FastEncryptor lays the table out.
    for bits in (2048, 2560, 3072, 3584, 4096):
        w = table_window(bits)
        entries = -(-bits // 2 // w) * ((1 << w) - 1)
        assert entries * (2 * bits // 8) <= 24 * 2**20, bits


def test_the_production_table_uses_that_window(bank_key: PrivateKey) -> None:
    cache = EncryptorCache()
    table = _wait_for_table(cache, bank_key)
    assert table.window == table_window(bank_key.public_key.bits)
    assert table.table_bytes <= 24 * 2**20
    cache.close()


def test_a_caller_may_wait_for_its_build_and_gets_the_table(bank_key: PrivateKey) -> None:
    """Tree scoring waits for the table (hundreds of encryptions per query). Injected
    delay: the build waits until the test releases it, after the caller began waiting."""
    release = threading.Event()

    def held(key: PublicKey) -> ValueEncryptor:
        release.wait(WAIT)
        return FastEncryptor(key)

    cache = EncryptorCache(build=held)
    results: list[ValueEncryptor] = []
    waiter = threading.Thread(target=lambda: results.append(cache.get(bank_key.public_key, WAIT)))
    waiter.start()
    _eventually(lambda: bank_key.public_key in cache._pending, "the build was queued")
    release.set()
    waiter.join(WAIT)
    assert results and isinstance(results[0], FastEncryptor)
    cache.close()


def test_a_waiting_caller_falls_back_to_stock_when_the_build_fails(bank_key: PrivateKey) -> None:
    def failing(key: PublicKey) -> ValueEncryptor:  # injected failure
        raise InvalidKeyError("injected build failure")

    cache = EncryptorCache(build=failing)
    key = bank_key.public_key
    results: list[ValueEncryptor] = []
    _returns_promptly(lambda: results.append(cache.get(key, WAIT)))
    encryptor = results[0]
    assert not isinstance(encryptor, FastEncryptor) and encryptor.public_key == key
    # The stock encryptor offers what private tree scoring needs, correctly.
    encoding = FixedPointEncoding(1000)
    one = encryptor.encrypt_encoded(1)
    assert encoding.decrypt(encryptor.rerandomize(one), bank_key) == 0.001
    assert encryptor.rerandomize(one) != one
    assert encoding.decrypt(encryptor.zero(), bank_key) == 0.0
    cache.close()
