"""The bureau's side of the encrypted tree protocol, transport-free.

``train_trees`` drives the parties through ``TreeHostEndpoint``s: ``TreeHost`` itself
in one process (tests, benchmarks) or the SDK's ``RemoteTreeHost`` over the
coordinator's HTTP relay. The bureau encodes each fit row's (g, h) into ONE plaintext
(``GradientPacking``), encrypts the tree's gradients ONCE (the same ciphertexts go to
every node, in chunks of at most ``CHUNK_ROWS`` rows), and opens each node's compressed
histograms with its private key. Everything else — levels, histogram subtraction,
split ranking and fallback, leaves, early stopping — is the driver shared with the
plaintext protocol (``_driver.grow_trees``).

A node refusing a split (its ``min_child_rows`` floor) must raise ``InvalidInputError``
(``RemoteTreeHost`` maps the node's answer to it); any other error fails the job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from creditshare.crypto import Ciphertext, Encryptor, PrivateEncryptor, PrivateKey
from creditshare.errors import InvalidInputError
from creditshare.trees._config import TreeConfig
from creditshare.trees._driver import Rows, TreeReport, TreeTrainingResult, grow_trees
from creditshare.trees._packing import GradientPacking
from creditshare.trees._split import Histogram

__all__ = ["CHUNK_ROWS", "TreeHostEndpoint", "train_trees"]

#: Most rows per TreeGradients message.
CHUNK_ROWS = 4096


class TreeHostEndpoint(Protocol):
    """One node of a tree job as the bureau reaches it (``TreeHost``, ``RemoteTreeHost``)."""

    @property
    def name(self) -> str: ...

    @property
    def bin_counts(self) -> Sequence[int]: ...

    def gradients(
        self,
        tree: int,
        rows: Sequence[int],
        ciphertexts: Sequence[Ciphertext],
        total: int,
        final: bool,
    ) -> None: ...

    def histograms(
        self, tree: int, nodes: Sequence[tuple[int, Sequence[int]]]
    ) -> list[tuple[int, list[Ciphertext]]]: ...

    def split(
        self,
        tree: int,
        position: int,
        feature: int,
        bin: int,
        rows: Sequence[int],
        other_rows: Sequence[int],
    ) -> list[bool]: ...


class _EncryptedChannel:
    def __init__(
        self,
        key: PrivateKey,
        hosts: Sequence[TreeHostEndpoint],
        packing: GradientPacking,
        encryptor: Encryptor,
    ) -> None:
        self.key, self.hosts, self.packing, self.encryptor = key, list(hosts), packing, encryptor
        self.bin_counts: list[list[int]] = []
        for host in self.hosts:
            counts = [int(c) for c in host.bin_counts]
            if any(c < 1 for c in counts):
                raise InvalidInputError(f"node {host.name} reports a feature with no bins")
            self.bin_counts.append(counts)

    @property
    def names(self) -> Sequence[str]:
        return [h.name for h in self.hosts]

    def _encrypt(self, plaintexts: list[int]) -> list[Ciphertext]:
        if isinstance(self.encryptor, PrivateEncryptor):
            return self.encryptor.encrypt_many(plaintexts)  # CRT, obfuscators made ahead
        return [self.encryptor.encrypt_encoded(m) for m in plaintexts]

    def send_gradients(
        self, tree: int, rows: NDArray[np.intp], g: NDArray[np.float64], h: NDArray[np.float64]
    ) -> None:
        ciphertexts = self._encrypt(self.packing.encode(g, h))  # once per tree, for all
        positions = rows.tolist()
        total = len(positions)
        for host in self.hosts:
            for start in range(0, total, CHUNK_ROWS):
                end = min(start + CHUNK_ROWS, total)
                host.gradients(
                    tree, positions[start:end], ciphertexts[start:end], total, end == total
                )

    def histograms(
        self, party: int, tree: int, nodes: Sequence[tuple[int, NDArray[np.intp]]]
    ) -> dict[int, list[Histogram]]:
        host, counts = self.hosts[party], self.bin_counts[party]
        answers = host.histograms(tree, [(p, rows.tolist()) for p, rows in nodes])
        asked, answered = sorted(p for p, _ in nodes), sorted(p for p, _ in answers)
        if answered != asked:
            raise InvalidInputError(
                f"node {host.name} answered histograms for positions {answered}, asked {asked}"
            )
        out: dict[int, list[Histogram]] = {}
        edges = np.cumsum([0, *counts])
        for position, ciphertexts in answers:
            g, h = self.packing.open(ciphertexts, int(edges[-1]), self.key)
            out[position] = [
                (g[edges[k] : edges[k + 1]], h[edges[k] : edges[k + 1]]) for k in range(len(counts))
            ]
        return out

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
        return list(
            self.hosts[party].split(
                tree, position, feature, bin, rows.tolist(), other_rows.tolist()
            )
        )


def train_trees(
    key: PrivateKey,
    hosts: Sequence[TreeHostEndpoint],
    labels: NDArray[np.float64],
    fit: Rows,
    others: Mapping[str, Rows],
    config: TreeConfig,
    validation: str | None = "validation",
    on_tree: Callable[[TreeReport], None] | None = None,
    encryptor: Encryptor | None = None,
) -> TreeTrainingResult:
    """Train a tree model over ``hosts`` with labels per job row (the bureau's only);
    ``fit`` rows grow trees, ``others`` (e.g. validation, test) are only routed."""
    names = [h.name for h in hosts]
    if not names or len(set(names)) != len(names):
        raise InvalidInputError("tree training needs at least one node, each named once")
    packing = GradientPacking.for_job(config, len(fit), key.public_key)
    if encryptor is not None:
        channel = _EncryptedChannel(key, hosts, packing, encryptor)
        return grow_trees(channel, labels, fit, others, config, validation, on_tree)
    with PrivateEncryptor(key) as own:
        channel = _EncryptedChannel(key, hosts, packing, own)
        return grow_trees(channel, labels, fit, others, config, validation, on_tree)
