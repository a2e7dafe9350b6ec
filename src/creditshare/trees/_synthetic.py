"""A random tree model split over nodes: for latency benchmarks and scoring tests.

Not a trained model: full trees of a given depth whose splits are owned by random
nodes, on random features of theirs, with random thresholds and leaf weights. What it
is good for is exercising private scoring with the exact shapes training produces
(``TreeModel`` + one ``TreeShard`` per owning node) without training first.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from creditshare.errors import InvalidInputError
from creditshare.trees._model import PublicTree, SplitRule, TreeModel, TreeShard, leaves_of

__all__ = ["random_tree_model"]


def random_tree_model(
    features: Mapping[str, Mapping[str, tuple[float, float]]],
    trees: int,
    depth: int,
    seed: int = 0,
    base_score: float = -1.2,
) -> tuple[TreeModel, dict[str, TreeShard]]:
    """A model of ``trees`` full trees of ``depth`` whose splits are spread over the
    nodes of ``features`` (node id → feature name → (low, high) of its values), and
    each owning node's shard. Every node owns at least one split when there are as
    many splits as nodes."""
    nodes: Sequence[str] = sorted(features)
    if not nodes or any(not f for f in features.values()):
        raise InvalidInputError("every node needs at least one feature")
    rng = random.Random(seed)
    internal = frozenset(range(2**depth - 1))
    public: list[PublicTree] = []
    rules: dict[str, list[SplitRule]] = {n: [] for n in nodes}
    count = 0
    for t in range(trees):
        owners: dict[int, str] = {}
        for position in sorted(internal):
            # Round-robin first, so every node owns something; random after.
            node = nodes[count] if count < len(nodes) else rng.choice(nodes)
            count += 1
            name = rng.choice(sorted(features[node]))
            low, high = features[node][name]
            threshold = rng.uniform(low, high)
            rules[node].append(SplitRule(t, position, name, threshold, rng.random() < 0.5))
            owners[position] = node
        weights = {leaf: rng.gauss(0.0, 0.3) for leaf in leaves_of(internal)}
        public.append(PublicTree(owners, weights))
    model = TreeModel(base_score, tuple(public))
    shapes = model.shapes()
    shards = {n: TreeShard(shapes, tuple(rules[n])) for n in model.nodes}
    return model, shards
