"""The bureau's side of tree training, over a pluggable channel to the parties.

One driver grows every tree for both the encrypted protocol (``train_trees``: Paillier
gradients, compressed encrypted histograms) and the same protocol in plaintext
(``train_trees_plain``): only the ``Channel`` differs (how gradients travel and how a
histogram comes back), so the plaintext benchmark row and the equality tests exercise
exactly the code that runs in production.

Per tree: margins → g = p − y, h = p(1 − p) over the fit rows; the channel ships them
to every party; level by level the driver asks each party for histograms of the tree
nodes it can still split — the root, then only the SMALLER child of each split (the
larger sibling is parent − smaller, in plaintext) — ranks every party's candidate
splits (``rank_splits``) and asks the owner of the best one to split, falling back to
the next candidate when the owner refuses (its ``min_child_rows`` floor). Leaf weights
come from the bureau's own exact g, h sums, never from decrypted histograms. Other row
sets (validation, test) follow every split, so their margins are exactly what the
kept rules give.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from creditshare.errors import InvalidInputError
from creditshare.federated import auc, log_loss
from creditshare.trees._config import TreeConfig
from creditshare.trees._model import PublicTree, TreeModel, TreeShard
from creditshare.trees._split import Histogram, SplitCandidate, leaf_weight, rank_splits

__all__ = ["Channel", "Rows", "TreeReport", "TreeTrainingResult", "grow_trees"]

#: Job row positions: a sequence of ints or an integer array.
Rows = Sequence[int] | NDArray[np.integer[Any]]


@dataclass(frozen=True)
class TreeReport:
    """Progress after one tree: losses of the model so far, and the tree's time."""

    tree: int
    train_loss: float
    #: NaN when there is no validation set (or it holds one class, for the AUC).
    validation_loss: float
    validation_auc: float
    seconds: float


@dataclass
class TreeTrainingResult:
    """The kept model (truncated to the best round) and what the bureau measured."""

    model: TreeModel
    reports: list[TreeReport]
    #: Per named set of other rows, their margins (log-odds) under ``model``.
    margins: dict[str, NDArray[np.float64]]
    #: Each party's shard of ``model`` when the driver holds the parties (plaintext
    #: protocol); empty otherwise (nodes build theirs at CloseJob).
    shards: dict[str, TreeShard] = field(default_factory=dict)


class Channel(Protocol):
    """How the driver reaches the parties of one job (encrypted or plaintext)."""

    @property
    def names(self) -> Sequence[str]: ...

    def send_gradients(
        self, tree: int, rows: NDArray[np.intp], g: NDArray[np.float64], h: NDArray[np.float64]
    ) -> None: ...

    def histograms(
        self, party: int, tree: int, nodes: Sequence[tuple[int, NDArray[np.intp]]]
    ) -> dict[int, list[Histogram]]: ...

    def split(
        self,
        party: int,
        tree: int,
        position: int,
        feature: int,
        bin: int,
        rows: NDArray[np.intp],
        other_rows: NDArray[np.intp],
    ) -> list[bool]: ...


def _sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


def _subtract(parent: list[Histogram], child: list[Histogram]) -> list[Histogram]:
    return [(pg - cg, ph - ch) for (pg, ph), (cg, ch) in zip(parent, child, strict=True)]


@dataclass
class _Node:
    rows: NDArray[np.intp]  # fit rows here
    others: NDArray[np.intp]  # other rows here


