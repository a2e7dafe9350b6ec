"""A whole federation on loopback: one coordinator and a data node per chain × department.

Used by ``creditshare demo``, the end-to-end tests and the benchmarks, so all
three exercise the same real processes an operator would run: each node is its
own ``creditshare node serve`` process with its own SQLite database, and the
coordinator is ``creditshare coordinator serve`` under uvicorn.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditshare._settings import load_settings
from creditshare.client import CreditShareClient, Identity
from creditshare.coordinator import CoordinatorSettings
from creditshare.coordinator._admin import bootstrap_operator, init_log_key
from creditshare.crypto import VerifyKey
from creditshare.demo._pki import chain_ca, node_identity, participant_identity, tls_identity
from creditshare.demo._toml import dumps
from creditshare.departments import DEFAULT_INTERCEPT, DEFAULT_MODEL_ID, DEFAULT_WEIGHTS
from creditshare.federated import ModelShard
from creditshare.identity import Chain
from creditshare.ledger import WitnessKey
from creditshare.node import (
    NodeSettings,
    generate_witness_key,
    import_into_node,
    load_witness_key,
    make_engine,
)
from creditshare.node._settings import ModelShardSettings
from creditshare.node._storage import ShardStore
from creditshare.pki import TlsSettings, channel_credentials
from creditshare.pki._request import DEFAULT_HOSTS

__all__ = ["Federation", "FederationLayout", "NodeLayout", "free_port"]

ALL_DEPARTMENTS: tuple[str, ...] = ("tax", "market", "social", "court", "utility")

#: How every process is started unless told otherwise: this interpreter's CLI.
_CLI: tuple[str, ...] = (sys.executable, "-m", "creditshare")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class NodeLayout:
    node_id: str
    chain: Chain
    department: str
    port: int
    config: Path
    data_file: Path
    #: The node's own Ed25519 key (made in its folder) and its credential (role "node").
    signing_key: Path | None = None
    credential: Path | None = None
    #: Where the node listens and the coordinator dials it (its TLS certificate names it).
    host: str = "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(slots=True)
class FederationLayout:
    """Configuration files and databases for a federation, written to ``work_dir``."""

    work_dir: Path
    data_dir: Path
    nodes: list[NodeLayout] = field(default_factory=list)
    coordinator_config: Path | None = None
    coordinator_port: int = 0
    #: Each chain CA's current revocation list (signed, valid a week).
    revocation_lists: dict[Chain, Path] = field(default_factory=dict)
    #: Where the coordinator listens and is reached (it and every node bind this host).
    host: str = "127.0.0.1"

    @classmethod
    def write(
        cls,
        work_dir: Path,
        data_dir: Path,
        chains: Iterable[Chain] = tuple(Chain),
        departments: Iterable[str] | Mapping[Chain, Sequence[str]] = ALL_DEPARTMENTS,
        node_deadline_seconds: float = 3.0,
        weights: Mapping[str, Mapping[str, float]] = DEFAULT_WEIGHTS,
        intercept: float = DEFAULT_INTERCEPT,
        coordinator_overrides: Mapping[str, object] | None = None,
        node_overrides: Mapping[str, object] | None = None,
        schema_files: Mapping[str, Path] | None = None,
        host: str = "127.0.0.1",
        port_for: Callable[[str], int] | None = None,
        database_url_for: Callable[[str], str] | None = None,
    ) -> FederationLayout:
        """Write PKI, keys and configs for a federation with mutual TLS everywhere.

        ``departments`` is the same list for every chain, or each chain's own. A
        department named in ``schema_files`` is loaded by its nodes from that schema
        file (setting ``schema_file``), as an operator adds a department without code;
        a department without ``weights`` serves no configured scorecard (trained
        models only). ``port_for`` and ``database_url_for`` map a service ("coordinator"
        or a node id) to its port and database URL: by default a free port on loopback
        and a SQLite file in the service's folder (the demo's, and tests'); ``creditshare
        chain init`` passes fixed ports and, for PostgreSQL, a database per service."""
        work_dir.mkdir(parents=True, exist_ok=True)
        layout = cls(work_dir=work_dir, data_dir=data_dir, host=host)
        chains = tuple(chains)
        per_chain = (
            {chain: tuple(departments[chain]) for chain in chains}
            if isinstance(departments, Mapping)
            else dict.fromkeys(chains, tuple(departments))
        )

        def port(service: str) -> int:
            return free_port() if port_for is None else port_for(service)

        def database_url(service: str, sqlite_file: Path) -> str:
            if database_url_for is None:
                return f"sqlite:///{sqlite_file}"
            return database_url_for(service)

        # The name every TLS certificate carries, beside loopback (as `pki request --host`).
        hosts = () if host in DEFAULT_HOSTS else (host, *DEFAULT_HOSTS)
        log_key = init_log_key(work_dir / "coordinator" / "log-signing-key.pem")
        tls: dict[str, dict[str, str]] = {}
        for chain in chains:
            # The chain operator's CA; every party below makes its keys in its own folder
            # and the CA only signs their requests.
            ca_dir, layout.revocation_lists[chain] = chain_ca(work_dir, chain)
            tls[chain.value] = tls_identity(
                ca_dir,
                work_dir / "pki" / chain.value / "coordinator",
                f"coordinator-{chain.value}",
                "coordinator",
            )
            for department in per_chain[chain]:
                node_id = f"{chain.value}-{department}"
                node_port = port(node_id)
                node_dir = work_dir / "nodes" / node_id
                node_dir.mkdir(parents=True, exist_ok=True)
                identity = node_identity(ca_dir, node_dir / "keys", node_id, hosts)
                # Made in the node's own folder, as `creditshare node witness-key` does
                # on the node's host: the private key never leaves it.
                witness_key = node_dir / "witness-key.pem"
                if not witness_key.exists():
                    generate_witness_key(witness_key)
                doc = {
                    "node_id": node_id,
                    "department": department,
                    "chain": chain.value,
                    "listen": f"{host}:{node_port}",
                    "database_url": database_url(node_id, node_dir / "node.db"),
                    "log_public_key": log_key.verify_key.to_text(),
                    "witness_key_file": str(witness_key),
                    "tls": identity.tls,
                    **(node_overrides or {}),
                }
                if department in (schema_files or {}):
                    doc["schema_file"] = str(Path((schema_files or {})[department]).resolve())
                if department in weights:
                    doc["models"] = {DEFAULT_MODEL_ID: {"weights": dict(weights[department])}}
                config = node_dir / "node.toml"
                config.write_text(dumps(doc), encoding="utf-8")
                layout.nodes.append(
                    NodeLayout(
                        node_id,
                        chain,
                        department,
                        node_port,
                        config,
                        data_dir / chain.value / f"{department}.csv",
                        signing_key=identity.signing_key,
                        credential=identity.credential,
                        host=host,
                    )
                )
        layout.coordinator_port = port("coordinator")
        layout.coordinator_config = work_dir / "coordinator" / "coordinator.toml"
        coordinator: dict[str, object] = {
            "host": host,
            "port": layout.coordinator_port,
            "node_deadline_seconds": node_deadline_seconds,
            "database_url": database_url(
                "coordinator", work_dir / "coordinator" / "coordinator.db"
            ),
            "log_signing_key_file": str(work_dir / "coordinator" / "log-signing-key.pem"),
            **(coordinator_overrides or {}),
            "tls": tls,
            "nodes": [
                {
                    "id": n.node_id,
                    "chain": n.chain.value,
                    "department": n.department,
                    "address": n.address,
                }
                for n in layout.nodes
            ],
            "models": [
                {
                    "id": DEFAULT_MODEL_ID,
                    "intercept": intercept,
                    "description": "Published SME scorecard over tax, market, social "
                    "security, court and utility records",
                }
            ],
        }
        layout.coordinator_config.write_text(dumps(coordinator), encoding="utf-8")
        return layout

    def move_node(self, node: NodeLayout) -> NodeLayout:
        """Give a node a new free port (another process took the one it was given between
        ``free_port`` and its bind): its config and the coordinator's are rewritten."""
        moved = dataclasses.replace(node, port=free_port())
        _rewrite(moved.config, lambda doc: doc.update(listen=moved.address))
        assert self.coordinator_config is not None

        def readdress(doc: dict[str, Any]) -> None:
            for entry in doc["nodes"]:
                if entry["id"] == node.node_id:
                    entry["address"] = moved.address

        _rewrite(self.coordinator_config, readdress)
        self.nodes[self.nodes.index(node)] = moved
        return moved

    def move_coordinator(self) -> None:
        """The coordinator's port was taken before it bound it: a new one, config rewritten."""
        assert self.coordinator_config is not None
        self.coordinator_port = free_port()
        _rewrite(self.coordinator_config, lambda doc: doc.update(port=self.coordinator_port))

    def revocation_list(self, chain: Chain) -> Path:
        """The chain CA's current revocation list (PEM), as nodes would be sent it."""
        return self.revocation_lists[chain]

    def identity_dir(
        self, participant_id: str, role: str, uscc: str | None = None, generation: int = 0
    ) -> Path:
        """A participant's identity folder: its key, and a credential from every chain CA.
        A later ``generation`` is a new key (a rotation), in a folder of its own."""
        return participant_identity(
            self.work_dir, tuple(self.revocation_lists), participant_id, role, uscc, generation
        )

    def identity(
        self, participant_id: str, role: str, uscc: str | None = None, generation: int = 0
    ) -> Identity:
        return Identity.load(self.identity_dir(participant_id, role, uscc, generation))

    def publish_revocation_lists(self, operator_api_key: str) -> None:
        """Relay every chain CA's current list through the coordinator (the operator's
        daily task): nodes refuse requests until they hold a fresh one."""
        with CreditShareClient(self.coordinator_url, api_key=operator_api_key) as operator:
            for path in self.revocation_lists.values():
                operator.upload_revocation_list(path.read_bytes())

    def coordinator_settings(self) -> CoordinatorSettings:
        assert self.coordinator_config is not None
        return load_settings(CoordinatorSettings, self.coordinator_config)

    def log_key(self) -> VerifyKey:
        """The log's public key as pinned in the node configs (not asked of the coordinator)."""
        return self.node_settings(self.nodes[0]).log_key

    def witness_keys(self) -> list[WitnessKey]:
        """Each node's witness vkey, as its operator hands it out (read here from the key
        files, which only a demo on one machine can do)."""
        keys = []
        for node in self.nodes:
            path = self.node_settings(node).witness_key_file
            if path is not None:
                keys.append(WitnessKey(node.node_id, load_witness_key(path).verify_key.raw))
        return keys

    def bootstrap_operator(self) -> str:
        """The chain operator's first API key, created directly in the coordinator database."""
        return bootstrap_operator(self.coordinator_settings(), "operator", "Chain operator").api_key

    def node_settings(self, node: NodeLayout) -> NodeSettings:
        return load_settings(NodeSettings, node.config)

    def import_data(self) -> dict[str, int]:
        """Import each node's CSV the way an operator would (one transaction per node)."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            if node.data_file.exists():
                summary = import_into_node(self.node_settings(node), [node.data_file])
                counts[node.node_id] = summary.rows
        return counts

    def trained_shards(self, model_id: str) -> dict[str, ModelShard]:
        """Each node's shard of a trained model, read from the node databases (demo view)."""
        shards: dict[str, ModelShard] = {}
        for node in self.nodes:
            stored = ShardStore(make_engine(self.node_settings(node).database_url)).load()
            if model_id in stored:
                shards[node.node_id] = stored[model_id]
        return shards

    def weights(self) -> dict[str, dict[str, float]]:
        """Per-node weights of the configured scorecard (for the plaintext re-computation);
        nodes that serve none are left out."""
        result: dict[str, dict[str, float]] = {}
        for node in self.nodes:
            shard: ModelShardSettings | None = self.node_settings(node).models.get(DEFAULT_MODEL_ID)
            if shard is not None:
                result[node.node_id] = dict(shard.weights)
        return result

    @property
    def coordinator_url(self) -> str:
        return f"http://{self.host}:{self.coordinator_port}"


