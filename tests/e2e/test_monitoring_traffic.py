"""What the coordinator receives in a monitoring cycle does not depend on what happened.

A recording interceptor sits on every node channel of a real coordinator replica (real
uvicorn, real node processes); cycles run with nothing to report, then with events for
some watched enterprises, then with nothing again. Byte for byte in size and count, the
coordinator receives, stores and records the same thing in every cycle: only the bank,
opening the batches, sees the difference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import grpc
import httpx
from fastapi import FastAPI

from creditshare._settings import load_settings
from creditshare.client import AlertInbox
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.demo import Federation
from creditshare.proto import monitoring_pb2

from ._monitoring import WATCH, CourtRecords, monitoring_consent
from .conftest import Trust


class Recorder(grpc.aio.UnaryUnaryClientInterceptor):
    """Every response a node sends the coordinator, with the method it answered."""

    def __init__(self) -> None:
        self.responses: list[tuple[str, Any]] = []

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: Any,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        response = await call
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        self.responses.append((name, response))
        return response


def _profile(responses: list[tuple[str, Any]]) -> list[tuple[str, str, int, tuple[int, ...]]]:
    """(method, node, message size, sizes of its sealed batches), in a stable order."""
    out = []
    for method, response in responses:
        node = getattr(response, "node_id", "")
        sealed: tuple[int, ...] = ()
        if isinstance(response, monitoring_pb2.MonitorResponse):
            assert not response.unknown and not response.ended
            sealed = tuple(len(b.sealed) for b in response.batches)
        out.append((method.rsplit("/", 1)[-1], node, response.ByteSize(), sealed))
    return sorted(out)


def test_cycles_look_the_same_whether_or_not_anything_happened(
    monitored: Federation,
    mtrust: Trust,
    tmp_path: Path,
    serve_app: Callable[[FastAPI], AbstractContextManager[str]],
) -> None:
    layout = monitored.layout
    assert layout.coordinator_config is not None
    court = CourtRecords(monitored, tmp_path)
    watched = court.clean(4)
    for uscc in watched:  # the score too: one encrypted score per subscription per cycle
        signals = {**WATCH, "score_change": 1}
        mtrust.bank.subscribe(uscc, monitoring_consent(mtrust, uscc), signals=signals)

    recorder = Recorder()
    settings = load_settings(CoordinatorSettings, layout.coordinator_config)
    # The reachability probes (NodeInfo, on a timer of their own) are not cycle traffic:
    # one landing inside some cycles' recordings only would make the profiles differ.
    settings = settings.model_copy(update={"node_probe_interval_seconds": 0})
    operator = {"Authorization": f"Bearer {mtrust.operator_api_key}"}
    inbox = AlertInbox(tmp_path / "inbox.json")
    profiles: list[list[tuple[str, str, int, tuple[int, ...]]]] = []
    leaves: list[int] = []
    events: list[int] = []
    # A second coordinator replica on the same database, with a recorder on its channels.
    with serve_app(create_app(settings, interceptors=[recorder])) as url:
        plan: list[list[str]] = [[], [], [watched[0]], [], [watched[1], watched[2]], []]
        for judged in plan:
            for uscc in judged:
                court.judgment(uscc)
            recorder.responses.clear()
            response = httpx.post(f"{url}/v1/monitoring/cycles", headers=operator, timeout=120)
            assert response.status_code == 200, response.text
            summary = response.json()
            profiles.append(_profile(recorder.responses))
            index = summary["ledger_index"]
            entry = httpx.get(f"{url}/v1/ledger/entries/{index}", headers=operator)
            assert entry.status_code == 200, entry.text
            leaves.append(len(entry.json()["leaf_data"]))
            events.append(len(list(mtrust.bank.alerts(inbox=inbox))))

    # Real events happened in cycles 3 and 5 only (a judgment, and the score it moved)...
    assert events == [0, 0, 2, 0, 4, 0]
    # ...yet every cycle's traffic has one profile: same calls, same sizes, same counts.
    assert profiles[0], "the cycle called no node"
    assert [p for p in profiles if p != profiles[0]] == []
    monitors = [p for p in profiles[0] if p[0] == "Monitor"]
    assert len(monitors) == 3  # court (batches and score shares), tax and market (shares)
    court_answer = next(m for m in monitors if m[1] == "yrd-court")
    assert len(court_answer[3]) == len(watched)
    assert len(set(court_answer[3])) == 1  # every sealed batch the same length
    # The ledger's cycle entries are the same size too (they commit to subscriptions only).
    assert len(set(leaves)) == 1
    # And what the coordinator stored per cycle: as many batches, all of one size.
    stored: dict[int, list[int]] = defaultdict(list)
    for alert in mtrust.bank.get("/v1/alerts?limit=1000")["alerts"]:
        size = len(alert["sealed"] or "") + len(alert["encrypted_score"] or "")
        stored[int(alert["cycle"])].append(size)
    assert len(stored) == len(plan)
    assert len({tuple(sorted(sizes)) for sizes in stored.values()}) == 1