class _Grower:
    """Grows one tree; holds the job's labels and the current g, h."""

    def __init__(
        self, channel: Channel, config: TreeConfig, g: NDArray[np.float64], h: NDArray[np.float64]
    ) -> None:
        self.channel, self.config, self.g, self.h = channel, config, g, h
        self.parties = len(channel.names)

    def _splittable(self, node: _Node, depth: int) -> bool:
        return depth < self.config.max_depth and node.rows.size >= 2 * self.config.min_child_rows

    def grow(
        self, tree: int, fit: NDArray[np.intp], others: NDArray[np.intp]
    ) -> tuple[PublicTree, dict[int, _Node]]:
        owners: dict[int, str] = {}
        level: dict[int, _Node] = {0: _Node(fit, others)}
        hists: dict[int, list[list[Histogram]]] = {}  # position -> per party, per feature
        leaves: dict[int, _Node] = {}
        depth = 0
        while level:
            self._level_histograms(tree, level, hists, depth)
            for stale in [p for p in hists if p not in level]:
                del hists[stale]  # the parents' histograms served their subtraction
            following: dict[int, _Node] = {}
            for position in sorted(level):
                node = level[position]
                split = self._split(tree, position, node, hists.get(position), depth)
                if split is None:
                    leaves[position] = node
                    continue
                owner, left, right = split
                owners[position] = self.channel.names[owner]
                following[2 * position + 1] = left
                following[2 * position + 2] = right
            level = following
            depth += 1
        weights = {
            p: leaf_weight(float(self.g[n.rows].sum()), float(self.h[n.rows].sum()), self.config)
            for p, n in leaves.items()
        }
        return PublicTree(owners, weights), leaves

    def _level_histograms(
        self,
        tree: int,
        level: dict[int, _Node],
        hists: dict[int, list[list[Histogram]]],
        depth: int,
    ) -> None:
        """Histograms of every splittable node of the level: ask the root, or the smaller
        child of each split (ties: left) and subtract it from the parent's."""
        ask: dict[int, NDArray[np.intp]] = {}
        derive: list[tuple[int, int, int]] = []  # (position, parent, asked sibling)
        for position in sorted(level):
            if position == 0:
                if self._splittable(level[0], depth):
                    ask[0] = level[0].rows
                continue
            if position % 2 == 0:
                continue  # handled with its left sibling
            left, right = position, position + 1
            wanted = [p for p in (left, right) if self._splittable(level[p], depth)]
            if not wanted:
                continue
            small = left if level[left].rows.size <= level[right].rows.size else right
            ask[small] = level[small].rows
            large = right if small == left else left
            if large in wanted:
                derive.append((large, (position - 1) // 2, small))
        if not ask:
            return
        nodes = sorted(ask.items())
        answers = [self.channel.histograms(k, tree, nodes) for k in range(self.parties)]
        for position in ask:
            hists[position] = [answers[k][position] for k in range(self.parties)]
        for position, parent, sibling in derive:
            hists[position] = [
                _subtract(hists[parent][k], hists[sibling][k]) for k in range(self.parties)
            ]

    def _check_refusal(self, candidate: SplitCandidate, total_h: float, exc: Exception) -> None:
        """A refusal the floor cannot explain is a failing node: fail the job naming it
        rather than silently growing a different tree."""
        if not _refusal_possible(candidate, total_h, self.config.min_child_rows):
            raise InvalidInputError(
                f"node {self.channel.names[candidate.party]} refused a split whose children "
                f"hold at least {self.config.min_child_rows} fit rows each: {exc}"
            ) from exc

    def _split(
        self, tree: int, position: int, node: _Node, hist: list[list[Histogram]] | None, depth: int
    ) -> tuple[int, _Node, _Node] | None:
        if hist is None or not self._splittable(node, depth):
            return None
        total_g, total_h = float(self.g[node.rows].sum()), float(self.h[node.rows].sum())
        for candidate in rank_splits(hist, total_g, total_h, self.config):
            try:
                bits = self.channel.split(
                    candidate.party,
                    tree,
                    position,
                    candidate.feature,
                    candidate.bin,
                    node.rows,
                    node.others,
                )
            except InvalidInputError as exc:
                self._check_refusal(candidate, total_h, exc)
                continue  # the owner's floor: try the next best split
            if len(bits) != node.rows.size + node.others.size:
                raise InvalidInputError(
                    f"node {self.channel.names[candidate.party]} answered {len(bits)} split "
                    f"bits for {node.rows.size + node.others.size} rows"
                )
            go = np.asarray(bits, dtype=bool)
            fit_left, other_left = go[: node.rows.size], go[node.rows.size :]
            left = _Node(node.rows[fit_left], node.others[other_left])
            right = _Node(node.rows[~fit_left], node.others[~other_left])
            if left.rows.size == 0 or right.rows.size == 0:
                raise InvalidInputError(
                    f"node {self.channel.names[candidate.party]} split tree {tree} position "
                    f"{position} into an empty child"
                )
            return candidate.party, left, right
        return None


_H_MAX = 0.25  # a logistic hessian p(1 − p) never exceeds ¼


def _refusal_possible(candidate: SplitCandidate, total_h: float, floor: int) -> bool:
    """Whether a child of ``candidate`` might hold fewer than ``floor`` fit rows: a child
    with hessian sum H holds at least H/¼ rows, so a split both of whose children sum to
    at least floor·¼ (plus fixed-point slack) can never be refused for the floor."""
    smaller = min(candidate.left_h, total_h - candidate.left_h)
    return smaller / _H_MAX < floor + 1e-6


def _check_inputs(
    labels: NDArray[np.float64], fit: Rows, others: Mapping[str, Rows]
) -> tuple[NDArray[np.float64], NDArray[np.intp], dict[str, NDArray[np.intp]]]:
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 1 or not np.all((y == 0) | (y == 1)):
        raise InvalidInputError("labels must be 0 or 1, one per job row")
    fit_rows = np.asarray(fit, dtype=np.intp)
    named = {k: np.asarray(v, dtype=np.intp) for k, v in others.items()}
    every = np.concatenate([fit_rows, *named.values()])
    if np.any((every < 0) | (every >= y.size)):
        raise InvalidInputError(f"a fit or other row is outside the job's {y.size} rows")
    if np.unique(every).size != every.size:
        raise InvalidInputError("fit rows and other row sets must be distinct and disjoint")
    mean = float(y[fit_rows].mean()) if fit_rows.size else 0.0
    if not 0 < mean < 1:
        raise InvalidInputError("the fit rows must hold both labels (0 and 1)")
    return y, fit_rows, named


def grow_trees(
    channel: Channel,
    labels: NDArray[np.float64],
    fit: Rows,
    others: Mapping[str, Rows],
    config: TreeConfig,
    validation: str | None = "validation",
    on_tree: Callable[[TreeReport], None] | None = None,
) -> TreeTrainingResult:
    """Boost ``config.trees`` trees over ``channel``'s parties (see the module docstring)."""
    y, fit_rows, named = _check_inputs(labels, fit, others)
    base = math.log(float(y[fit_rows].mean()) / (1 - float(y[fit_rows].mean())))
    other_rows = np.concatenate(list(named.values())) if named else np.zeros(0, dtype=np.intp)
    margin = np.full(y.size, base)
    # Per tree, each other row's leaf weight (to rebuild margins of a truncated model).
    contributions: list[NDArray[np.float64]] = []
    trees: list[PublicTree] = []
    reports: list[TreeReport] = []
    valid = named.get(validation) if validation is not None else None
    has_validation = valid is not None and valid.size > 0
    best_loss, best_round = math.inf, 0
    for t in range(config.trees):
        started = time.perf_counter()
        p = _sigmoid(margin)
        g = p - y
        h = np.maximum(p * (1 - p), 1e-16)
        channel.send_gradients(t, fit_rows, g[fit_rows], h[fit_rows])
        tree, leaves = _Grower(channel, config, g, h).grow(t, fit_rows, other_rows)
        step = np.zeros(y.size)
        for position, node in leaves.items():
            step[node.rows] = tree.weights[position]
            step[node.others] = tree.weights[position]
        margin = margin + step
        contributions.append(step[other_rows])
        trees.append(tree)
        train_loss = log_loss(y[fit_rows], margin[fit_rows])
        if has_validation and valid is not None:
            validation_loss = log_loss(y[valid], margin[valid])
            both = 0 < float(y[valid].mean()) < 1
            validation_auc = auc(y[valid], margin[valid]) if both else math.nan
        else:
            validation_loss = validation_auc = math.nan
        report = TreeReport(
            t, train_loss, validation_loss, validation_auc, time.perf_counter() - started
        )
        reports.append(report)
        if on_tree is not None:
            on_tree(report)
        if has_validation and config.early_stopping_rounds:
            if validation_loss < best_loss - config.min_improvement:
                best_loss, best_round = validation_loss, t
            elif t - best_round >= config.early_stopping_rounds:
                break
    kept = len(trees)
    if has_validation and config.early_stopping_rounds:
        kept = best_round + 1
    model = TreeModel(base, tuple(trees)).truncated(kept)
    total = base + np.sum(contributions[:kept], axis=0) if other_rows.size else np.zeros(0)
    margins: dict[str, NDArray[np.float64]] = {}
    offset = 0
    for name, rows in named.items():
        margins[name] = np.asarray(total[offset : offset + rows.size], dtype=np.float64)
        offset += rows.size
    return TreeTrainingResult(model, reports, margins)