def _rewrite(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(dumps(doc), encoding="utf-8")


#: What a process that lost its port to another one says before it exits.
_PORT_TAKEN = ("address already in use", "could not bind", "failed to bind")
#: Starts of one process before a lost port is an error (each on a new free port).
_PORT_ATTEMPTS = 3


def _lost_its_port(exc: RuntimeError) -> bool:
    return any(sign in str(exc).lower() for sign in _PORT_TAKEN)


class Federation:
    """Running processes for a ``FederationLayout``; stops them all on exit.

    ``node_command`` is the program each data node is started with, followed by
    ``node serve --config PATH``; by default (None) the ``creditshare`` CLI of this
    interpreter, as an operator would run it. The coordinator is always started with
    that default. Benchmarks use it to wrap the CLI in an instrumented launcher.
    """

    def __init__(
        self,
        layout: FederationLayout,
        start_timeout: float = 60.0,
        node_command: Sequence[str] | None = None,
    ) -> None:
        self.layout = layout
        self._timeout = start_timeout
        self.node_command = _CLI if node_command is None else tuple(node_command)
        if not self.node_command:
            raise ValueError("node_command must name a program")
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs = layout.work_dir / "logs"

    def revocation_list(self, chain: Chain) -> Path:
        """The chain CA's current revocation list (PEM) in the demo folder."""
        return self.layout.revocation_list(chain)

    def _spawn(self, name: str, args: list[str], command: Sequence[str] = _CLI) -> None:
        self._logs.mkdir(parents=True, exist_ok=True)
        log = (self._logs / f"{name}.log").open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._procs[name] = subprocess.Popen(
            [*command, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()

    def start(self) -> Federation:
        try:
            for node in self.layout.nodes:
                self._spawn(
                    node.node_id,
                    ["node", "serve", "--config", str(node.config)],
                    self.node_command,
                )
            deadline = time.monotonic() + self._timeout
            tls = self.layout.coordinator_settings().tls
            for node in list(self.layout.nodes):
                self._wait_node_moving(node, deadline, tls[node.chain])
            self._start_coordinator(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_node_moving(self, node: NodeLayout, deadline: float, tls: TlsSettings) -> None:
        """Wait for a node; one that lost its port to another process (the port was free
        when chosen, taken before the bind) is started again on a new one."""
        for attempt in range(_PORT_ATTEMPTS):
            try:
                self._wait_node(node, deadline, tls)
                return
            except RuntimeError as exc:
                if attempt + 1 == _PORT_ATTEMPTS or not _lost_its_port(exc):
                    raise
            node = self.layout.move_node(node)
            args = ["node", "serve", "--config", str(node.config)]
            self._spawn(node.node_id, args, self.node_command)

    def _start_coordinator(self, deadline: float) -> None:
        assert self.layout.coordinator_config is not None
        for attempt in range(_PORT_ATTEMPTS):
            self._spawn(
                "coordinator",
                ["coordinator", "serve", "--config", str(self.layout.coordinator_config)],
            )
            try:
                self._wait_http(self.layout.coordinator_url + "/healthz", "coordinator", deadline)
                return
            except RuntimeError as exc:
                if attempt + 1 == _PORT_ATTEMPTS or not _lost_its_port(exc):
                    raise
            self.layout.move_coordinator()

    def start_coordinator(self) -> None:
        """Start the coordinator again after ``stop_coordinator`` (same config and
        database), as an orchestrator restarts it; returns once it answers /healthz."""
        proc = self._procs.get("coordinator")
        if proc is not None and proc.poll() is None:
            raise RuntimeError("the coordinator is still running")
        self._start_coordinator(time.monotonic() + self._timeout)

    def _check_alive(self, name: str) -> None:
        proc = self._procs[name]
        if proc.poll() is not None:
            tail = (self._logs / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{tail}")

    def _wait_node(self, node: NodeLayout, deadline: float, tls: TlsSettings) -> None:
        credentials = channel_credentials(tls.ca, tls.cert, tls.key)
        while True:
            self._check_alive(node.node_id)
            try:
                with grpc.secure_channel(node.address, credentials) as channel:
                    stub = health_pb2_grpc.HealthStub(channel)
                    # The grpc_health stubs omit the generated method attributes.
                    reply = stub.Check(  # type: ignore[attr-defined]
                        health_pb2.HealthCheckRequest(service=""), timeout=1.0
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {node.node_id} did not become healthy")
            time.sleep(0.1)

    def _wait_http(self, url: str, name: str, deadline: float) -> None:
        while True:
            self._check_alive(name)
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not answer on {url}")
            time.sleep(0.1)

    def _terminate(self, name: str) -> int:
        proc = self._procs[name]
        proc.terminate()
        return proc.wait(timeout=30)

    def stop_node(self, node_id: str) -> int:
        """Terminate one node (SIGTERM, as if its host went down); returns its exit status."""
        return self._terminate(node_id)

    def start_node(self, node_id: str) -> None:
        """Start a node again after ``stop_node`` (same config and database), as its
        operator would after an outage; returns once it answers."""
        proc = self._procs.get(node_id)
        if proc is not None and proc.poll() is None:
            raise RuntimeError(f"node {node_id} is still running")
        node = next(n for n in self.layout.nodes if n.node_id == node_id)
        self._spawn(node_id, ["node", "serve", "--config", str(node.config)], self.node_command)
        tls = self.layout.coordinator_settings().tls
        self._wait_node_moving(node, time.monotonic() + self._timeout, tls[node.chain])

    def stop_coordinator(self) -> int:
        """SIGTERM the coordinator, as an orchestrator would, and wait; its exit status."""
        return self._terminate("coordinator")

    def pause_node(self, node_id: str) -> None:
        """Freeze one node (SIGSTOP): it accepts connections but never answers."""
        os.kill(self._procs[node_id].pid, signal.SIGSTOP)

    def resume_node(self, node_id: str) -> None:
        os.kill(self._procs[node_id].pid, signal.SIGCONT)

    def stop(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Federation:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
