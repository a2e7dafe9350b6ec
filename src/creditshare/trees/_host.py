"""A node's side of tree training: encrypted histograms over its own binned features.

The node's gRPC ``TrainingService`` wraps one ``TreeHost`` per tree job. The host
bins the job's rows with cuts fitted on ALL the node's records (``population``:
unsupervised, like the logistic path's preprocessing), in a feature order shuffled
per job so the bureau cannot tell features apart by position; stores a tree's
encrypted (g, h) — the bureau's ciphertexts, never plaintext; answers histograms
as compressed ciphertexts of per-(feature, bin) sums; and records the splits the
bureau chooses, as ``SplitRule``s naming the feature and threshold that only this node
ever knows. The row checks and privacy floors live in ``HostCore``, shared with the
plaintext protocol's host.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from creditshare.crypto import Ciphertext, PublicKey
from creditshare.errors import InvalidInputError
from creditshare.trees._config import TreeConfig
from creditshare.trees._histograms import HistogramBuilder
from creditshare.trees._hostcore import HostCore
from creditshare.trees._packing import GradientPacking

__all__ = ["TreeHost"]


class TreeHost(HostCore[Ciphertext]):
    """One node's features in one tree job (see the module docstring)."""

    def __init__(
        self,
        name: str,
        values: NDArray[np.float64],
        feature_names: Sequence[str],
        population: NDArray[np.float64],
        key: PublicKey,
        config: TreeConfig,
        workers: int = 0,
    ) -> None:
        super().__init__(name, values, feature_names, population, config, shuffle=True)
        self.key = key
        self._builder = HistogramBuilder(key, self.binned, self.bin_counts, workers)
        self._packing: GradientPacking | None = None

    def gradients(
        self,
        tree: int,
        rows: Sequence[int],
        ciphertexts: Sequence[Ciphertext],
        total: int,
        final: bool,
    ) -> None:
        """One chunk of tree ``tree``'s encrypted gradients (``total`` fit rows in all;
        ``final`` on the last chunk). A new tree number replaces the previous tree's."""
        for k, c in enumerate(ciphertexts):
            if not isinstance(c, Ciphertext) or c.public_key != self.key:
                raise InvalidInputError(
                    f"tree {tree}: gradient {k} of the chunk is not a ciphertext under the "
                    "job's key"
                )
        done = self.accept_chunk(tree, rows, ciphertexts, total, final)
        if done is None:
            return
        order, values = done
        self._builder.set_gradients(order, [c.value for c in values])
        self._packing = GradientPacking.for_job(self.config, len(order), self.key)

    def histograms(
        self, tree: int, nodes: Sequence[tuple[int, Sequence[int]]]
    ) -> list[tuple[int, list[Ciphertext]]]:
        """Per asked tree node (position, fit rows there), the compressed ciphertexts
        of its per-(feature, bin) (G, H) sums in ``bin_counts`` order."""
        checked = self.check_nodes(tree, nodes)
        packing = self._packing
        if packing is None:  # pragma: no cover - check_nodes needs complete gradients
            raise InvalidInputError(f"tree {tree} has no gradients here")
        return [
            (position, packing.compress(self._builder.histogram(rows.tolist()), self.key))
            for position, rows in checked
        ]

    def close(self) -> None:
        self._builder.close()
        super().close()
