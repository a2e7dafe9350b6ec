"""Tree models: what the coordinator publishes, what each node keeps, how a score is read.

Positions are heap indices: the root is 0 and the children of ``i`` are ``2i + 1``
(left: the split's feature value is below its threshold) and ``2i + 2`` (right). A
tree's shape is its set of internal positions; its leaves are the children of internal
positions that are not internal themselves (or the root alone, for a tree that never
split). Leaves are always listed in ascending position and trees in boosting order:
that flattened order is the order of the per-leaf indicators in private scoring.

Who holds what (see the README's "Gradient-boosted trees" section):

* the coordinator publishes a ``TreeModel``: every tree's shape, which node owns each
  split (node ids only, never a feature or a threshold), the leaf weights and the base
  score;
* each node keeps a ``TreeShard``: every tree's shape and its own ``SplitRule``s
  (feature, threshold, the direction for an enterprise it holds no record of);
* nobody holds both a node's thresholds and another node's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from creditshare.errors import InvalidInputError
from creditshare.trees._config import MAX_DEPTH, MAX_TREES

__all__ = [
    "PublicTree",
    "SplitRule",
    "TreeModel",
    "TreeShard",
    "check_shape",
    "leaf_path",
    "leaves_of",
]

#: Heap positions of a tree of MAX_DEPTH: 0 .. 2^(MAX_DEPTH+1) − 2.
_MAX_POSITION = 2 ** (MAX_DEPTH + 1) - 2
_MAX_NODE_ID = 64


def leaves_of(internal: Iterable[int]) -> tuple[int, ...]:
    """The leaf positions of the tree whose internal positions are ``internal``."""
    inner = set(internal)
    if not inner:
        return (0,)
    children = {c for p in inner for c in (2 * p + 1, 2 * p + 2)}
    return tuple(sorted(children - inner))


def leaf_path(leaf: int) -> list[tuple[int, bool]]:
    """(ancestor position, whether the path goes left there), from the leaf upwards."""
    path = []
    position = leaf
    while position:
        parent = (position - 1) // 2
        path.append((parent, position == 2 * parent + 1))
        position = parent
    return path


def check_shape(internal: Iterable[int], where: str = "tree") -> frozenset[int]:
    """The shape as a frozenset, or InvalidInputError saying what is wrong with it."""
    inner = frozenset(internal)
    for p in inner:
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= _MAX_POSITION:
            raise InvalidInputError(
                f"{where}: split position {p!r} is not a heap position of a tree of depth "
                f"at most {MAX_DEPTH}"
            )
        if 2 * p + 2 > _MAX_POSITION:
            raise InvalidInputError(f"{where}: a split at {p} is deeper than {MAX_DEPTH}")
        if p and (p - 1) // 2 not in inner:
            raise InvalidInputError(f"{where}: the split at {p} has no parent split")
    return inner


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{what} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(f"{what} must be finite")
    return number


def _node_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_NODE_ID:
        raise InvalidInputError(f"{what} must be a node id of 1 to {_MAX_NODE_ID} characters")
    return value


@dataclass(frozen=True, slots=True)
class PublicTree:
    """One tree as the coordinator publishes it: no feature, no threshold."""

    #: Internal position -> the node that owns (and alone knows) that split.
    owners: Mapping[int, str]
    #: Leaf position -> leaf weight (the learning rate already applied).
    weights: Mapping[int, float]

    def __post_init__(self) -> None:
        internal = check_shape(self.owners)
        if set(self.weights) != set(leaves_of(internal)):
            raise InvalidInputError(
                f"leaf weights are given for positions {sorted(self.weights)}, the tree's "
                f"leaves are {list(leaves_of(internal))}"
            )

    @property
    def internal(self) -> frozenset[int]:
        return frozenset(self.owners)

    @property
    def leaves(self) -> tuple[int, ...]:
        return leaves_of(self.owners)

    def leaf(self, goes_left: Callable[[int], bool]) -> int:
        """The leaf reached when ``goes_left(position)`` gives every split's direction."""
        position = 0
        while position in self.owners:
            position = 2 * position + (1 if goes_left(position) else 2)
        return position


