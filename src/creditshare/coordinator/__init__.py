"""The coordinator: registry, query broker and HTTP API. Holds no private key."""

from creditshare.coordinator._app import create_app
from creditshare.coordinator._registry import Registry
from creditshare.coordinator._routes_queries import PRESENCE_INDICATOR
from creditshare.coordinator._server import serve
from creditshare.coordinator._services import Services, build_services
from creditshare.coordinator._settings import (
    CoordinatorSettings,
    ModelEntry,
    NodeEntry,
    ScoreScale,
)
from creditshare.coordinator.relay import NodeAnswer, NodeFailure, QueryBroker, QueryResult

__all__ = [
    "PRESENCE_INDICATOR",
    "CoordinatorSettings",
    "ModelEntry",
    "NodeAnswer",
    "NodeEntry",
    "NodeFailure",
    "QueryBroker",
    "QueryResult",
    "Registry",
    "ScoreScale",
    "Services",
    "build_services",
    "create_app",
    "serve",
]
