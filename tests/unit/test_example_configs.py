"""The example configurations shipped for operators load as documented."""

from __future__ import annotations

from pathlib import Path

from creditshare._settings import load_settings
from creditshare.coordinator import CoordinatorSettings
from creditshare.departments import DEFAULT_INTERCEPT, DEFAULT_MODEL_ID, DEFAULT_WEIGHTS
from creditshare.node import NodeSettings

ROOT = Path(__file__).resolve().parents[2]


def test_node_example_loads_with_published_weights() -> None:
    settings = load_settings(NodeSettings, ROOT / "node" / "example.toml")
    assert settings.department == "tax"
    assert settings.models[DEFAULT_MODEL_ID].weights == DEFAULT_WEIGHTS["tax"]


def test_coordinator_example_loads() -> None:
    settings = load_settings(CoordinatorSettings, ROOT / "coordinator" / "example.toml")
    assert [n.id for n in settings.nodes] == ["yrd-tax", "bth-court"]
    assert settings.models[0].intercept == DEFAULT_INTERCEPT
