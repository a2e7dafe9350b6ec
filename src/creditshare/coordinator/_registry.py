"""Chains, nodes and models the coordinator knows, and which nodes a query reaches.

Models come from two places: the published ones in the settings file, and those
bureaus trained here (rows in ``trained_model``); a configured id always wins.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from creditshare.coordinator._db import ModelRow
from creditshare.coordinator._settings import CoordinatorSettings, ModelEntry, NodeEntry
from creditshare.errors import InvalidInputError, NotFoundError
from creditshare.identity import Chain

__all__ = ["Registry"]


class Registry:
    def __init__(self, settings: CoordinatorSettings, engine: Engine | None = None) -> None:
        self._nodes = {n.id: n for n in settings.nodes}
        self._models = {m.id: m for m in settings.models}
        self._engine = engine

    @property
    def nodes(self) -> list[NodeEntry]:
        return list(self._nodes.values())

    def node(self, node_id: str) -> NodeEntry:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise NotFoundError(f"unknown node {node_id!r}; see GET /v1/nodes") from None

    def _trained(self) -> list[ModelRow]:
        if self._engine is None:
            return []
        with Session(self._engine) as session:
            return list(session.exec(select(ModelRow)))

    def trained(self, model_id: str) -> ModelRow | None:
        if self._engine is None:
            return None
        with Session(self._engine) as session:
            return session.get(ModelRow, model_id)

    @property
    def models(self) -> list[ModelEntry]:
        return [entry for entry, _ in self.catalogue()]

    def catalogue(self) -> list[tuple[ModelEntry, ModelRow | None]]:
        """Every model with its training row (None: published), in one query.

        A configured id wins over a trained one, but keeps the trained row's metadata
        when a bureau trained it here.
        """
        rows = {r.id: r for r in self._trained()}
        published = [(m, rows.get(m.id)) for m in self._models.values()]
        trained = [(self._entry(r), r) for r in rows.values() if r.id not in self._models]
        return [*published, *trained]

    @staticmethod
    def _entry(row: ModelRow) -> ModelEntry:
        return ModelEntry(
            id=row.id,
            description=row.description,
            intercept=row.intercept,
            model_type="gbdt" if row.model_type == "gbdt" else "logistic",
            tree_model=row.tree_model,
        )

    def model(self, model_id: str) -> ModelEntry:
        if model_id in self._models:
            return self._models[model_id]
        row = self.trained(model_id)
        if row is None:
            raise NotFoundError(f"unknown model {model_id!r}; see GET /v1/models")
        return self._entry(row)

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
