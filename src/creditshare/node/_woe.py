"""A node's training job with WOE-binned features, until its WOE tables are set.

At OpenJob such a job has rows but no model yet: a WOE feature's value is a level
index, meaningless as a number until the job's level sums (``federated._woe``) give
each level its weight of evidence over the fit rows. ``WoePending`` holds what the
job needs until then; ``finish`` fits the job's ``Preprocessing`` (WOE lookup, then
standardised and clipped over every record the node holds, as any numeric feature)
and builds the HostParty that Forward and the gradient RPCs use from then on.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from creditshare.crypto import Ciphertext, Encryptor, FastEncryptor, PublicKey
from creditshare.departments import Department
from creditshare.federated import (
    HostParty,
    LevelSumsFit,
    Preprocessing,
    TrainingConfig,
    WoeFeature,
)

__all__ = ["WoePending", "woe_features"]


def woe_features(department: Department) -> list[tuple[int, WoeFeature]]:
    """Each WOE-binned feature of the department, with its column in feature order."""
    return [
        (j, WoeFeature(f.name, f.levels, f.woe_min_rows))
        for j, f in enumerate(department.features)
        if f.woe_min_rows
    ]


@dataclass(slots=True)
class WoePending:
    """An open job whose WOE tables are not set yet."""

    node_id: str
    names: list[str]
    flags: list[bool]
    #: Every record's raw feature values (the preprocessing is fitted over all of them).
    everyone: list[list[float]]
    #: The job's rows (raw values), in job row order.
    aligned: dict[str, list[float]]
    key: PublicKey
    config: TrainingConfig
    encryptor: Encryptor | None
    fit: LevelSumsFit
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(
        cls,
        node_id: str,
        department: Department,
        rows: dict[str, list[float]],
        ids: Sequence[str],
        key: PublicKey,
        config: TrainingConfig,
        encryptor: Encryptor | None,
    ) -> WoePending:
        features = woe_features(department)
        aligned = {i: rows[i] for i in ids}
        fit = LevelSumsFit(
            [f for _, f in features],
            [j for j, _ in features],
            [aligned[i] for i in ids],
            key,
            encryptor or FastEncryptor(key),
        )
        return cls(
            node_id,
            [f.name for f in department.features],
            [f.clipped for f in department.features],
            list(rows.values()),
            aligned,
            key,
            config,
            encryptor,
            fit,
        )

    def level_sums(
        self, positions: Sequence[int], labels: Sequence[Ciphertext], total: int, final: bool
    ) -> list[Ciphertext]:
        """One chunk of the fit rows' Enc(y) (see ``LevelSumsFit``); chunks may come
        concurrently: the lock makes each one's accounting whole."""
        with self._lock:
            return self.fit.level_sums(positions, labels, total, final)

    def finish(
        self, masked_plain: Sequence[int], proofs: Sequence[int]
    ) -> tuple[HostParty, Preprocessing]:
        """Check, unmask, fit the preprocessing with the WOE tables, and build the host."""
        with self._lock:
            tables = self.fit.apply_level_sums(masked_plain, proofs)
        matrix = np.array(self.everyone, dtype=float).reshape(-1, len(self.names))
        preprocessing = Preprocessing.fit(
            self.names, matrix, self.flags, self.config.feature_clip, tables
        )
        host = HostParty(
            self.node_id,
            self.aligned,
            self.names,
            self.key,
            self.config,
            encryptor=self.encryptor,
            preprocessing=preprocessing,
        )
        return host, preprocessing
