"""A client's defence against a split view: a quorum of witnesses, and a memory of heads.

The coordinator signs the log, so on its own it could show one party a log and
another party a different one. The data nodes check every head they accept and
cosign it (C2SP cosignature/v1); a client that requires valid cosignatures from
``quorum`` distinct configured witnesses knows that at least that many nodes saw
(and accepted) the head it is shown. The client also remembers the heads it
accepted (in memory, and optionally in a small JSON file) and refuses two heads of
one size with different roots, or a newer head that does not extend a remembered one:
either is proof, signed by the log key, that the log was forked.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from creditshare.errors import (
    CreditShareError,
    InvalidInputError,
    SplitViewError,
    UnwitnessedHeadError,
)
from creditshare.ledger import (
    Cosignature,
    SignedTreeHead,
    WitnessKey,
    checkpoint_body,
    verify_cosignature,
)

__all__ = [
    "DEFAULT_HEADS_FILE",
    "HeadMemory",
    "VerifiedHead",
    "WitnessPolicy",
    "split_view",
]

#: Where the ``queries`` command remembers accepted heads unless told otherwise.
DEFAULT_HEADS_FILE = Path("~/.config/creditshare/heads.json")
#: Heads remembered per log (the newest ones; older ones are prefixes of them).
_REMEMBERED = 64
#: Lines in a witnesses file; a federation has tens of nodes, not thousands.
_MAX_WITNESSES = 1024


@dataclass(frozen=True, slots=True)
class WitnessPolicy:
    """The witnesses a client trusts and how many of them must have cosigned a head."""

    witnesses: tuple[WitnessKey, ...]
    quorum: int

    def __post_init__(self) -> None:
        names = [w.name for w in self.witnesses]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidInputError(f"witness {duplicates[0]!r} is configured more than once")
        if not isinstance(self.quorum, int) or not 1 <= self.quorum <= len(self.witnesses):
            raise InvalidInputError(
                f"quorum must be within 1..{len(self.witnesses)} (the witnesses configured), "
                f"got {self.quorum!r}"
            )

    @classmethod
    def from_vkeys(cls, vkeys: Iterable[str], quorum: int) -> WitnessPolicy:
        return cls(tuple(WitnessKey.parse(v) for v in vkeys), quorum)

    @classmethod
    def from_file(cls, path: Path, quorum: int, extra: Iterable[str] = ()) -> WitnessPolicy:
        """One vkey per line; blank lines and ``#`` comments are skipped."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(f"cannot read the witnesses file {path}: {exc}") from exc
        lines = [ln.strip() for ln in text.splitlines()]
        vkeys = [ln for ln in lines if ln and not ln.startswith("#")]
        if len(vkeys) > _MAX_WITNESSES:
            raise InvalidInputError(f"{path}: at most {_MAX_WITNESSES} witnesses")
        keys = []
        for number, vkey in enumerate(vkeys, 1):
            try:
                keys.append(WitnessKey.parse(vkey))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{path}, witness {number}: {exc}") from None
        witnesses = (*keys, *(WitnessKey.parse(v) for v in extra))
        if not witnesses:
            raise InvalidInputError(f"{path} holds no witness vkey")
        return cls(witnesses, quorum)

    def check(
        self, head: SignedTreeHead, cosignatures: Iterable[Cosignature], origin: str
    ) -> tuple[str, ...]:
        """The distinct configured witnesses whose cosignature over ``head`` verifies;
        ``UnwitnessedHeadError`` (saying why each other witness did not count) below quorum.

        Cosignatures by keys not configured are ignored (signed-note rule); a witness
        appearing twice counts once.
        """
        body = checkpoint_body(head, origin)
        by_name = {w.name: w for w in self.witnesses}
        valid: list[str] = []
        problems: dict[str, str] = {}
        for cosignature in cosignatures:
            key = by_name.get(cosignature.witness)
            if key is None or cosignature.witness in valid:
                continue
            try:
                verify_cosignature(key, cosignature, body)
            except CreditShareError as exc:
                problems[cosignature.witness] = str(exc)
                continue
            valid.append(cosignature.witness)
            problems.pop(cosignature.witness, None)
        if len(valid) < self.quorum:
            missing = [
                f"{w.name}: {problems.get(w.name, 'no cosignature')}"
                for w in self.witnesses
                if w.name not in valid
            ]
            noun = "cosignature" if len(valid) == 1 else "cosignatures"
            raise UnwitnessedHeadError(
                f"head of size {head.size} has {len(valid)} valid {noun} of a quorum of "
                f"{self.quorum}: " + "; ".join(missing)
            )
        return tuple(valid)


@dataclass(frozen=True, slots=True)
class VerifiedHead:
    """A head a quorum cosigned (``witnesses`` names them) and the latest head at the time."""

    head: SignedTreeHead
    witnesses: tuple[str, ...]
    latest: SignedTreeHead


class HeadMemory:
    """The heads a client accepted, per log origin; in memory and in ``path`` if given.

    The file is JSON ``{origin: [head, ...]}`` written atomically; a missing file is an
    empty memory, an unreadable one an error (forgetting heads silently would let a
    split view through).
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path.expanduser() if path is not None else None
        self._lock = threading.Lock()
        self._heads: dict[str, dict[int, SignedTreeHead]] = {}
        if self._path is not None and self._path.exists():
            self._load(self._path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise InvalidInputError("not a JSON object")
            for origin, heads in data.items():
                if not isinstance(heads, list):
                    raise InvalidInputError(f"{origin!r} is not a list of heads")
                parsed = (SignedTreeHead.from_dict(h) for h in heads[-_REMEMBERED:])
                self._heads[str(origin)] = {h.size: h for h in parsed}
        except (OSError, ValueError, CreditShareError) as exc:
            raise InvalidInputError(f"cannot read the remembered heads in {path}: {exc}") from exc

    def _save(self) -> None:
        if self._path is None:
            return
        doc = {
            origin: [heads[s].to_dict() for s in sorted(heads)]
            for origin, heads in self._heads.items()
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".heads-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, indent=1)
        os.replace(tmp, self._path)

    def conflict(self, origin: str, head: SignedTreeHead) -> SignedTreeHead | None:
        """A remembered head of the same size with another root, if any."""
        with self._lock:
            known = self._heads.get(origin, {}).get(head.size)
        return known if known is not None and known.root != head.root else None

    def nearest(
        self, origin: str, size: int
    ) -> tuple[SignedTreeHead | None, SignedTreeHead | None]:
        """The largest remembered head below ``size`` and the smallest above it."""
        with self._lock:
            sizes = sorted(self._heads.get(origin, {}))
            heads = self._heads.get(origin, {})
            below = [s for s in sizes if s < size]
            above = [s for s in sizes if s > size]
            return (
                heads[below[-1]] if below else None,
                heads[above[0]] if above else None,
            )

    def remember(self, origin: str, head: SignedTreeHead) -> None:
        with self._lock:
            heads = self._heads.setdefault(origin, {})
            if head.size in heads:
                return
            heads[head.size] = head
            while len(heads) > _REMEMBERED:
                del heads[min(heads)]
            self._save()


def split_view(
    origin: str, head: SignedTreeHead, other: SignedTreeHead, what: str
) -> SplitViewError:
    return SplitViewError(
        f"split view of log {origin}: {what} of size {head.size} has root "
        f"{head.root.hex()[:16]}…, but the head of size {other.size} accepted earlier has root "
        f"{other.root.hex()[:16]}…; both are signed by the log key, so the log was forked"
    )
