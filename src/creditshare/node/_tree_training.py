"""The node's side of gradient-boosted-tree training (SecureBoost-style).

A job opened with ``tree_settings`` (instead of the logistic ``settings``) builds a
``trees.TreeHost`` over this department's model features' RAW values (no
standardisation: trees only compare): the job's rows for histograms and splits, and
every record the node holds for the bins' cuts (fitted unsupervised at open, as the
logistic path fits its preprocessing over all records). A WOE-binned feature enters a
tree job as its level index (the schema's level order, as scoring derives it): no
label sums are needed, and a split on it groups levels by that order.

The node answers the bin count of each of its features in a per-job shuffled order
(never their names), stores one tree's encrypted packed (g, h) at a time, answers
encrypted histograms, and records the splits the bureau picks (the threshold stays
here; the bureau learns which rows go left). At CloseJob with a model id it keeps a
``TreeShard`` of the kept trees (its own rules and every tree's shape). The
``TreeHost`` refuses row sets under ``min_child_rows`` (InvalidInputError: the bureau
tries its next candidate). Logistic RPCs on a tree job and tree RPCs on a logistic job
are FAILED_PRECONDITION (``Job.ready`` / ``Job.trees``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from creditshare.crypto import Ciphertext, PublicKey
from creditshare.departments import Department
from creditshare.errors import InvalidInputError
from creditshare.node._training_jobs import Job, JobStore
from creditshare.proto import training_pb2
from creditshare.trees import (
    MAX_DEPTH,
    MAX_TREES,
    TreeConfig,
    TreeHost,
    TreeShard,
    check_shape,
    pack_bits,
)

__all__ = ["TreeTraining"]

log = logging.getLogger("creditshare.node")
#: Rows of one TreeGradients call (the bureau sends 4096) and of a whole request.
_MAX_CHUNK = 65_536
_MAX_ROWS = 2_000_000
#: Bytes of one ciphertext for a 4096-bit key (mod n²), with room to spare.
_MAX_CIPHERTEXT_BYTES = 1100
#: Tree nodes of one level of the deepest tree.
_MAX_LEVEL = 2**MAX_DEPTH


class TreeTraining:
    """Builds tree jobs at OpenJob and answers the tree RPCs (validate → load → compute)."""

    def __init__(self, node_id: str, department: Department, jobs: JobStore, workers: int) -> None:
        self._node_id = node_id
        self._department = department
        self._jobs = jobs
        self._workers = workers

    def job(
        self,
        key: PublicKey,
        config: TreeConfig,
        ids: list[str],
        names: list[str],
        rows: dict[str, list[float]],
    ) -> Job:
        """The open job: a TreeHost over the job's rows, bins cut over every record."""
        width = len(names)
        values = np.array([rows[i] for i in ids], dtype=np.float64).reshape(-1, width)
        population = np.array(list(rows.values()), dtype=np.float64).reshape(-1, width)
        host = TreeHost(
            self._node_id, values, names, population, key, config, workers=self._workers
        )
        return Job(None, ids, None, tree=host, key=key)

    def opened(self, job_id: str, job: Job) -> training_pb2.OpenJobResponse:
        host = job.trees()
        log.info("training job %r opened for trees: %d rows", job_id, len(job.ids))
        # No feature names: the bureau learns only how many bins each (shuffled) has.
        return training_pb2.OpenJobResponse(rows=len(job.ids), tree_bins=list(host.bin_counts))

    def gradients(self, request: training_pb2.TreeGradientsRequest) -> None:
        _check_job(request.job_id, request.tree)
        if len(request.rows) > _MAX_CHUNK or (not request.rows and not request.final):
            raise InvalidInputError(
                f"rows must hold 1 to {_MAX_CHUNK} row positions (only the final call may be empty)"
            )
        if len(request.gradients) != len(request.rows):
            raise InvalidInputError("gradients must hold one ciphertext per row")
        if any(len(g) > _MAX_CIPHERTEXT_BYTES for g in request.gradients):
            raise InvalidInputError(f"each gradient must be at most {_MAX_CIPHERTEXT_BYTES} bytes")
        if not 0 < request.total <= _MAX_ROWS:
            raise InvalidInputError(f"total must be within 1..{_MAX_ROWS} fit rows")
        job = self._jobs.get(request.job_id)
        host = job.trees()
        key = _key(job)
        ciphertexts = [Ciphertext.from_bytes(key, g) for g in request.gradients]
        host.gradients(request.tree, list(request.rows), ciphertexts, request.total, request.final)

    def histograms(
        self, request: training_pb2.TreeHistogramsRequest
    ) -> training_pb2.TreeHistogramsResponse:
        _check_job(request.job_id, request.tree)
        if not 0 < len(request.nodes) <= _MAX_LEVEL:
            raise InvalidInputError(f"nodes must hold 1 to {_MAX_LEVEL} tree nodes")
        if sum(len(n.rows) for n in request.nodes) > _MAX_ROWS:
            raise InvalidInputError(f"the tree nodes asked hold more than {_MAX_ROWS} rows")
        host = self._jobs.get(request.job_id).trees()
        answers = host.histograms(request.tree, [(n.position, list(n.rows)) for n in request.nodes])
        return training_pb2.TreeHistogramsResponse(
            histograms=[
                training_pb2.TreeHistogram(
                    position=position, ciphertexts=[c.to_bytes() for c in ciphertexts]
                )
                for position, ciphertexts in answers
            ]
        )

    def split(self, request: training_pb2.TreeSplitRequest) -> training_pb2.TreeSplitResponse:
        _check_job(request.job_id, request.tree)
        if not request.rows or len(request.rows) + len(request.other_rows) > _MAX_ROWS:
            raise InvalidInputError(
                f"rows must be non-empty and rows and other_rows hold at most {_MAX_ROWS} in all"
            )
        host = self._jobs.get(request.job_id).trees()
        left = host.split(
            request.tree,
            request.position,
            request.feature,
            request.bin,
            list(request.rows),
            list(request.other_rows),
        )
        return training_pb2.TreeSplitResponse(left=pack_bits(left))

    @staticmethod
    def shard(job_id: str, job: Job, shapes: Sequence[training_pb2.TreeShape]) -> TreeShard:
        """The shard to keep: the kept trees' shapes, this node's rules at ``owned``
        (refused, before the job is dropped, when they are not exactly its rules)."""
        host = job.trees()
        if not 0 < len(shapes) <= MAX_TREES:
            raise InvalidInputError(f"tree_shapes must hold 1 to {MAX_TREES} trees to keep")
        kept = [
            (check_shape(s.internal, f"tree {k}"), frozenset(s.owned)) for k, s in enumerate(shapes)
        ]
        shard = host.shard(kept)
        # Counts only (no rows): splits the bureau had recorded here vs those the model
        # keeps; a large gap means splits of dropped trees (early stopping, or probing).
        log.info(
            "tree job %r closing: %d splits recorded here, %d kept in %d trees",
            job_id,
            host.splits_recorded,
            len(shard.rules),
            len(kept),
        )
        return shard


def _check_job(job_id: str, tree: int) -> None:
    if not 0 < len(job_id) <= 64:
        raise InvalidInputError("job_id must be 1 to 64 characters")
    if not 0 <= tree < MAX_TREES:
        raise InvalidInputError(f"tree must be within 0..{MAX_TREES - 1}")


def _key(job: Job) -> PublicKey:
    if job.key is None:  # every tree job is opened with its key
        raise InvalidInputError("this job has no key")
    return job.key
