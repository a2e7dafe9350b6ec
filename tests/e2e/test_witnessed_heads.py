"""Witnessed tree heads against running servers: node processes over mTLS cosign the heads
they accept, the coordinator (uvicorn) collects and publishes the cosignatures, and a
client demanding a quorum refuses a head fewer nodes cosigned, or a second head of the
same size (served by a coordinator whose head route is replaced in-process)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from typer.testing import CliRunner

from creditshare.cli import app as cli_app
from creditshare.client import CreditShareClient, WitnessPolicy
from creditshare.coordinator import create_app
from creditshare.coordinator._db import make_engine as coordinator_engine
from creditshare.coordinator._services import load_log_signer
from creditshare.crypto import PrivateKey, VerifyKey
from creditshare.demo import Federation, FederationLayout, read_enterprises
from creditshare.errors import SplitViewError, UnwitnessedHeadError
from creditshare.identity import Chain
from creditshare.ledger import (
    Ledger,
    SqlLedgerStorage,
    WitnessKey,
    checkpoint_body,
    leaf_hash,
    log_origin,
    parse_checkpoint,
    verify_cosignature,
)

from .conftest import E2E_DEPARTMENTS, ServeApp, Trust


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Federation]:
    """One chain, three witnessing nodes; the coordinator asks for cosignatures every 0.5 s."""
    layout = FederationLayout.write(
        tmp_path_factory.mktemp("witnessed"),
        data_dir,
        chains=[Chain.YRD],
        departments=E2E_DEPARTMENTS,
        node_deadline_seconds=1.0,
        coordinator_overrides={"witness_interval_seconds": 0.5},
    )
    layout.import_data()
    with Federation(layout) as running:
        yield running


@pytest.fixture(scope="module")
def trust(federation: Federation, bank_key: PrivateKey) -> Iterator[Trust]:
    state = Trust(federation, bank_key, "witness-bank")
    yield state
    state.close()


@pytest.fixture(scope="module")
def uscc(federation: Federation, trust: Trust) -> str:
    rows = read_enterprises(federation.layout.data_dir)
    code = next(r["uscc"] for r in rows if r["record_chains"] == "yrd")
    trust.bank.query(code, trust.consent(code))  # the log now has an entry and a head
    return code


@pytest.fixture(scope="module")
def witnesses(federation: Federation) -> list[WitnessKey]:
    keys = federation.layout.witness_keys()
    assert [k.name for k in keys] == ["yrd-tax", "yrd-market", "yrd-court"]
    return keys


@pytest.fixture(scope="module")
def log_key(federation: Federation) -> VerifyKey:
    return federation.layout.log_key()


def _head(trust: Trust) -> dict[str, Any]:
    return trust.bank.ledger_head()


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_background_rounds_collect_and_publish_every_nodes_cosignature(
    trust: Trust, uscc: str, witnesses: list[WitnessKey], log_key: VerifyKey
) -> None:
    def caught_up() -> bool:
        head = _head(trust)
        witnessed = head["witnessed_head"]
        return (
            witnessed is not None
            and witnessed["size"] == head["size"]
            and len(head["cosignatures"]) == len(witnesses)
        )

    _wait_for(caught_up, "every node's cosignature on the latest head")
    head = _head(trust)
    assert head["witnessed_head"]["root"] == head["root"]
    published = trust.bank.verified_head(WitnessPolicy(tuple(witnesses), 3), log_key)
    assert sorted(published.witnesses) == sorted(w.name for w in witnesses)
    # The C2SP text form carries the same head and cosignatures, each verifying.
    response = httpx.get(
        f"{trust.url}/v1/ledger/checkpoint",
        headers={"Authorization": f"Bearer {trust.bank_api_key}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    parsed, cosignatures = parse_checkpoint(response.text, log_key.cryptography_key)
    assert parsed.size == head["size"]
    body = checkpoint_body(parsed, log_origin(log_key.cryptography_key))
    by_name = {w.name: w for w in witnesses}
    assert sorted(c.witness for c in cosignatures) == sorted(by_name)
    for cosignature in cosignatures:
        verify_cosignature(by_name[cosignature.witness], cosignature, body)


def test_client_with_a_quorum_accepts_and_the_enterprise_sees_witnessed_entries(
    trust: Trust, uscc: str, witnesses: list[WitnessKey], log_key: VerifyKey, tmp_path: Path
) -> None:
    trust.bank.query(uscc, trust.consent(uscc))  # a newer head than any cosigned yet
    enterprise, _ = trust.enterprise(uscc)
    policy = WitnessPolicy(tuple(witnesses), 2)
    entries = enterprise.verified_enterprise_queries(uscc, log_key, policy)
    assert len(entries) >= 2
    assert all(e.verified and len(e.witnessed_by) >= 2 for e in entries), entries
    # The enterprise's command: witnessed with --witness/--quorum, and says so plainly
    # when no witness is configured.
    base = [
        "enterprise",
        "queries",
        "--coordinator",
        trust.url,
        "--api-key",
        trust.enterprise_api_key(uscc),
        "--uscc",
        uscc,
        "--log-key",
        log_key.to_text(),
        "--heads-file",
        str(tmp_path / "heads.json"),
    ]
    runner = CliRunner()
    witnessed_args = [*base, "--quorum", "2"]
    for key in witnesses:
        witnessed_args += ["--witness", key.vkey()]
    result = runner.invoke(cli_app, witnessed_args)
    assert result.exit_code == 0, result.output
    assert "a quorum of 2 of 3 witnesses required" in result.output
    assert "witnessed by" in result.output and "NOT VERIFIED" not in result.output
    assert (tmp_path / "heads.json").exists()
    file_args = [*base, "--witnesses-file", str(_witnesses_file(tmp_path, witnesses))]
    result = runner.invoke(cli_app, file_args)
    assert result.exit_code == 0, result.output
    assert "a quorum of 1 of 3" not in result.output  # default: every witness given
    result = runner.invoke(cli_app, base)
    assert result.exit_code == 0, result.output
    assert "UNWITNESSED" in result.output


def _witnesses_file(folder: Path, keys: list[WitnessKey]) -> Path:
    path = folder / "witnesses.txt"
    path.write_text("# the chain's nodes\n" + "".join(k.vkey() + "\n" for k in keys))
    return path


def test_a_frozen_node_is_named_and_does_not_hold_the_round(
    federation: Federation, trust: Trust, uscc: str
) -> None:
    trust.bank.query(uscc, trust.consent(uscc))
    federation.pause_node("yrd-market")
    try:
        collected = trust.bank.cosign_now()
    finally:
        federation.resume_node("yrd-market")
    assert collected["failures"] == [{"node": "yrd-market", "reason": "deadline exceeded"}]
    cosigned = {c["witness"] for h in collected["heads"] for c in h["cosignatures"]}
    assert cosigned == {"yrd-tax", "yrd-court"}
    # The node is back: the next round gets all three, and queries still work.
    _wait_for(lambda: not trust.bank.cosign_now()["failures"], "the resumed node to cosign again")
    assert trust.bank.query(uscc, trust.consent(uscc)).answered


# --- a coordinator that lies about its head ---------------------------------------------


def _lying_coordinator(federation: Federation, head_route: Callable[[], dict[str, Any]]) -> FastAPI:
    """The real coordinator program on the real database, its head route replaced."""
    settings = federation.layout.coordinator_settings().model_copy(
        update={"witness_interval_seconds": 0.0}
    )
    app = create_app(settings)
    # Routes match in order: this one, first, answers before the real one.
    app.router.routes.insert(0, APIRoute("/v1/ledger/head", head_route, methods=["GET"]))
    return app


def _real_head(trust: Trust) -> dict[str, Any]:
    head: dict[str, Any] = trust.bank.cosign_now() and _head(trust)
    assert head["witnessed_head"] is not None and head["witnessed_head"]["size"] == head["size"]
    return head


def test_a_head_fewer_than_the_quorum_cosigned_is_refused(
    federation: Federation,
    trust: Trust,
    uscc: str,
    witnesses: list[WitnessKey],
    log_key: VerifyKey,
    serve_app: ServeApp,
) -> None:
    real = _real_head(trust)
    one = dict(real["cosignatures"][0])
    forged = {**real["cosignatures"][1], "signature": base64.b64encode(bytes(64)).decode()}

    def thin_head() -> dict[str, Any]:
        # One genuine cosignature (twice: it must count once) and one forged one.
        return {**real, "cosignatures": [one, one, forged]}

    policy = WitnessPolicy(tuple(witnesses), 2)
    with (
        serve_app(_lying_coordinator(federation, thin_head)) as url,
        CreditShareClient(url, api_key=trust.bank_api_key) as client,
    ):
        with pytest.raises(UnwitnessedHeadError) as refused:
            client.verified_head(policy, log_key)
        message = str(refused.value)
        assert f"head of size {real['size']} has 1 valid cosignature of a quorum of 2" in message
        assert f"{forged['witness']}: cosignature by witness" in message
        assert "does not verify" in message
        # Quorum 1 would have accepted it: the refusal is the quorum's doing.
        assert client.verified_head(WitnessPolicy(tuple(witnesses), 1), log_key).witnesses == (
            one["witness"],
        )
    # Nothing changed at the real coordinator, which still serves a witnessed head.
    assert trust.bank.verified_head(policy, log_key).head.size == real["size"]


def test_two_heads_of_the_same_size_with_different_roots_are_refused(
    federation: Federation,
    trust: Trust,
    uscc: str,
    witnesses: list[WitnessKey],
    log_key: VerifyKey,
    serve_app: ServeApp,
    tmp_path: Path,
) -> None:
    real = _real_head(trust)
    policy = WitnessPolicy(tuple(witnesses), 2)
    state = tmp_path / "heads.json"
    with CreditShareClient(trust.url, api_key=trust.bank_api_key, head_state=state) as honest:
        accepted = honest.verified_head(policy, log_key)
    assert accepted.head.size == real["size"]
    # The coordinator's own key signs another root at the same size (what a coordinator
    # showing different parties different logs must do), keeping the real cosignatures.
    signer = load_log_signer(federation.layout.coordinator_settings())
    other = signer.sign_head(real["size"], leaf_hash(b"another history"), real["timestamp_ms"])
    forged_head = {**real, **other.to_dict(), "witnessed_head": other.to_dict()}

    with (
        serve_app(_lying_coordinator(federation, lambda: forged_head)) as url,
        CreditShareClient(url, api_key=trust.bank_api_key, head_state=state) as client,
    ):
        with pytest.raises(SplitViewError) as refused:
            client.verified_head(policy, log_key)
        message = str(refused.value)
        assert "split view" in message and f"size {real['size']}" in message
        assert "forked" in message
    # The remembered head still matches the real coordinator's log.
    with CreditShareClient(trust.url, api_key=trust.bank_api_key, head_state=state) as again:
        assert again.verified_head(policy, log_key).head.root == accepted.head.root


def test_a_newer_head_that_does_not_extend_a_remembered_one_is_refused(
    federation: Federation,
    trust: Trust,
    uscc: str,
    witnesses: list[WitnessKey],
    log_key: VerifyKey,
    serve_app: ServeApp,
) -> None:
    real = _real_head(trust)
    policy = WitnessPolicy(tuple(witnesses), 2)
    signer = load_log_signer(federation.layout.coordinator_settings())
    # A larger head of another history: the real consistency route cannot prove it.
    other = signer.sign_head(real["size"] + 5, leaf_hash(b"rewritten"), real["timestamp_ms"])
    forged_head = {**real, **other.to_dict(), "witnessed_head": None, "cosignatures": []}
    with (
        serve_app(_lying_coordinator(federation, lambda: forged_head)) as url,
        CreditShareClient(url, api_key=trust.bank_api_key) as client,
    ):
        client._heads.remember(log_origin(log_key.cryptography_key), _signed(real))
        with pytest.raises(SplitViewError, match="does not extend the head of size"):
            client.verified_head(policy, log_key)


def _signed(document: dict[str, Any]) -> Any:
    from creditshare.ledger import SignedTreeHead

    return SignedTreeHead.from_dict(document)


def test_a_forked_log_gets_no_cosignature_from_any_node(
    federation: Federation,
    trust: Trust,
    uscc: str,
    witnesses: list[WitnessKey],
    log_key: VerifyKey,
    serve_app: ServeApp,
    tmp_path: Path,
) -> None:
    """The real coordinator program, same log key, another history (its own database):
    every node refuses to cosign, says why, and logs it; the real log is still cosigned."""
    real = _real_head(trust)
    settings = federation.layout.coordinator_settings().model_copy(
        update={"witness_interval_seconds": 0.0, "database_url": f"sqlite:///{tmp_path / 'f.db'}"}
    )
    # The rewritten history is written first, under the log key: a coordinator that
    # rewrote its database (its own start-up check then refuses to append; it can still
    # ask for cosignatures, which is what a compromised one would do).
    forged = Ledger(
        SqlLedgerStorage(coordinator_engine(settings.database_url)),
        load_log_signer(settings),
        lambda: datetime.now(UTC),
    )
    for i in range(real["size"] + 3):
        forged.append(f'{{"rewritten": {i}}}'.encode(), uscc)
    app = create_app(settings)
    with serve_app(app) as url:
        services = app.state.services
        services.participants.register("mallory", "operator", "Mallory")
        api_key = services.participants.issue_key("mallory").api_key
        response = httpx.post(
            f"{url}/v1/ledger/cosign", headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        )
    assert response.status_code == 200, response.text
    collected = response.json()
    assert collected["heads"] == []
    reasons = {f["node"]: f["reason"] for f in collected["failures"]}
    assert sorted(reasons) == sorted(w.name for w in witnesses)
    for reason in reasons.values():
        assert reason.startswith("failed_precondition: ") and "does not extend" in reason
    logs = federation.layout.work_dir / "logs"
    for key in witnesses:
        text = (logs / f"{key.name}.log").read_text(errors="replace")
        assert "refused to cosign a forked tree head" in text
    # The genuine log is untouched and still cosigned by every node.
    trust.bank.query(uscc, trust.consent(uscc))
    honest = trust.bank.cosign_now()
    assert honest["failures"] == [] and len(honest["heads"][0]["cosignatures"]) == 3
