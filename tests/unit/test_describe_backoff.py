"""Catalogue-only requests (consent grants, GET /v1/indicators) do not dial a node whose
Describe just failed: each would otherwise wait out that dead node's deadline."""

from __future__ import annotations

import asyncio
import time

from creditshare.coordinator._settings import NodeEntry
from creditshare.coordinator.relay._channels import NodeCatalogue, NodeChannels
from creditshare.identity import Chain


def _channels(answers: dict[str, bool], asked: list[str]) -> NodeChannels:
    channels = NodeChannels.__new__(NodeChannels)
    channels.catalogues = {}
    channels._undescribed_at = {}

    async def describe(node: NodeEntry) -> NodeCatalogue | None:
        asked.append(node.id)
        if answers[node.id]:
            channels.catalogues[node.id] = NodeCatalogue({})
            channels._undescribed_at.pop(node.id, None)
            return channels.catalogues[node.id]
        channels._undescribed_at[node.id] = time.monotonic()
        return None

    channels.describe = describe  # type: ignore[method-assign]
    return channels


def test_a_node_that_failed_is_left_alone_for_the_backoff_then_asked_again() -> None:
    nodes = [NodeEntry(id=n, chain=Chain.YRD, department="tax", address="x:1") for n in "ab"]
    asked: list[str] = []
    channels = _channels({"a": True, "b": False}, asked)
    asyncio.run(channels.describe_missing(nodes, backoff=1e9))
    assert sorted(asked) == ["a", "b"]
    asyncio.run(channels.describe_missing(nodes, backoff=1e9))
    assert sorted(asked) == ["a", "b"]  # a has a catalogue; b failed within the backoff
    asyncio.run(channels.describe_missing(nodes, backoff=0.0))
    assert sorted(asked) == ["a", "b", "b"]  # past the backoff: b is asked again
