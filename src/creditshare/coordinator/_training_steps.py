"""The order of a training job's steps per node, as the coordinator enforces it.

PSI, then open, then (for a node whose job has WOE-binned features) the label-sum
round, then computation; finishing needs every node open and every label-sum round
done. A step out of order is the bureau's error (409), refused here before it is
relayed: a node would refuse it too (FAILED_PRECONDITION), but then the relay would
count it as the node failing. ``sizes[node]`` records how far each node got.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from creditshare.coordinator._db import TrainingJobRow
from creditshare.errors import ConflictError, OutOfOrderError

__all__ = ["LabelSums", "Step", "check_step", "claim_label_sums", "record_label_sums"]

Step = Literal["open", "compute", "sums", "apply_sums", "finish"]
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
    if step == "open" and not state:
        raise ConflictError(f"align with node {node!r} (PSI) before opening the job there")
    if step in ("compute", "sums", "apply_sums") and "rows" not in state:
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


def record_label_sums(
    engine: Engine, clock: Callable[[], datetime], job_id: str, node: str, state: LabelSums
) -> None:
    """Record how far ``node``'s label-sum round got, under the row's lock."""
    with Session(engine) as session:
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
    with Session(engine) as session:
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