@dataclass(frozen=True, slots=True)
class TreeModel:
    """The published part of a tree model: enough to combine, never to route a row."""

    #: Log-odds before any tree (the bureau's prior, logit of the fit rows' default rate).
    base_score: float
    trees: tuple[PublicTree, ...]

    def __post_init__(self) -> None:
        if not 0 < len(self.trees) <= MAX_TREES:
            raise InvalidInputError(f"a tree model holds 1 to {MAX_TREES} trees")
        _finite(self.base_score, "base_score")
        for t, tree in enumerate(self.trees):
            for leaf, weight in tree.weights.items():
                _finite(weight, f"tree {t} leaf {leaf} weight")

    @property
    def leaf_count(self) -> int:
        return sum(len(t.leaves) for t in self.trees)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node that owns a split, sorted: the nodes a private score needs."""
        return tuple(sorted({o for t in self.trees for o in t.owners.values()}))

    def shapes(self) -> tuple[frozenset[int], ...]:
        return tuple(t.internal for t in self.trees)

    def owned_by(self, node: str) -> tuple[frozenset[int], ...]:
        """Per tree, the split positions ``node`` owns."""
        return tuple(frozenset(p for p, o in t.owners.items() if o == node) for t in self.trees)

    def leaf_weights(self) -> list[float]:
        """Every leaf weight, flattened in indicator order (trees, then leaf positions)."""
        return [t.weights[leaf] for t in self.trees for leaf in t.leaves]

    def margin(self, goes_left: Callable[[int, int], bool]) -> float:
        """Log-odds of a row whose direction at (tree, position) is ``goes_left``."""
        terms = [t.weights[t.leaf(partial(goes_left, k))] for k, t in enumerate(self.trees)]
        return math.fsum([self.base_score, *terms])

    def margin_from_bits(self, bits: Sequence[Sequence[int]]) -> float:
        """Log-odds from every owning node's ``TreeShard.leaf_bits`` (in ``nodes`` order,
        or any order): exactly one leaf per tree is consistent with all of them."""
        weights = self.leaf_weights()
        chosen = [w for k, w in enumerate(weights) if all(b[k] for b in bits)]
        if len(chosen) != len(self.trees):
            raise InvalidInputError(
                f"{len(chosen)} leaves are consistent with every node's splits, expected one "
                f"per tree ({len(self.trees)})"
            )
        return math.fsum([self.base_score, *chosen])

    def truncated(self, count: int) -> TreeModel:
        """The first ``count`` trees (early stopping keeps the best round)."""
        return TreeModel(self.base_score, self.trees[:count])

    def to_document(self) -> dict[str, Any]:
        return {
            "base_score": self.base_score,
            "trees": [
                {
                    "owners": {str(p): o for p, o in sorted(t.owners.items())},
                    "weights": {str(p): w for p, w in sorted(t.weights.items())},
                }
                for t in self.trees
            ],
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> TreeModel:
        """The model a JSON document holds; InvalidInputError naming the tree and field."""
        if not isinstance(document, Mapping) or set(document) != {"base_score", "trees"}:
            raise InvalidInputError("a tree model document holds exactly base_score and trees")
        trees = document["trees"]
        if not isinstance(trees, list) or not 0 < len(trees) <= MAX_TREES:
            raise InvalidInputError(f"trees must be a list of 1 to {MAX_TREES} trees")
        out = []
        for k, tree in enumerate(trees):
            if not isinstance(tree, Mapping) or set(tree) != {"owners", "weights"}:
                raise InvalidInputError(f"tree {k} must hold exactly owners and weights")
            owners = {
                _position(p, f"tree {k} owners"): _node_id(o, f"tree {k} owner of {p}")
                for p, o in _mapping(tree["owners"], f"tree {k} owners").items()
            }
            weights = {
                _position(p, f"tree {k} weights"): _finite(w, f"tree {k} leaf {p} weight")
                for p, w in _mapping(tree["weights"], f"tree {k} weights").items()
            }
            try:
                out.append(PublicTree(owners, weights))
            except InvalidInputError as exc:
                raise InvalidInputError(f"tree {k}: {exc}") from None
        return cls(_finite(document["base_score"], "base_score"), tuple(out))


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be an object keyed by position")
    return value


def _position(key: Any, what: str) -> int:
    if not isinstance(key, str) or not key.isdigit() or len(key) > 3:
        raise InvalidInputError(f"{what}: {key!r} is not a position")
    return int(key)


@dataclass(frozen=True, slots=True)
class SplitRule:
    """One split a node owns: it alone knows the feature and threshold."""

    tree: int
    position: int
    feature: str
    #: Rows whose value is below it go left (XGBoost's ``x < split_condition``).
    threshold: float
    #: Where an enterprise goes when this node holds no record of it: towards the child
    #: that received more fit rows (ties: left), the same at training and at scoring.
    default_left: bool

    def goes_left(self, value: float | None) -> bool:
        if value is None:
            return self.default_left
        return value < self.threshold


@dataclass(frozen=True, slots=True)
class TreeShard:
    """What one node keeps of a tree model: every tree's shape and its own split rules."""

    shapes: tuple[frozenset[int], ...]
    rules: tuple[SplitRule, ...]

    def __post_init__(self) -> None:
        if not 0 < len(self.shapes) <= MAX_TREES:
            raise InvalidInputError(f"a tree shard covers 1 to {MAX_TREES} trees")
        for k, shape in enumerate(self.shapes):
            check_shape(shape, f"tree {k}")
        seen: set[tuple[int, int]] = set()
        for rule in self.rules:
            where = (rule.tree, rule.position)
            if not 0 <= rule.tree < len(self.shapes) or rule.position not in self.shapes[rule.tree]:
                raise InvalidInputError(
                    f"a rule at tree {rule.tree} position {rule.position} is not a split of "
                    "the model's shape"
                )
            if where in seen:
                raise InvalidInputError(f"two rules at tree {rule.tree} position {rule.position}")
            _finite(rule.threshold, f"threshold at tree {rule.tree} position {rule.position}")
            seen.add(where)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(sorted({r.feature for r in self.rules}))

    @property
    def leaf_count(self) -> int:
        return sum(len(leaves_of(s)) for s in self.shapes)

    def leaf_bits(self, values: Mapping[str, float] | None) -> list[int]:
        """Per leaf (indicator order), 1 if the leaf is consistent with this node's own
        splits for a record with feature ``values`` (None: no record held here)."""
        by_place = {(r.tree, r.position): r for r in self.rules}
        directions: dict[tuple[int, int], bool] = {}
        for place, rule in by_place.items():
            value = None if values is None else values.get(rule.feature)
            if values is not None and value is None:
                raise InvalidInputError(f"feature {rule.feature!r} has no value")
            directions[place] = rule.goes_left(value)
        bits: list[int] = []
        for t, shape in enumerate(self.shapes):
            for leaf in leaves_of(shape):
                ok = all(
                    directions[(t, p)] == left
                    for p, left in leaf_path(leaf)
                    if (t, p) in directions
                )
                bits.append(1 if ok else 0)
        return bits

    def to_document(self) -> dict[str, Any]:
        return {
            "shapes": [sorted(s) for s in self.shapes],
            "rules": [
                {
                    "tree": r.tree,
                    "position": r.position,
                    "feature": r.feature,
                    "threshold": r.threshold,
                    "default_left": r.default_left,
                }
                for r in sorted(self.rules, key=lambda r: (r.tree, r.position))
            ],
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> TreeShard:
        if not isinstance(document, Mapping) or set(document) != {"shapes", "rules"}:
            raise InvalidInputError("a tree shard document holds exactly shapes and rules")
        shapes, rules = document["shapes"], document["rules"]
        if not isinstance(shapes, list) or not isinstance(rules, list):
            raise InvalidInputError("shapes and rules must be lists")
        out = []
        for k, rule in enumerate(rules):
            keys = {"tree", "position", "feature", "threshold", "default_left"}
            if not isinstance(rule, Mapping) or set(rule) != keys:
                raise InvalidInputError(f"rule {k} must hold exactly {sorted(keys)}")
            if not isinstance(rule["feature"], str) or not isinstance(rule["default_left"], bool):
                raise InvalidInputError(f"rule {k}: feature must be text, default_left a boolean")
            for name in ("tree", "position"):
                if isinstance(rule[name], bool) or not isinstance(rule[name], int):
                    raise InvalidInputError(f"rule {k}: {name} must be an integer")
            out.append(
                SplitRule(
                    rule["tree"],
                    rule["position"],
                    rule["feature"],
                    _finite(rule["threshold"], f"rule {k} threshold"),
                    rule["default_left"],
                )
            )
        if not all(isinstance(s, list) for s in shapes):
            raise InvalidInputError("each shape must be a list of positions")
        return cls(tuple(check_shape(s, f"tree {k}") for k, s in enumerate(shapes)), tuple(out))
