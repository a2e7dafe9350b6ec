"""The SDK's witness policy (quorum of distinct witnesses) and its memory of heads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from creditshare.client import HeadMemory, WitnessPolicy
from creditshare.errors import InvalidInputError, UnwitnessedHeadError
from creditshare.ledger import (
    Cosignature,
    LogSigner,
    SignedTreeHead,
    WitnessKey,
    checkpoint_body,
    cosign,
    leaf_hash,
    log_origin,
)

LOG = LogSigner.generate()
ORIGIN = log_origin(LOG.public_key)
PRIVATE = {name: Ed25519PrivateKey.generate() for name in ("yrd-tax", "yrd-market", "yrd-court")}
KEYS = tuple(WitnessKey.from_public_key(n, k.public_key()) for n, k in PRIVATE.items())


def _head(size: int = 5, root: bytes = b"a") -> SignedTreeHead:
    return LOG.sign_head(size, leaf_hash(root), 1_700_000_000_000)


def _cosign(name: str, head: SignedTreeHead, timestamp: int = 1_700_000_000) -> Cosignature:
    return cosign(PRIVATE[name], name, checkpoint_body(head, ORIGIN), timestamp)


def test_quorum_of_distinct_witnesses_accepts() -> None:
    head = _head()
    policy = WitnessPolicy(KEYS, 2)
    names = policy.check(head, [_cosign("yrd-tax", head), _cosign("yrd-court", head)], ORIGIN)
    assert sorted(names) == ["yrd-court", "yrd-tax"]


def test_one_witness_twice_counts_once() -> None:
    head = _head()
    twice = [_cosign("yrd-tax", head, 1_700_000_000), _cosign("yrd-tax", head, 1_700_000_009)]
    with pytest.raises(UnwitnessedHeadError) as refused:
        WitnessPolicy(KEYS, 2).check(head, twice, ORIGIN)
    message = str(refused.value)
    assert message.startswith("head of size 5 has 1 valid cosignature of a quorum of 2: ")
    assert "yrd-market: no cosignature" in message and "yrd-court: no cosignature" in message


def test_cosignatures_over_another_head_or_by_unknown_keys_do_not_count() -> None:
    head, other = _head(), _head(root=b"b")
    stranger = Ed25519PrivateKey.generate()
    unknown = cosign(stranger, "elsewhere", checkpoint_body(head, ORIGIN), 1_700_000_000)
    # A stranger's key under a configured witness's name: a bad key id, named as such.
    impostor = cosign(stranger, "yrd-market", checkpoint_body(head, ORIGIN), 1_700_000_000)
    cosignatures = [_cosign("yrd-tax", head), _cosign("yrd-court", other), unknown, impostor]
    with pytest.raises(UnwitnessedHeadError) as refused:
        WitnessPolicy(KEYS, 2).check(head, cosignatures, ORIGIN)
    message = str(refused.value)
    assert "has 1 valid cosignature" in message
    assert "yrd-court: cosignature by witness yrd-court does not verify" in message
    assert "yrd-market: cosignature names yrd-market key" in message
    assert "elsewhere" not in message


def test_a_good_cosignature_after_a_bad_one_from_the_same_witness_counts() -> None:
    head = _head()
    good = _cosign("yrd-tax", head)
    bad = Cosignature(good.witness, good.key_id, good.timestamp + 1, good.signature)
    assert WitnessPolicy(KEYS, 1).check(head, [bad, good], ORIGIN) == ("yrd-tax",)


@pytest.mark.parametrize("quorum", [0, 4, -1])
def test_quorum_must_be_within_the_witnesses(quorum: int) -> None:
    with pytest.raises(InvalidInputError, match=r"quorum must be within 1\.\.3"):
        WitnessPolicy(KEYS, quorum)


def test_a_witness_configured_twice_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="configured more than once"):
        WitnessPolicy((*KEYS, KEYS[0]), 2)


def test_witnesses_file_skips_comments_and_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "witnesses.txt"
    path.write_text("# yrd chain\n\n" + "\n".join(k.vkey() for k in KEYS) + "\n")
    assert WitnessPolicy.from_file(path, 2).witnesses == KEYS
    path.write_text(KEYS[0].vkey() + "\nnot-a-vkey\n")
    with pytest.raises(InvalidInputError, match=r"witnesses\.txt, witness 2: .*three parts"):
        WitnessPolicy.from_file(path, 1)
    path.write_text("# nobody yet\n")
    with pytest.raises(InvalidInputError, match="holds no witness vkey"):
        WitnessPolicy.from_file(path, 1)
    with pytest.raises(InvalidInputError, match="cannot read the witnesses file"):
        WitnessPolicy.from_file(tmp_path / "missing.txt", 1)


def test_head_memory_finds_conflicts_and_neighbours_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "state" / "heads.json"
    memory = HeadMemory(path)
    small, big = _head(3), _head(9)
    memory.remember(ORIGIN, small)
    memory.remember(ORIGIN, big)
    assert memory.conflict(ORIGIN, _head(3)) is None  # same size, same root
    assert memory.conflict(ORIGIN, _head(3, b"other")) == small
    assert memory.conflict("another/log", _head(3, b"other")) is None
    assert memory.nearest(ORIGIN, 5) == (small, big)
    assert memory.nearest(ORIGIN, 1) == (None, small)
    reread = HeadMemory(path)
    assert reread.conflict(ORIGIN, _head(9, b"other")) == big
    assert list(json.loads(path.read_text())) == [ORIGIN]


def test_head_memory_refuses_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "heads.json"
    path.write_text("{not json")
    with pytest.raises(InvalidInputError, match="cannot read the remembered heads"):
        HeadMemory(path)
    path.write_text(json.dumps({ORIGIN: [{"size": 1}]}))
    with pytest.raises(InvalidInputError, match="missing the field"):
        HeadMemory(path)
