"""The order of a training job's steps per node, as the coordinator enforces it.

PSI, then open, then (for a node whose job has WOE-binned features) the label-sum
round, then computation; finishing needs every node open and every label-sum round
done. A gradient-boosted-tree job (its config's ``model_type`` is "gbdt") computes with
the tree steps only, and a logistic job with the logistic steps only. A step out of
order is the bureau's error (409), refused here before it is relayed: a node would
refuse it too (FAILED_PRECONDITION), but then the relay would count it as the node
failing. ``sizes[node]`` records how far each node got.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from creditshare._database import write_session
from creditshare.coordinator._db import ModelRow, TrainingJobRow
from creditshare.errors import ConflictError, OutOfOrderError
from creditshare.proto import training_pb2
from creditshare.trees import TreeModel

__all__ = [
    "ACTIVE",
    "LabelSums",
    "Step",
    "check_step",
    "claim_label_sums",
    "is_tree_job",
    "record_label_sums",
    "register_model",
    "tree_shapes",
]

#: Statuses of a job that still holds its model id and its nodes' job slots.
ACTIVE = ("aligning", "training")

Step = Literal["open", "compute", "sums", "apply_sums", "tree", "finish"]
#: The steps only one kind of job takes (any other step is common to both).
_LOGISTIC_STEPS = ("compute", "sums", "apply_sums")
_TREE_STEPS = ("tree",)
#: A node's label-sum round: needed (opened with WOE features), summing (some chunks of
#: labels relayed), asked (the final LevelSums relayed), set (ApplyLevelSums relayed: the
#: node's WOE tables are set); sending and applying while a call is being relayed (one at
#: a time per node: a second is the bureau's 409, never the node's refusal).
LabelSums = Literal["needed", "summing", "sending", "asked", "applying", "set"]
_WANTS: dict[str, tuple[LabelSums, ...]] = {
    "sums": ("needed", "summing"),
    "apply_sums": ("asked",),
}
_IN_FLIGHT: dict[str, LabelSums] = {"sums": "sending", "apply_sums": "applying"}


def check_step(row: TrainingJobRow, step: Step, node: str | None) -> None:
    """What each step needs done first (see the module docstring)."""
    state = row.sizes.get(node, {}) if node is not None else {}
    trees = is_tree_job(row)
    if trees and step in _LOGISTIC_STEPS:
        raise ConflictError(
            f"training job {row.id} trains gradient-boosted trees: use the tree steps "
            "(tree-gradients, tree-histograms, tree-split), not the logistic ones"
        )
    if not trees and step in _TREE_STEPS:
        raise ConflictError(
            f"training job {row.id} trains a logistic model: the tree steps are only for "
            'jobs whose config has "model_type": "gbdt"'
        )
    if step == "open" and not state:
        raise ConflictError(f"align with node {node!r} (PSI) before opening the job there")
    if step in ("compute", "sums", "apply_sums", "tree") and "rows" not in state:
        raise ConflictError(f"open the job on node {node!r} before computing there")
    sums = state.get("label_sums")
    if step == "compute" and sums is not None and sums != "set":
        raise OutOfOrderError(
            f"node {node!r} holds WOE-binned features: send its label sums (level-sums, "
            "then apply-level-sums) before computing there"
        )
    if step in _WANTS and sums not in _WANTS[step]:
        if sums is None:
            raise OutOfOrderError(f"node {node!r} has no WOE-binned features: no label sums")
        if sums in _IN_FLIGHT.values():
            raise ConflictError(
                f"another label-sums call to node {node!r} is under way: wait for its answer"
            )
        if step == "apply_sums" and sums in ("needed", "summing"):
            raise OutOfOrderError(
                f"send node {node!r} all the fit rows' labels (the final level-sums call) "
                "before applying its level sums"
            )
        raise OutOfOrderError(f"node {node!r} had its level sums {sums} already (once per job)")
    if step == "finish":
        missing = [n for n in row.nodes if "rows" not in row.sizes.get(n, {})]
        if missing:
            raise ConflictError(f"the job is not open on node(s) {', '.join(missing)}")
        unset = [n for n in row.nodes if row.sizes[n].get("label_sums", "set") != "set"]
        if unset:
            raise OutOfOrderError(f"the label sums of node(s) {', '.join(unset)} are not set")


def is_tree_job(row: TrainingJobRow) -> bool:
    """Whether the job trains gradient-boosted trees (its stored config says so)."""
    return row.config.get("model_type") == "gbdt"


def record_label_sums(
    engine: Engine, clock: Callable[[], datetime], job_id: str, node: str, state: LabelSums
) -> None:
    """Record how far ``node``'s label-sum round got, under the row's lock."""
    with write_session(engine) as session:
        row = session.exec(
            select(TrainingJobRow).where(TrainingJobRow.id == job_id).with_for_update()
        ).first()
        if row is None or node not in row.sizes:
            return
        row.sizes = {**row.sizes, node: {**row.sizes[node], "label_sums": state}}
        row.updated_at = clock()
        session.add(row)
        session.commit()


def claim_label_sums(
    engine: Engine, clock: Callable[[], datetime], job_id: str, node: str, step: Step
) -> LabelSums:
    """Check ``step`` and mark ``node``'s label-sum call as under way, in one transaction
    under the row's lock (compare-and-set), before the call is relayed: of two concurrent
    calls the second is refused here (409) instead of by the node, which would fail the
    job. Returns the state before, for ``record_label_sums`` to restore if the call fails.
    """
    with write_session(engine) as session:
        row = session.exec(
            select(TrainingJobRow).where(TrainingJobRow.id == job_id).with_for_update()
        ).one()
        check_step(row, step, node)
        before: LabelSums = row.sizes[node]["label_sums"]
        row.sizes = {**row.sizes, node: {**row.sizes[node], "label_sums": _IN_FLIGHT[step]}}
        row.updated_at = clock()
        session.add(row)
        session.commit()
    return before


def tree_shapes(trees: TreeModel | None, node: str) -> list[training_pb2.TreeShape]:
    """What a tree job's ``node`` is told at finish: per kept tree, its internal positions
    and those the node owns (it keeps exactly its rules there). None: a logistic job."""
    if trees is None:
        return []
    return [
        training_pb2.TreeShape(
            internal=sorted(t.internal), owned=sorted(p for p, o in t.owners.items() if o == node)
        )
        for t in trees.trees
    ]


def register_model(
    engine: Engine,
    clock: Callable[[], datetime],
    job: TrainingJobRow,
    intercept: float,
    metrics: dict[str, Any],
    features: dict[str, list[str]],
    trees: TreeModel | None = None,
) -> TrainingJobRow:
    """Register the job's model (a tree job's with its published ``TreeModel``) and mark
    the job finished, in one transaction, if it is still running."""
    model = ModelRow(
        id=job.model_id,
        description=str(job.config.get("description", "")),
        intercept=intercept,
        trained_by=job.bureau,
        job_id=job.id,
        metrics=metrics,
        features=features,
        created_at=clock(),
        model_type="logistic" if trees is None else "gbdt",
        tree_model=None if trees is None else trees.to_document(),
    )
    with write_session(engine) as session:
        row = session.exec(
            select(TrainingJobRow).where(TrainingJobRow.id == job.id).with_for_update()
        ).first()
        if row is None or row.status not in ACTIVE:
            status = "gone" if row is None else row.status
            raise ConflictError(f"training job {job.id} is {status}; no model registered")
        if session.get(ModelRow, model.id) is not None:
            raise ConflictError(f"model {model.id!r} exists already")
        row.status = "finished"
        row.updated_at = clock()
        session.add(model)
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            raise ConflictError(f"model {model.id!r} exists already") from None
        session.refresh(row)
    return row
