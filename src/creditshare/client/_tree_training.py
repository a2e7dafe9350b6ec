"""A credit bureau training gradient-boosted trees across data nodes (SecureBoost-style).

The same job as logistic regression (``client._bureau``): signed, aligned by PSI,
opened on every node, split into fit/validation/test rows, reported per tree, cancelled
on Ctrl-C, failed with its reason, finished by publishing the model. Between open and
finish, ``trees.train_trees`` drives the protocol with each node reached through the
coordinator (``RemoteTreeHost``): the bureau encrypts every fit row's packed (g, h)
once per tree, nodes answer encrypted histograms over their own binned features, the
bureau picks splits and the owning node answers which rows go left. Rows are named by
their position in the aligned list, never by id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from creditshare.client._bureau import (
    TrainedModel,
    _b64,
    _unb64,
    align_and_open,
    check_labels,
    driving,
    published_metrics,
    reporter,
    splits,
    start_job,
)
from creditshare.client._client import CreditShareClient
from creditshare.client._http import segment
from creditshare.crypto import Ciphertext, PrivateEncryptor, PublicKey
from creditshare.errors import ClientError
from creditshare.trees import MIN_CHILD_ROWS, TreeConfig, TreeReport, train_trees, unpack_bits

__all__ = ["RemoteTreeHost", "train_tree_model"]

#: Rows per tree-gradients call (~2.8 MB of ciphertext text at 2048 bits).
_CHUNK = 4096


class RemoteTreeHost:
    """A data node in a tree job, reached through the coordinator (``TreeHostEndpoint``)."""

    def __init__(
        self,
        client: CreditShareClient,
        job_id: str,
        node: str,
        key: PublicKey,
        bin_counts: Sequence[int],
    ) -> None:
        self._client = client
        self._path = f"/v1/training-jobs/{segment(job_id)}"
        self.node = node
        self._key = key
        self._bins = list(bin_counts)

    @property
    def name(self) -> str:
        return self.node

    @property
    def bin_counts(self) -> Sequence[int]:
        return self._bins

    def gradients(
        self,
        tree: int,
        rows: Sequence[int],
        ciphertexts: Sequence[Ciphertext],
        total: int,
        final: bool,
    ) -> None:
        """In chunks of at most 4096 rows; only the last is ``final``."""
        starts = list(range(0, len(rows), _CHUNK)) or [0]
        for start in starts:
            last = start == starts[-1]
            self._client.post(
                f"{self._path}/tree-gradients",
                {
                    "node": self.node,
                    "tree": tree,
                    "rows": list(rows[start : start + _CHUNK]),
                    "gradients": _b64([c.to_bytes() for c in ciphertexts[start : start + _CHUNK]]),
                    "total": total,
                    "final": final and last,
                },
            )

    def histograms(
        self, tree: int, nodes: Sequence[tuple[int, Sequence[int]]]
    ) -> list[tuple[int, list[Ciphertext]]]:
        body = self._client.post(
            f"{self._path}/tree-histograms",
            {
                "node": self.node,
                "tree": tree,
                "nodes": [{"position": p, "rows": list(r)} for p, r in nodes],
            },
        )
        out = [
            (
                int(h["position"]),
                [Ciphertext.from_bytes(self._key, b) for b in _unb64(h["ciphertexts"])],
            )
            for h in body["histograms"]
        ]
        asked, answered = sorted(p for p, _ in nodes), sorted(p for p, _ in out)
        if answered != asked:
            raise ClientError(
                f"node {self.node} answered histograms for positions {answered}, asked {asked}"
            )
        return out

    def split(
        self,
        tree: int,
        position: int,
        feature: int,
        bin: int,
        rows: Sequence[int],
        other_rows: Sequence[int],
    ) -> list[bool]:
        body = self._client.post(
            f"{self._path}/tree-split",
            {
                "node": self.node,
                "tree": tree,
                "position": position,
                "feature": feature,
                "bin": bin,
                "rows": list(rows),
                "other_rows": list(other_rows),
            },
        )
        left, count = _unb64([body["left"]])[0], len(rows) + len(other_rows)
        try:
            return unpack_bits(left, count)
        except ValueError:
            raise ClientError(f"a split answered {len(left)} bytes for {count} rows") from None


def _point(report: TreeReport) -> dict[str, Any]:
    """A tree's progress report (epoch = tree index); a curve point when it has a
    validation loss (none without validation rows: ``validation_fraction`` 0)."""
    measured = not math.isnan(report.validation_loss)
    auc = report.validation_auc
    return {
        "epoch": report.tree,
        "batch": 1,
        "batches": 1,
        "validation_loss": report.validation_loss if measured else None,
        "validation_auc": auc if measured and not math.isnan(auc) else None,
        "seconds": report.seconds,
    }


def train_tree_model(
    client: CreditShareClient,
    labels: Mapping[str, int],
    nodes: Sequence[str],
    model_id: str,
    config: TreeConfig,
    description: str = "",
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    workers: int = 1,
    test_ids: Collection[str] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> TrainedModel:
    """``train_model`` with a ``TreeConfig``: see there. The published test metrics come
    from the test rows' margins under the kept trees, routed by the very rules the nodes
    keep (so a bank's score of a test enterprise gives the same number)."""
    check_labels(labels, test_ids)
    key = client.private_key
    job_id = start_job(client, model_id, description, nodes, config.to_document())
    if on_start:
        on_start(job_id)
    report = reporter(client, job_id, on_progress)
    encryptor: PrivateEncryptor | None = None

    def close() -> None:
        if encryptor is not None:
            encryptor.close()

    with driving(client, job_id, close):
        aligned, opened = align_and_open(client, job_id, labels, nodes)
        fit_ids, valid_ids, test_ids_kept = splits(aligned, labels, config, test_ids)
        least = 2 * max(config.min_child_rows, MIN_CHILD_ROWS)
        if len(fit_ids) < least:
            raise ClientError(
                f"the fit split holds {len(fit_ids)} rows ({len(aligned)} aligned, less "
                f"{len(test_ids_kept)} for the test and {len(valid_ids)} for validation); a "
                f"split needs at least {least}: label more enterprises or lower "
                "--test-share / --validation-share"
            )
        position = {identifier: k for k, identifier in enumerate(aligned)}
        y = np.array([labels[i] for i in aligned], dtype=np.float64)
        hosts = [
            RemoteTreeHost(client, job_id, node, key.public_key, opened[node]["tree_bins"])
            for node in nodes
        ]
        # Obfuscators made ahead on ``workers`` processes, as many as a few trees use.
        encryptor = PrivateEncryptor(
            key, workers=workers, buffer=max(256, min(32_768, 2 * len(fit_ids)))
        )
        fit = sorted(position[i] for i in fit_ids)
        others = {
            "validation": sorted(position[i] for i in valid_ids),
            "test": sorted(position[i] for i in test_ids_kept),
        }
        result = train_trees(
            key,
            hosts,
            y,
            fit,
            others,
            config,
            validation="validation" if others["validation"] else None,
            on_tree=lambda r: report(_point(r)),
            encryptor=encryptor,
        )
        test = others["test"]
        metrics = published_metrics(y[test], result.margins["test"], len(aligned))
        client.post(
            f"/v1/training-jobs/{segment(job_id)}/finish",
            {
                "intercept": result.model.base_score,
                "metrics": metrics,
                "tree_model": result.model.to_document(),
            },
        )
    return TrainedModel(
        job_id,
        model_id,
        len(aligned),
        metrics["test_auc"],
        metrics["test_ks"],
        [],
        result.model.base_score,
        tuple(aligned[k] for k in test),
        tuple(float(s) for s in result.margins["test"]),
        tree_model=result.model,
        trees=tuple(result.reports),
    )
