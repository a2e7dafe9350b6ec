"""What a node's answer to a query must look like, and how answers add up.

A query's answers come in one of two forms (``pack_profiles``): plain, one
ciphertext per value, or packed, the whole profile in a few slotted ciphertexts. A
form says what to ask each node for, checks each answer before anything in it is
multiplied or passed on, and adds the answers into the result; the fan-out is the
same for both. The coordinator holds no private key: every check here is on shapes,
names and ciphertext ranges, never on values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from creditshare.coordinator._settings import ModelEntry, NodeEntry
from creditshare.coordinator.relay._channels import NodeCatalogue
from creditshare.crypto import Ciphertext, FixedPointEncoding, PublicKey, SlotLayout
from creditshare.errors import InvalidInputError
from creditshare.proto import node_pb2

__all__ = [
    "AnswerForm",
    "NodeAnswer",
    "NodeFailure",
    "NodePlan",
    "PackedAnswer",
    "PackedForm",
    "PackedProfile",
    "PlainForm",
    "QueryResult",
    "invalid_answer",
    "linear_intercept",
]

log = logging.getLogger("creditshare.coordinator")


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    node: NodeEntry
    partial_score: Ciphertext
    presence: Ciphertext
    indicators: tuple[tuple[str, Ciphertext], ...]


@dataclass(frozen=True, slots=True)
class PackedAnswer:
    node: NodeEntry
    packed: dict[int, Ciphertext]
    first_slot: int
    indicators: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeFailure:
    node: NodeEntry
    reason: str
    #: The reason's class, for metrics: ``unavailable``, ``deadline_exceeded``,
    #: ``invalid_answer``, ``ledger``, ``head_moving`` or a gRPC status code name.
    kind: str = "error"


@dataclass(frozen=True, slots=True)
class PackedProfile:
    """The whole profile in a few ciphertexts; slot 0 is the score."""

    layout: SlotLayout
    ciphertexts: tuple[Ciphertext, ...]


@dataclass(frozen=True, slots=True)
class QueryResult:
    query_id: str
    model: ModelEntry
    encoding: FixedPointEncoding
    encrypted_score: Ciphertext | None
    answers: tuple[NodeAnswer | PackedAnswer, ...]
    failures: tuple[NodeFailure, ...]
    packed: PackedProfile | None = None
    #: A tree model's score could not be computed: the chain step that failed. The
    #: score (``encrypted_score`` / packed slot 0) is then no score at all.
    score_unavailable: NodeFailure | None = None


def linear_intercept(model: ModelEntry) -> float:
    """What the answer forms add to the nodes' partials: a logistic model's intercept. A
    tree model's base score is added with its chain's score instead (``_tree_chain``),
    so it is never counted twice, whatever ``intercept`` its entry holds."""
    return 0.0 if model.trees is not None else model.intercept


def invalid_answer(node: NodeEntry, exc: InvalidInputError) -> NodeFailure:
    log.warning("node %s sent an invalid answer: %s", node.id, exc)
    return NodeFailure(node, f"invalid answer: {exc}", "invalid_answer")


@dataclass(frozen=True, slots=True)
class NodePlan:
    """What one node is asked for: the indicators in scope, and the packing if packed."""

    names: tuple[str, ...]
    packing: node_pb2.PackingSpec | None = None


A = TypeVar("A", bound="NodeAnswer | PackedAnswer")


class AnswerForm(Protocol[A]):
    #: Whether a node not yet described may be described during its own call (plain),
    #: or had to be described before the query was planned (packed).
    describes_late: bool

    def plan(self, node: NodeEntry, catalogue: NodeCatalogue | None) -> NodePlan | None:
        """What to ask ``node``; None: it cannot be asked (its catalogue is unknown)."""

    def check(self, node: NodeEntry, plan: NodePlan, reply: node_pb2.ScoreResponse) -> A:
        """The answer, validated; ``InvalidInputError`` says what is wrong with it."""

    def total(
        self,
        query_id: str,
        model: ModelEntry,
        answers: Sequence[A],
        failures: Sequence[NodeFailure],
    ) -> QueryResult:
        """The answers added up (with the model's public intercept)."""


def _from_node(node: NodeEntry, reply: node_pb2.ScoreResponse) -> None:
    if reply.node_id != node.id:
        raise InvalidInputError(f"answer claims to come from node {reply.node_id!r}")


class PlainForm:
    """One ciphertext per value: a partial score, a presence flag, each indicator."""

    describes_late = True

    def __init__(
        self, key: PublicKey, encoding: FixedPointEncoding, in_scope: Callable[[str], bool]
    ) -> None:
        self._key = key
        self._encoding = encoding
        self._in_scope = in_scope

    def plan(self, node: NodeEntry, catalogue: NodeCatalogue | None) -> NodePlan | None:
        if catalogue is None:
            return None
        return NodePlan(tuple(n for n in catalogue.indicators if self._in_scope(n)))

    def check(self, node: NodeEntry, plan: NodePlan, reply: node_pb2.ScoreResponse) -> NodeAnswer:
        """The indicators must be exactly the published ones within the consent's scope,
        in catalogue order: a node cannot slip an unpublished value to the bank."""
        _from_node(node, reply)
        names = [i.name for i in reply.indicators]
        if names != list(plan.names):
            raise InvalidInputError(
                f"indicators {names} differ from the published ones in scope {list(plan.names)}"
            )
        key = self._key
        return NodeAnswer(
            node=node,
            partial_score=Ciphertext.from_bytes(key, reply.partial_score),
            presence=Ciphertext.from_bytes(key, reply.presence),
            indicators=tuple(
                (i.name, Ciphertext.from_bytes(key, i.ciphertext)) for i in reply.indicators
            ),
        )

    def total(
        self,
        query_id: str,
        model: ModelEntry,
        answers: Sequence[NodeAnswer],
        failures: Sequence[NodeFailure],
    ) -> QueryResult:
        # Start from Enc(0)·g^intercept: the intercept is public, so adding it needs no
        # fresh obfuscator; the nodes' randomised partials re-randomise the sum.
        key = self._key
        total = Ciphertext(key, 1).add_encoded(self._encoding.encode(linear_intercept(model), key))
        for answer in answers:
            total = total + answer.partial_score
        return QueryResult(query_id, model, self._encoding, total, tuple(answers), tuple(failures))


class PackedForm:
    """Slots: 0 = score (every node adds its partial), then per node presence + indicators.

    The slot plan needs every node's catalogue, so the nodes are described first.
    """

    describes_late = False

    def __init__(
        self,
        key: PublicKey,
        encoding: FixedPointEncoding,
        slot_bits: int,
        nodes: Sequence[NodeEntry],
        catalogues: Mapping[str, NodeCatalogue],
        in_scope: Callable[[str], bool],
    ) -> None:
        self._key = key
        self._encoding = encoding
        self.layout = SlotLayout.for_key(key, slot_bits, additions=len(nodes) + 1)
        self._first: dict[str, tuple[int, tuple[str, ...]]] = {}
        slot = 1
        for node in nodes:
            catalogue = catalogues.get(node.id)
            names = tuple(n for n in catalogue.indicators if in_scope(n)) if catalogue else ()
            self._first[node.id] = (slot, names)
            slot += 1 + len(names)
        self.count = (slot + self.layout.slots - 1) // self.layout.slots

    def plan(self, node: NodeEntry, catalogue: NodeCatalogue | None) -> NodePlan | None:
        if catalogue is None:
            return None
        first, names = self._first[node.id]
        layout = self.layout
        spec = node_pb2.PackingSpec(
            slot_bits=layout.slot_bits,
            slots_per_ciphertext=layout.slots,
            additions=layout.additions,
            first_slot=first,
        )
        return NodePlan(names, spec)

    def check(self, node: NodeEntry, plan: NodePlan, reply: node_pb2.ScoreResponse) -> PackedAnswer:
        first, names = self._first[node.id]
        slots = self.layout.slots
        expected = {0} | {s // slots for s in range(first, first + 1 + len(names))}
        _from_node(node, reply)
        indices = [p.index for p in reply.packed]
        if sorted(indices) != sorted(expected) or reply.indicators or reply.partial_score:
            raise InvalidInputError(
                f"packed answer covers ciphertexts {sorted(indices)}, expected {sorted(expected)}"
            )
        packed = {p.index: Ciphertext.from_bytes(self._key, p.ciphertext) for p in reply.packed}
        return PackedAnswer(node, packed, first, names)

    def total(
        self,
        query_id: str,
        model: ModelEntry,
        answers: Sequence[PackedAnswer],
        failures: Sequence[NodeFailure],
    ) -> QueryResult:
        key = self._key
        encoding = self._encoding
        intercept = FixedPointEncoding.encode_integer(
            encoding.to_integer(linear_intercept(model)), key
        )
        totals = [Ciphertext(key, 1) for _ in range(self.count)]
        totals[0] = totals[0].add_encoded(intercept)
        for answer in answers:
            for index, ciphertext in answer.packed.items():
                totals[index] = totals[index] + ciphertext
        profile = PackedProfile(self.layout, tuple(totals))
        return QueryResult(
            query_id, model, encoding, None, tuple(answers), tuple(failures), profile
        )
