"""What a tree host does whatever its histograms are made of: bins, rows, rules, shard.

``TreeHost`` (encrypted histograms, the node's side of a real job) and
``PlainTreeHost`` (plaintext histograms, the benchmark's and tests' protocol) share
this class, so both check the same things and refuse the same requests: rows outside
the fit set, duplicates, row sets under the ``min_child_rows`` floor, splits leaving a
child under it. Every check runs before any state changes, so a refused request
loses nothing.

The host also holds the bureau to the protocol's SHAPE, so that a split answers only
what an honest tree would: per tree node, one recorded split (a retry must be
identical: same feature, bin, rows and other rows); splits only in the current tree;
a tree node's rows are the ones the protocol gives it. The host tracks the rows of
every tree node of the current tree it can infer: the root holds every fit row; a
histogram request for a child (the smaller one, as the protocol asks) fixes that
child's rows, a subset of its parent's, and its sibling's (the rest); the host's own
splits fix both children (rows and other rows). A split at a tree node whose rows the
host cannot infer (no histogram asked at it or at its sibling: its parent was never
split) is refused, and so is one over other rows than the node's. Other rows of two
tree nodes of one level never overlap. So per tree a row meets at most one split per
level (at most 2^max_depth − 1 splits per tree), as in an honest run. What the host
cannot check is WHICH candidate the bureau picks (it never sees g or h, so not the
gain): a malicious bureau can still steer each split to a threshold of its choosing
and, over many trees, learn rows' bins (README, "Known limits").
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from creditshare.errors import InvalidInputError
from creditshare.trees._binning import FeatureBins
from creditshare.trees._config import TreeConfig
from creditshare.trees._model import SplitRule, TreeShard, check_shape

__all__ = ["HostCore"]

T = TypeVar("T")


@dataclass(frozen=True)
class _Recorded:
    """A recorded split and a digest of what it was asked over (for retries)."""

    rule: SplitRule
    feature: int
    bin: int
    rows: str  # SHA-256 of the sorted fit rows
    others: str  # SHA-256 of the sorted other rows


def _digest(rows: NDArray[np.intp]) -> str:
    return hashlib.sha256(np.sort(rows).astype("<i8").tobytes()).hexdigest()


def _level(position: int) -> int:
    return (position + 1).bit_length() - 1


def _index(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInputError(f"{what} must be an integer, got {value!r}")
    return int(value)


class HostCore(Generic[T]):
    """Binning, gradient chunks (items of type T), row checks and split rules."""

    def __init__(
        self,
        name: str,
        values: NDArray[np.float64],
        feature_names: Sequence[str],
        population: NDArray[np.float64],
        config: TreeConfig,
        shuffle: bool = True,
    ) -> None:
        self._name = name
        self.config = config
        data = np.asarray(values, dtype=np.float64)
        everyone = np.asarray(population, dtype=np.float64)
        names = list(feature_names)
        if data.ndim != 2 or data.shape[1] != len(names):
            raise InvalidInputError(
                f"node {name}: job values must be rows × {len(names)} features, got shape "
                f"{data.shape}"
            )
        if everyone.ndim != 2 or everyone.shape[1] != len(names) or everyone.shape[0] == 0:
            raise InvalidInputError(
                f"node {name}: population must be a non-empty records × {len(names)} "
                f"features matrix, got shape {everyone.shape}"
            )
        if len(set(names)) != len(names) or not names:
            raise InvalidInputError(f"node {name}: feature names must be distinct and non-empty")
        order = list(range(len(names)))
        if shuffle:
            secrets.SystemRandom().shuffle(order)
        self._bins = [FeatureBins.fit(names[j], everyone[:, j], config.max_bins) for j in order]
        self.bin_counts: list[int] = [b.count for b in self._bins]
        self.rows = data.shape[0]
        self._binned = np.empty((self.rows, len(order)), dtype=np.uint16)
        for k, j in enumerate(order):
            self._binned[:, k] = self._bins[k].bin_of(data[:, j])
        self._tree = -1
        self._complete = False
        self._pending: dict[int, T] = {}
        self._total = 0
        self._fit: NDArray[np.bool_] = np.zeros(self.rows, dtype=bool)
        self._rules: dict[tuple[int, int], _Recorded] = {}
        #: Splits recorded over the job, including those of trees dropped later.
        self.splits_recorded = 0
        self._reset_tree()
        self._closed = False

    def _reset_tree(self) -> None:
        """Forget the row sets of the previous tree's nodes (see the module docstring)."""
        self._known: dict[int, NDArray[np.intp]] = {}  # sorted fit rows per tree node
        self._known_others: dict[int, NDArray[np.intp]] = {}  # sorted, own splits' children
        self._level_others: dict[int, NDArray[np.bool_]] = {}  # other rows used per level

    @property
    def name(self) -> str:
        return self._name

    @property
    def binned(self) -> NDArray[np.uint16]:
        """Job rows × features (shuffled order) bin indices."""
        return self._binned

    # ----------------------------------------------------------------- gradients

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInputError(f"node {self._name}: this job's tree host is closed")

    def accept_chunk(
        self, tree: int, rows: Sequence[int], items: Sequence[T], total: int, final: bool
    ) -> tuple[list[int], list[T]] | None:
        """Take one chunk of a tree's gradients; on the final chunk, every (row, item)
        of the tree in row order. A new tree number starts over (the old tree's
        gradients are dropped; its split rules stay)."""
        self._check_open()
        tree = _index(tree, "tree")
        total = _index(total, "total")
        if not 0 <= tree < self.config.trees:
            raise InvalidInputError(f"tree {tree} is outside 0 to {self.config.trees - 1}")
        if tree < self._tree:
            raise InvalidInputError(f"gradients for tree {tree} after tree {self._tree}")
        if tree == self._tree and self._complete:
            raise InvalidInputError(f"tree {tree}'s gradients are already complete")
        if len(rows) != len(items):
            raise InvalidInputError(
                f"tree {tree}: {len(rows)} rows but {len(items)} gradient ciphertexts"
            )
        if not self.config.min_child_rows <= total <= self.rows:
            raise InvalidInputError(
                f"tree {tree}: total {total} fit rows is outside {self.config.min_child_rows} "
                f"to the job's {self.rows} rows"
            )
        fresh = tree != self._tree
        pending = {} if fresh else self._pending
        if not fresh and total != self._total:
            raise InvalidInputError(
                f"tree {tree}: total {total} differs from the earlier chunks' {self._total}"
            )
        positions = [_index(r, "row") for r in rows]
        for r in positions:
            if not 0 <= r < self.rows:
                raise InvalidInputError(
                    f"tree {tree}: row {r} is outside the job's {self.rows} rows"
                )
        if len(set(positions)) != len(positions) or any(r in pending for r in positions):
            raise InvalidInputError(f"tree {tree}: a row's gradients arrived twice")
        received = len(pending) + len(positions)
        if received > total or (final and received != total):
            raise InvalidInputError(
                f"tree {tree}: {received} rows' gradients received, total says {total}"
            )
        if fresh:
            self._tree, self._complete, self._total = tree, False, total
            self._pending = pending
            self._reset_tree()
        self._pending.update(zip(positions, items, strict=True))
        if not final:
            return None
        order = sorted(self._pending)
        out = [self._pending[r] for r in order]
        self._pending = {}
        self._fit = np.zeros(self.rows, dtype=bool)
        self._fit[order] = True
        self._complete = True
        return order, out

    # --------------------------------------------------------------- row checks

    def _check_tree(self, tree: int) -> int:
        self._check_open()
        tree = _index(tree, "tree")
        if tree != self._tree or not self._complete:
            raise InvalidInputError(
                f"tree {tree} has no complete gradients here (the current tree is {self._tree})"
            )
        return tree

    def _position(self, position: int, tree: int) -> int:
        position = _index(position, "position")
        if not 0 <= position < 2 ** (self.config.max_depth + 1) - 1:
            raise InvalidInputError(
                f"tree {tree}: position {position} is not a node of a tree of depth "
                f"{self.config.max_depth}"
            )
        return position

    def fit_rows(self, rows: Sequence[int], where: str) -> NDArray[np.intp]:
        """``rows`` as an array: distinct fit rows, at least ``min_child_rows``."""
        array = np.asarray([_index(r, "row") for r in rows], dtype=np.intp)
        floor = self.config.min_child_rows
        if array.size < floor:
            raise InvalidInputError(
                f"{where}: {array.size} rows is fewer than the node's floor of {floor}"
            )
        if np.any((array < 0) | (array >= self.rows)) or not np.all(self._fit[array]):
            raise InvalidInputError(f"{where}: a row is not one of this tree's fit rows")
        if np.unique(array).size != array.size:
            raise InvalidInputError(f"{where}: a row is listed twice")
        return array

    def check_nodes(
        self, tree: int, nodes: Sequence[tuple[int, Sequence[int]]]
    ) -> list[tuple[int, NDArray[np.intp]]]:
        """Histogram requests, validated: (position, fit rows) per tree node."""
        tree = self._check_tree(tree)
        out = []
        seen: set[int] = set()
        known = dict(self._known)
        for position, rows in nodes:
            position = self._position(position, tree)
            if position in seen:
                raise InvalidInputError(f"tree {tree}: position {position} is asked twice")
            seen.add(position)
            where = f"tree {tree} position {position}"
            array = self.fit_rows(rows, where)
            self._place(known, position, np.sort(array), where)
            out.append((position, array))
        self._known = known
        return out

    def _place(
        self, known: dict[int, NDArray[np.intp]], position: int, rows: NDArray[np.intp], where: str
    ) -> None:
        """Check a histogram request's (sorted) rows against what the host knows of the
        tree node and record them (and the sibling's, the rest of the parent's)."""
        if position in known:
            if not np.array_equal(known[position], rows):
                raise InvalidInputError(
                    f"{where}: these rows differ from the rows this tree node holds"
                )
            return
        if position == 0:
            if rows.size != int(self._fit.sum()):
                raise InvalidInputError(f"{where}: the root holds every fit row of the tree")
            known[0] = rows
            return
        parent = (position - 1) // 2
        if parent not in known:
            raise InvalidInputError(
                f"{where}: position {parent}, its parent, holds no known rows (it was not split)"
            )
        inside = np.isin(rows, known[parent], assume_unique=True)
        rest = known[parent].size - rows.size
        if not np.all(inside) or rest < self.config.min_child_rows:
            raise InvalidInputError(
                f"{where}: these rows are not a child of position {parent}'s rows leaving at "
                f"least {self.config.min_child_rows} to the sibling"
            )
        sibling = position + 1 if position % 2 else position - 1
        known[position] = rows
        known[sibling] = np.setdiff1d(known[parent], rows, assume_unique=True)

    # ------------------------------------------------------------------- splits

    def split(
        self,
        tree: int,
        position: int,
        feature: int,
        bin: int,
        rows: Sequence[int],
        other_rows: Sequence[int],
    ) -> list[bool]:
        """Record the split of ``position`` after ``bin`` of (shuffled) ``feature``;
        per row then per other row, True when it goes left. Refused (InvalidInputError)
        when a child would hold fewer than ``min_child_rows`` fit rows."""
        tree = self._check_tree(tree)
        position = self._position(position, tree)
        where = f"tree {tree} position {position}"
        if 2 * position + 2 >= 2 ** (self.config.max_depth + 1) - 1:
            raise InvalidInputError(f"{where}: a split here is deeper than max_depth")
        feature = _index(feature, "feature")
        if not 0 <= feature < len(self._bins):
            raise InvalidInputError(
                f"{where}: feature {feature} is outside 0 to {len(self._bins) - 1}"
            )
        bin = _index(bin, "bin")
        threshold = self._bins[feature].threshold(bin)
        fit = self.fit_rows(rows, where)
        others = np.asarray([_index(r, "other row") for r in other_rows], dtype=np.intp)
        if np.any((others < 0) | (others >= self.rows)):
            raise InvalidInputError(f"{where}: an other row is outside the job's {self.rows} rows")
        if np.any(self._fit[others]) or np.unique(others).size != others.size:
            raise InvalidInputError(
                f"{where}: other rows must be distinct rows outside the fit set"
            )
        left = self._binned[fit, feature] <= bin
        other_left = self._binned[others, feature] <= bin
        bits = [bool(x) for x in left] + [bool(x) for x in other_left]
        place = (tree, position)
        asked = (feature, bin, _digest(fit), _digest(others))
        earlier = self._rules.get(place)
        if earlier is not None:
            if (earlier.feature, earlier.bin, earlier.rows, earlier.others) != asked:
                raise InvalidInputError(
                    f"{where} is already split; a retry must repeat the same feature, bin, "
                    "rows and other rows"
                )
            return bits  # an identical retry: the same answer, nothing new
        self._check_rows(position, fit, others, where)
        n_left = int(left.sum())
        floor = self.config.min_child_rows
        if n_left < floor or fit.size - n_left < floor:
            raise InvalidInputError(
                f"{where}: this split leaves fewer than the node's floor of {floor} fit rows "
                "in a child"
            )
        children = {
            2 * position + 1: (np.sort(fit[left]), np.sort(others[other_left])),
            2 * position + 2: (np.sort(fit[~left]), np.sort(others[~other_left])),
        }
        for child, (child_rows, _) in children.items():
            if child in self._known and not np.array_equal(self._known[child], child_rows):
                raise InvalidInputError(
                    f"{where}: the rows asked at position {child} are not this split's child"
                )
        rule = SplitRule(
            tree, position, self._bins[feature].name, threshold, n_left >= fit.size - n_left
        )
        self._rules[place] = _Recorded(rule, feature, bin, asked[2], asked[3])
        self.splits_recorded += 1
        level = _level(position)
        used = self._level_others.setdefault(level, np.zeros(self.rows, dtype=bool))
        used[others] = True
        for child, (child_rows, child_others) in children.items():
            self._known[child] = child_rows
            self._known_others[child] = child_others
        return bits

    def _check_rows(
        self, position: int, fit: NDArray[np.intp], others: NDArray[np.intp], where: str
    ) -> None:
        """A first split at ``position``: over the rows the tree node holds (module
        docstring), with other rows no other tree node of the level was split over."""
        known = self._known.get(position)
        if known is None:
            if position == 0:
                raise InvalidInputError(f"{where}: the root's histograms were not asked")
            raise InvalidInputError(
                f"{where}: no histogram was asked here or at the sibling, so the parent "
                f"position {(position - 1) // 2} was not split"
            )
        if not np.array_equal(known, np.sort(fit)):
            raise InvalidInputError(f"{where}: these rows are not the rows this tree node holds")
        expected = self._known_others.get(position)
        if expected is not None and not np.array_equal(expected, np.sort(others)):
            raise InvalidInputError(
                f"{where}: these other rows are not the ones this tree node holds"
            )
        used = self._level_others.get(_level(position))
        if used is not None and np.any(used[others]):
            raise InvalidInputError(
                f"{where}: an other row is already split at another position of this level"
            )

    def shard(self, shapes: Sequence[tuple[frozenset[int], frozenset[int]]]) -> TreeShard:
        """This node's ``TreeShard`` of the kept trees ``(internal, owned)``: its
        recorded splits of each kept tree must be exactly ``owned``; rules of later
        (dropped) trees are discarded."""
        self._check_open()
        kept: list[frozenset[int]] = []
        rules: list[SplitRule] = []
        for k, (internal, owned) in enumerate(shapes):
            inner = check_shape(internal, f"tree {k}")
            mine = frozenset(owned)
            if not mine <= inner:
                raise InvalidInputError(
                    f"tree {k}: owned positions {sorted(mine - inner)} are not splits"
                )
            recorded = frozenset(p for (t, p) in self._rules if t == k)
            if recorded != mine:
                raise InvalidInputError(
                    f"tree {k}: this node split positions {sorted(recorded)}, the model says it "
                    f"owns {sorted(mine)}"
                )
            kept.append(inner)
            rules.extend(self._rules[(k, p)].rule for p in sorted(mine))
        shard = TreeShard(tuple(kept), tuple(rules))
        self._rules = {place: r for place, r in self._rules.items() if place[0] < len(kept)}
        return shard

    def close(self) -> None:
        self._closed = True
        self._pending = {}
