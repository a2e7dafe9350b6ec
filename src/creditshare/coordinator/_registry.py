"""Chains, nodes and models the coordinator knows, and which nodes a query reaches."""

from __future__ import annotations

from collections.abc import Iterable

from creditshare.coordinator._settings import CoordinatorSettings, ModelEntry, NodeEntry
from creditshare.errors import InvalidInputError, NotFoundError
from creditshare.identity import Chain

__all__ = ["Registry"]


class Registry:
    def __init__(self, settings: CoordinatorSettings) -> None:
        self._nodes = {n.id: n for n in settings.nodes}
        self._models = {m.id: m for m in settings.models}

    @property
    def nodes(self) -> list[NodeEntry]:
        return list(self._nodes.values())

    @property
    def models(self) -> list[ModelEntry]:
        return list(self._models.values())

    def model(self, model_id: str) -> ModelEntry:
        try:
            return self._models[model_id]
        except KeyError:
            raise NotFoundError(f"unknown model {model_id!r}; see GET /v1/models") from None

    def scope(self, chains: Iterable[Chain] | None) -> list[NodeEntry]:
        """Every node of the requested chains (all chains by default).

        The enterprise's home chain does not narrow the scope: fanning out to every
        node is what keeps the coordinator from learning where records are.
        """
        wanted = set(chains) if chains else set(Chain)
        nodes = [n for n in self._nodes.values() if n.chain in wanted]
        if not nodes:
            names = ", ".join(sorted(c.value for c in wanted))
            raise InvalidInputError(f"no data node is registered on chain(s) {names}")
        return nodes
