"""The tree protocol in plaintext: the same hosts' checks, the same driver, no crypto.

``train_trees_plain`` runs the driver of ``train_trees`` over ``PlainTreeHost``s,
which share ``TreeHost``'s binning, row checks, floors and split rules and differ only
in summing plaintext (g, h) into histograms. The benchmark prints its time beside the
encrypted protocol's; the tests compare its model with XGBoost's and with the
encrypted protocol's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from creditshare.errors import InvalidInputError
from creditshare.trees._config import TreeConfig
from creditshare.trees._driver import Rows, TreeReport, TreeTrainingResult, grow_trees
from creditshare.trees._hostcore import HostCore
from creditshare.trees._split import Histogram

__all__ = ["PlainTreeHost", "train_trees_plain"]


class PlainTreeHost(HostCore[tuple[float, float]]):
    """A party holding features, summing plaintext gradients (benchmarks, tests)."""

    def __init__(
        self,
        name: str,
        values: NDArray[np.float64],
        feature_names: Sequence[str],
        population: NDArray[np.float64],
        config: TreeConfig,
        shuffle: bool = False,
    ) -> None:
        super().__init__(name, values, feature_names, population, config, shuffle)
        self._g = np.zeros(self.rows)
        self._h = np.zeros(self.rows)

    def gradients(
        self, tree: int, rows: Sequence[int], g: NDArray[np.float64], h: NDArray[np.float64]
    ) -> None:
        """One tree's gradients in one go (no chunks: nothing travels)."""
        pairs = list(
            zip(
                np.asarray(g, dtype=float).tolist(),
                np.asarray(h, dtype=float).tolist(),
                strict=True,
            )
        )
        done = self.accept_chunk(tree, rows, pairs, len(pairs), True)
        if done is None:  # pragma: no cover - final chunk always completes
            raise InvalidInputError("gradients incomplete")
        order, values = done
        self._g = np.zeros(self.rows)
        self._h = np.zeros(self.rows)
        self._g[order] = [v[0] for v in values]
        self._h[order] = [v[1] for v in values]

    def histograms(
        self, tree: int, nodes: Sequence[tuple[int, Sequence[int]]]
    ) -> list[tuple[int, list[Histogram]]]:
        out = []
        for position, rows in self.check_nodes(tree, nodes):
            features = []
            for k, count in enumerate(self.bin_counts):
                bins = self.binned[rows, k]
                g = np.bincount(bins, weights=self._g[rows], minlength=count)
                h = np.bincount(bins, weights=self._h[rows], minlength=count)
                features.append((g.astype(np.float64), h.astype(np.float64)))
            out.append((position, features))
        return out


class _PlainChannel:
    def __init__(self, hosts: Sequence[PlainTreeHost]) -> None:
        self.hosts = list(hosts)

    @property
    def names(self) -> Sequence[str]:
        return [h.name for h in self.hosts]

    def send_gradients(
        self, tree: int, rows: NDArray[np.intp], g: NDArray[np.float64], h: NDArray[np.float64]
    ) -> None:
        for host in self.hosts:
            host.gradients(tree, rows.tolist(), g, h)

    def histograms(
        self, party: int, tree: int, nodes: Sequence[tuple[int, NDArray[np.intp]]]
    ) -> dict[int, list[Histogram]]:
        asked = [(p, rows.tolist()) for p, rows in nodes]
        return dict(self.hosts[party].histograms(tree, asked))

    def split(
        self,
        party: int,
        tree: int,
        position: int,
        feature: int,
        bin: int,
        rows: NDArray[np.intp],
        other_rows: NDArray[np.intp],
    ) -> list[bool]:
        return self.hosts[party].split(
            tree, position, feature, bin, rows.tolist(), other_rows.tolist()
        )


def train_trees_plain(
    features: Sequence[NDArray[np.float64]],
    labels: NDArray[np.float64],
    fit: Rows,
    others: Mapping[str, Rows],
    config: TreeConfig,
    validation: str | None = "validation",
    on_tree: Callable[[TreeReport], None] | None = None,
    names: Sequence[str] | None = None,
    feature_names: Sequence[Sequence[str]] | None = None,
    populations: Sequence[NDArray[np.float64]] | None = None,
) -> TreeTrainingResult:
    """``train_trees`` without encryption: ``features[k]`` is party k's job rows ×
    features matrix (cuts fitted on ``populations[k]``, default the job rows); the
    result carries every party's ``TreeShard`` of the kept model."""
    party_names = list(names) if names is not None else [f"party{k}" for k in range(len(features))]
    hosts = []
    for k, values in enumerate(features):
        matrix = np.asarray(values, dtype=np.float64)
        columns = (
            list(feature_names[k])
            if feature_names is not None
            else [f"x{j}" for j in range(matrix.shape[1])]
        )
        population = populations[k] if populations is not None else matrix
        hosts.append(PlainTreeHost(party_names[k], matrix, columns, population, config))
    result = grow_trees(_PlainChannel(hosts), labels, fit, others, config, validation, on_tree)
    for host in hosts:
        owned = result.model.owned_by(host.name)
        shapes = [(t.internal, o) for t, o in zip(result.model.trees, owned, strict=True)]
        result.shards[host.name] = host.shard(shapes)
        host.close()
    return result
