"""What a tree host does whatever its histograms are made of: bins, rows, rules, shard.

``TreeHost`` (encrypted histograms, the node's side of a real job) and
``PlainTreeHost`` (plaintext histograms, the benchmark's and tests' protocol) share
this class, so both check the same things and refuse the same requests: rows outside
the fit set, duplicates, row sets under the ``min_child_rows`` floor, splits leaving a
child under it. Every check runs before any state changes, so a refused request
loses nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from creditshare.errors import InvalidInputError
from creditshare.trees._binning import FeatureBins
from creditshare.trees._config import TreeConfig
from creditshare.trees._model import SplitRule, TreeShard, check_shape

__all__ = ["HostCore"]

T = TypeVar("T")


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
        self._rules: dict[tuple[int, int], tuple[SplitRule, int, int]] = {}
        self._closed = False

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
        for position, rows in nodes:
            position = self._position(position, tree)
            if position in seen:
                raise InvalidInputError(f"tree {tree}: position {position} is asked twice")
            seen.add(position)
            out.append((position, self.fit_rows(rows, f"tree {tree} position {position}")))
        return out

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
        n_left = int(left.sum())
        floor = self.config.min_child_rows
        if n_left < floor or fit.size - n_left < floor:
            raise InvalidInputError(
                f"{where}: this split leaves fewer than the node's floor of {floor} fit rows "
                "in a child"
            )
        place = (tree, position)
        rule = SplitRule(
            tree, position, self._bins[feature].name, threshold, n_left >= fit.size - n_left
        )
        earlier = self._rules.get(place)
        if earlier is not None and earlier[1:] != (feature, bin):
            raise InvalidInputError(f"{where} is already split by another rule")
        self._rules[place] = (rule, feature, bin)
        other_left = self._binned[others, feature] <= bin
        return [bool(x) for x in left] + [bool(x) for x in other_left]

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
            rules.extend(self._rules[(k, p)][0] for p in sorted(mine))
        shard = TreeShard(tuple(kept), tuple(rules))
        self._rules = {place: r for place, r in self._rules.items() if place[0] < len(kept)}
        return shard

    def close(self) -> None:
        self._closed = True
        self._pending = {}
