"""Gradient-boosted-tree training steps: the bureau drives, the coordinator relays.

A tree job (its config's ``model_type`` is "gbdt") is created, aligned (PSI), opened,
finished, failed and cancelled through the same routes as a logistic one
(``_routes_training``); only its computation differs, and is relayed here:

* ``tree-gradients``: a chunk of one tree's encrypted, packed (g, h) per fit row;
* ``tree-histograms``: per tree node asked, the node's encrypted bin sums (compressed);
* ``tree-split``: the owning node records a split and answers which rows go left.

Bounded like the logistic steps (lists by the largest job a node accepts, ciphertexts by
their 4096-bit size, positions by the deepest tree) before anything is relayed. A node
refusing a request (a split leaving fewer than ``min_child_rows`` rows in a child) is
the bureau's 422 and leaves the job running; any other node failure fails the job,
naming the node. The coordinator sees ciphertexts, row positions and the bitmaps of
every split's partition (it relays them): see the README's training leakage notes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field, model_validator

from creditshare.coordinator._deps import ServicesDep
from creditshare.coordinator._routes_training import Bureau
from creditshare.coordinator._training_bodies import (
    MAX_ITEMS,
    MAX_LEVEL_SUMS_ROWS,
    CiphertextText,
    JobId,
    NodeName,
    Row,
    Strict,
    from_base64,
    to_base64,
)
from creditshare.proto import training_pb2
from creditshare.trees import MAX_DEPTH, MAX_TREES

__all__ = ["router"]

router = APIRouter(tags=["training"])

#: Heap positions of the deepest tree (root 0; children 2i + 1, 2i + 2).
_MAX_POSITION = 2 ** (MAX_DEPTH + 1) - 2
#: The last position that may split (its children are still within MAX_DEPTH).
_MAX_SPLIT = (_MAX_POSITION - 2) // 2
#: The most tree nodes of one level (the widest level of the deepest tree).
_MAX_LEVEL = 2**MAX_DEPTH
Tree = Annotated[int, Field(ge=0, lt=MAX_TREES)]


class TreeGradientsIn(Strict):
    node: NodeName
    tree: Tree
    #: A chunk of the fit rows (positions in the job's rows); only the final call may be
    #: empty. Never validation or test rows.
    rows: list[Row] = Field(max_length=MAX_LEVEL_SUMS_ROWS)
    #: Per row, the packed (g, h) plaintext encrypted under the job's key (base64).
    gradients: list[CiphertextText] = Field(max_length=MAX_LEVEL_SUMS_ROWS)
    #: How many fit rows the tree's gradients cover in all (the same in every call).
    total: int = Field(ge=1, le=MAX_ITEMS)
    final: bool

    @model_validator(mode="after")
    def _consistent(self) -> TreeGradientsIn:
        if not self.rows and not self.final:
            raise ValueError("rows may be empty only in the final call")
        if len(self.gradients) != len(self.rows):
            raise ValueError("gradients must hold one ciphertext per row")
        return self


class TreeNodeIn(Strict):
    position: int = Field(ge=0, le=_MAX_POSITION)
    rows: list[Row] = Field(min_length=1, max_length=MAX_ITEMS)


class TreeHistogramsIn(Strict):
    node: NodeName
    tree: Tree
    #: The tree nodes of one level the bureau asks about (each with its fit rows).
    nodes: list[TreeNodeIn] = Field(min_length=1, max_length=_MAX_LEVEL)

    @model_validator(mode="after")
    def _bounded(self) -> TreeHistogramsIn:
        positions = [n.position for n in self.nodes]
        if len(set(positions)) != len(positions):
            raise ValueError("each tree node (position) may be asked once per call")
        if sum(len(n.rows) for n in self.nodes) > MAX_ITEMS:
            raise ValueError(f"the tree nodes asked hold more than {MAX_ITEMS} rows in all")
        return self


class TreeSplitIn(Strict):
    node: NodeName
    tree: Tree
    position: int = Field(ge=0, le=_MAX_SPLIT)
    #: An index into the node's ``tree_bins`` (its shuffled features).
    feature: int = Field(ge=0, le=65_535)
    #: The last bin that goes left.
    bin: int = Field(ge=0, le=255)
    #: The fit rows at this tree node.
    rows: list[Row] = Field(min_length=1, max_length=MAX_ITEMS)
    #: Validation and test rows at this tree node: routed, never summed.
    other_rows: list[Row] = Field(default_factory=list, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _bounded(self) -> TreeSplitIn:
        if len(self.rows) + len(self.other_rows) > MAX_ITEMS:
            raise ValueError(f"rows and other_rows hold more than {MAX_ITEMS} rows in all")
        return self


@router.post("/v1/training-jobs/{job_id}/tree-gradients")
async def tree_gradients(
    job_id: JobId, body: TreeGradientsIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    """A chunk of one tree's encrypted gradients; the same ciphertexts go to every node."""
    jobs = services.training
    await jobs.active(job_id, caller, body.node, "tree")
    request = training_pb2.TreeGradientsRequest(
        job_id=job_id,
        tree=body.tree,
        rows=body.rows,
        gradients=from_base64(body.gradients, "gradients"),
        total=body.total,
        final=body.final,
    )
    await jobs.relay(job_id, body.node, lambda s: s.TreeGradients(request, timeout=jobs.deadline))
    return {}


@router.post("/v1/training-jobs/{job_id}/tree-histograms")
async def tree_histograms(
    job_id: JobId, body: TreeHistogramsIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    """Per tree node asked, the node's encrypted (g, h) sums per bin of each feature."""
    jobs = services.training
    await jobs.active(job_id, caller, body.node, "tree")
    request = training_pb2.TreeHistogramsRequest(
        job_id=job_id,
        tree=body.tree,
        nodes=[training_pb2.TreeNodeRows(position=n.position, rows=n.rows) for n in body.nodes],
    )
    reply = await jobs.relay(
        job_id, body.node, lambda s: s.TreeHistograms(request, timeout=jobs.deadline)
    )
    return {
        "histograms": [
            {"position": h.position, "ciphertexts": to_base64(h.ciphertexts)}
            for h in reply.histograms
        ]
    }


@router.post("/v1/training-jobs/{job_id}/tree-split")
async def tree_split(
    job_id: JobId, body: TreeSplitIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    """The owning node records the split (its threshold stays there) and answers which
    rows go left: one bit per row of ``rows`` then ``other_rows``, LSB first."""
    jobs = services.training
    await jobs.active(job_id, caller, body.node, "tree")
    request = training_pb2.TreeSplitRequest(
        job_id=job_id,
        tree=body.tree,
        position=body.position,
        feature=body.feature,
        bin=body.bin,
        rows=body.rows,
        other_rows=body.other_rows,
    )
    reply = await jobs.relay(
        job_id, body.node, lambda s: s.TreeSplit(request, timeout=jobs.deadline)
    )
    return {"left": to_base64([reply.left])[0]}
