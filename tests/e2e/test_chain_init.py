"""docs/walkthrough.md, run as written: `creditshare chain init` to a bank's decrypted query.

Every ``sh`` block of the walkthrough is fed, in order, to one real shell (so the variables
one block sets reach the next), with only the ports changed to free ones; the servers it
starts in the background are real processes, waited for by polling their health. If a
command in the document stops working, this test fails on it: the document cannot rot.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from creditshare._settings import load_settings
from creditshare.coordinator import CoordinatorSettings
from creditshare.demo import FederationLayout, NodeLayout, PlaintextOracle
from creditshare.departments import DEFAULT_INTERCEPT
from creditshare.identity import Chain
from creditshare.node import NodeSettings
from creditshare.pki import channel_credentials
from creditshare.synth import generate

from .._databases import postgres_admin_url
from ..unit.test_deploy_files import (
    cli_problem,
    command_environment,
    creditshare_invocations,
    markdown_shell_blocks,
    shell_commands,
)

ROOT = Path(__file__).resolve().parents[2]
WALKTHROUGH = ROOT / "docs" / "walkthrough.md"
#: The ports the walkthrough names (chain init's defaults).
DOC_COORDINATOR_PORT = 8000
DOC_FIRST_NODE_PORT = 50051
#: Generous: two busy cores, 2048-bit keys made on the way.
BLOCK_SECONDS = 300.0
START_SECONDS = 120.0


def walkthrough_blocks() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", WALKTHROUGH.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, f"{WALKTHROUGH} has no sh block"
    return blocks


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now, below the kernel's
    ephemeral range (so no outgoing connection of a busy machine takes one before the
    servers bind it: the walkthrough's ports are fixed, it cannot move a server)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        first = random.randrange(20000, max(20001, low - count))
        try:
            for port in range(first, first + count):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports")


def with_ports(block: str, coordinator_port: int, first_node_port: int) -> str:
    """The block with the test's ports: chain init is told them, URLs name the coordinator's."""
    block = re.sub(
        r"(creditshare chain init [^\n]*)",
        rf"\1 --port {coordinator_port} --node-port {first_node_port}",
        block,
    )
    return block.replace(f"127.0.0.1:{DOC_COORDINATOR_PORT}", f"127.0.0.1:{coordinator_port}")


class Shell:
    """One bash, fed block after block; everything it starts is in its process group."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._count = 0
        self._send("set -euo pipefail\n")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def run(self, block: str, timeout: float = BLOCK_SECONDS) -> str:
        """Run ``block``; its output. A failing command ends the shell (set -e): the test
        fails with the block and what it printed."""
        self._count += 1
        marker = f"__walkthrough_block_{self._count}_done__"
        self._send(f"{block}\necho {marker}\n")
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"block {self._count} still running after {timeout} s:\n{block}")
            if line is None:
                pytest.fail(
                    f"block {self._count} failed (shell exit {self.proc.wait()}):\n{block}\n"
                    f"--- its output:\n{''.join(out)[-4000:]}"
                )
            if line.strip() == marker:
                return "".join(out)
            out.append(line)

    def close(self) -> None:
        """End the shell and every server it started (one process group), by its id."""
        group = self.proc.pid
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                continue
            break
        self.proc.wait(timeout=10)


def wait_for_servers(block: str, cwd: Path) -> None:
    """Poll every server the block started until it answers (nodes: gRPC health over the
    coordinator's mutual TLS; the coordinator: /healthz)."""
    deadline = time.monotonic() + START_SECONDS
    for config in re.findall(r"creditshare node serve --config (\S+)", block):
        node = load_settings(NodeSettings, cwd / config)
        coordinator = next(cwd.glob("*/coordinator/coordinator.toml"))
        tls = load_settings(CoordinatorSettings, coordinator).tls[node.chain]
        credentials = channel_credentials(tls.ca, tls.cert, tls.key)
        while not node_serving(node.listen, credentials):
            if time.monotonic() > deadline:
                pytest.fail(f"node {node.node_id} never answered: {tail(cwd / 'logs')}")
            time.sleep(0.2)
    for config in re.findall(r"creditshare coordinator serve --config (\S+)", block):
        settings = load_settings(CoordinatorSettings, cwd / config)
        url = f"http://{settings.host}:{settings.port}/healthz"
        while not http_ok(url):
            if time.monotonic() > deadline:
                pytest.fail(f"the coordinator never answered {url}: {tail(cwd / 'logs')}")
            time.sleep(0.2)


def node_serving(address: str, credentials: grpc.ChannelCredentials) -> bool:
    try:
        with grpc.secure_channel(address, credentials) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=""), timeout=2.0
            )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def tail(logs: Path) -> str:
    return "\n".join(
        f"--- {log.name}:\n{log.read_text(errors='replace')[-1500:]}"
        for log in sorted(logs.glob("*.log"))
    )


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``creditshare *args`` in ``cwd``; stderr on one line (error boxes unwrapped)."""
    done = subprocess.run(
        [sys.executable, "-m", "creditshare", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "400"},
    )
    done.stderr = " ".join(done.stderr.replace("│", " ").split())
    return done


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    # The CLI of this interpreter (and this checkout's package, through PYTHONPATH); HOME
    # moved, so nothing the walkthrough does reaches the user's ~/.config.
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path / "home"),
        "PYTHONUNBUFFERED": "1",
    }
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    for name in [k for k in env if k.startswith("CREDITSHARE_")]:
        del env[name]
    # The walkthrough's settings but one: two cores shared with other suites may make a
    # node slower than chain init's 3 s deadline, and the test asserts every node answered.
    env["CREDITSHARE_COORDINATOR_NODE_DEADLINE_SECONDS"] = "20"
    work = tmp_path / "walk"
    work.mkdir()
    running = Shell(work, env)
    try:
        yield running
    finally:
        running.close()


def layout_of(work: Path) -> FederationLayout:
    """The chain `chain init` wrote, as a FederationLayout (for the plaintext oracle)."""
    chain_dir = work / "chain"
    coordinator = tomllib.loads((chain_dir / "coordinator/coordinator.toml").read_text())
    nodes = [
        NodeLayout(
            n["id"],
            Chain(n["chain"]),
            n["department"],
            int(n["address"].rsplit(":", 1)[1]),
            chain_dir / "nodes" / n["id"] / "node.toml",
            work / "data" / n["chain"] / f"{n['department']}.csv",
        )
        for n in coordinator["nodes"]
    ]
    return FederationLayout(
        chain_dir, work / "data", nodes, chain_dir / "coordinator" / "coordinator.toml"
    )


def test_the_walkthrough_stands_up_a_chain_and_a_bank_decrypts_its_first_query(
    shell: Shell, tmp_path: Path
) -> None:
    blocks = walkthrough_blocks()
    assert any("creditshare chain init" in b for b in blocks)
    assert any(f"127.0.0.1:{DOC_COORDINATOR_PORT}" in b for b in blocks)
    first_node_port = free_port_run(4)
    coordinator_port = first_node_port + 3
    work = tmp_path / "walk"
    outputs: list[str] = []
    for block in blocks:
        runnable = with_ports(block, coordinator_port, first_node_port)
        outputs.append(shell.run(runnable))
        wait_for_servers(runnable, work)

    # chain init wrote every private key 0600, and the ports it was told.
    private = [
        p for p in (work / "chain").rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()
    ]
    assert len(private) >= 1 + 1 + 1 + 3 * 3  # CA, ledger, coordinator TLS, 3 per node
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in private), private
    layout = layout_of(work)
    assert [n.node_id for n in layout.nodes] == ["yrd-tax", "yrd-market", "yrd-court"]
    assert [n.port for n in layout.nodes] == [first_node_port + i for i in range(3)]
    assert (work / "chain" / "README.md").read_text().count("creditshare ") >= 10

    # The operator's listing names every node chain init wrote.
    nodes_out = next(o for b, o in zip(blocks, outputs, strict=True) if "creditshare nodes" in b)
    assert all(n.node_id in nodes_out for n in layout.nodes), nodes_out

    # The bank's query: decrypted, every node answered, and the score is the plaintext one.
    query_out = next(o for b, o in zip(blocks, outputs, strict=True) if "creditshare query" in b)
    answer: dict[str, Any] = json.loads(query_out[query_out.index("{") :])
    assert answer["uscc"] == "91310115MA3BJ1XGXC"
    assert sorted(answer["coverage"]["answered"]) == ["yrd-court", "yrd-market", "yrd-tax"]
    assert answer["coverage"]["failed"] == []
    assert 300 <= answer["score"] <= 900
    assert 0 < answer["probability_of_default"] < 1
    assert answer["indicators"], "the consent covers every indicator"
    assert {i["chain"] for i in answer["indicators"]} == {"yrd"}
    oracle = PlaintextOracle(layout, DEFAULT_INTERCEPT)
    expected = oracle.linear(answer["uscc"], answer["coverage"]["answered"])
    assert abs(answer["linear_score"] - expected) < 1e-5

    # The enterprise's access log lists that query, its inclusion verified under a head
    # two of the three nodes cosigned.
    log_out = next(
        o for b, o in zip(blocks, outputs, strict=True) if "creditshare enterprise queries" in b
    )
    flat = " ".join(log_out.replace("│", " ").split())  # a table, lines wrapped or not
    assert re.search(r"query my-bank pre_loan_review verified, witnessed by", flat), log_out
    assert "a quorum of 2 of 3 witnesses" in flat


def test_chain_init_refuses_a_non_empty_folder_and_bad_options(tmp_path: Path) -> None:
    """Nothing is written over, and each refusal names the option and what was wrong."""

    def init(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(tmp_path, "chain", "init", *args)

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    refused = init("--out", str(mine))
    assert refused.returncode == 2
    assert "is not empty (notes.txt)" in refused.stderr and "--force" in refused.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    for args, says in [
        (["--chain", "xyz"], "'xyz' is not one of 'yrd', 'prd', 'bth'"),
        (["--department", "xyz:tax"], "unknown chain 'xyz' in 'xyz:tax'"),
        (["--department", "customs"], "unknown department 'customs'"),
        (["--chain", "yrd", "--department", "prd:tax"], "not among --chain"),
        (["--host", "0.0.0.0"], "not an address to reach the services at"),  # noqa: S104
        (["--database-url", "postgresql+psycopg://u@h/db"], "write {name} where"),
        (["--database-url", "postgresql+psycopg://cs:s3cretpw@db:5432/{name}"], "a password"),
        (["--port", "50052"], "is also a node's"),
    ]:
        out = init("--out", str(tmp_path / "new"), *args)
        assert out.returncode == 2, (args, out.stdout)
        assert says in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
        assert "s3cretpw" not in out.stderr + out.stdout
        assert not (tmp_path / "new").exists()

    # One department on two chains and PostgreSQL: each service its own database.
    url = "postgresql+psycopg://creditshare@db.example:5432/{name}"
    made = init(
        "--out", "pg", "--chain", "yrd", "--chain", "bth", "--department", "tax",
        "--department", "bth:court", "--database-url", url,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    coordinator = load_settings(CoordinatorSettings, tmp_path / "pg/coordinator/coordinator.toml")
    assert [(n.id, n.address) for n in coordinator.nodes] == [
        ("yrd-tax", "127.0.0.1:50051"),
        ("bth-tax", "127.0.0.1:50052"),
        ("bth-court", "127.0.0.1:50053"),
    ]
    assert coordinator.database_url == url.replace("{name}", "coordinator")
    node = load_settings(NodeSettings, tmp_path / "pg/nodes/bth-court/node.toml")
    assert node.database_url == url.replace("{name}", "node_bth_court")
    assert "createdb node_bth_court" in made.stdout
    assert "PGPASSFILE" in made.stdout
    # Settings files (database URLs) and private keys are the owner's alone; nothing is
    # writable by others.
    files = [p for p in (tmp_path / "pg").rglob("*") if p.is_file()]
    secret = [p for p in files if p.suffix == ".toml" or b"PRIVATE KEY" in p.read_bytes()]
    assert len([p for p in secret if p.suffix == ".toml"]) == 1 + 3
    assert {p: oct(stat.S_IMODE(p.stat().st_mode)) for p in secret} == {
        p: oct(0o600) for p in secret
    }
    assert [p for p in files if p.stat().st_mode & 0o022] == []
    # Every creditshare command its README.md lists exists and parses.
    readme = tmp_path / "pg" / "README.md"
    commands = [
        (invocation, command_environment(words))
        for block in markdown_shell_blocks(readme)
        for words in shell_commands(block)
        if (invocation := creditshare_invocations(words)) is not None
    ]
    assert len(commands) >= 10
    assert [p for args, env in commands if (p := cli_problem(args, str(readme), env))] == []
    # A regulator's step, with its own Paillier key file (never the bank's default path).
    assert "--role regulator" in readme.read_text()
    assert "stats query" in readme.read_text()
    assert "--key-file regulator/paillier-key.json --department tax" in readme.read_text()
    # No API key on a command line (every local user sees those): in the environment.
    assert not re.search(r"--api-key \S", readme.read_text())
    assert sum("CREDITSHARE_API_KEY" in env for _, env in commands) >= 3
    # --force replaces the earlier run's files (new keys), keeping nothing of it; its
    # settings name databases on a server, which may hold a ledger: only with
    # --discard-databases, and they are named (without dropping them).
    ca_key = (tmp_path / "pg/pki/yrd/ca/ca.key").read_bytes()
    refused = init("--out", "pg", "--chain", "yrd", "--department", "tax", "--force")
    assert refused.returncode == 2
    assert "db.example:5432/node_bth_court (on its server)" in refused.stderr, refused.stderr
    assert (tmp_path / "pg/pki/yrd/ca/ca.key").read_bytes() == ca_key
    again = init(
        "--out", "pg", "--chain", "yrd", "--department", "tax", "--force", "--discard-databases"
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "removing" in again.stdout and "  nodes/bth-court/node.toml" in again.stdout
    assert (tmp_path / "pg/pki/yrd/ca/ca.key").read_bytes() != ca_key
    assert not (tmp_path / "pg/nodes/bth-court").exists()


def test_chain_init_force_replaces_only_what_chain_init_wrote(tmp_path: Path) -> None:
    """--force never deletes a file chain init did not write, nor a chain's databases
    without --discard-databases; it lists what it removes."""

    def init(out: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(tmp_path, "chain", "init", "--out", out, "--chain", "yrd",
                       "--department", "tax", *args)  # fmt: skip

    # A folder no chain init made: its nodes/ and coordinator/ are not ours to delete.
    other = tmp_path / "other"
    for name in ("nodes/important/file", "coordinator/coordinator.db"):
        (other / name).parent.mkdir(parents=True)
        (other / name).write_text("keep me", encoding="utf-8")
    refused = init("other", "--force", "--discard-databases")
    assert refused.returncode == 2
    assert "no `creditshare chain init` made it (it has no .creditshare-chain)" in refused.stderr
    assert (other / "nodes/important/file").read_text() == "keep me"
    assert (other / "coordinator/coordinator.db").read_text() == "keep me"

    # A chain whose services ran: their SQLite files need --discard-databases.
    made = init("chain")
    assert made.returncode == 0, made.stderr
    chain = tmp_path / "chain"
    written = (chain / ".creditshare-chain").read_text().splitlines()
    assert "nodes/yrd-tax/node.toml" in written and "README.md" in written
    (chain / "nodes/yrd-tax/node.db").write_bytes(b"records")
    (chain / "coordinator/coordinator.db-wal").write_bytes(b"ledger")
    (chain / "logs").mkdir()
    (chain / "logs/coordinator.log").write_text("mine", encoding="utf-8")
    refused = init("chain", "--force")
    assert refused.returncode == 2
    assert "nodes/yrd-tax/node.db" in refused.stderr
    assert "coordinator/coordinator.db-wal" in refused.stderr
    assert "--discard-databases" in refused.stderr
    assert (chain / "nodes/yrd-tax/node.db").read_bytes() == b"records"

    # A file of someone else's among chain init's: refused even with --discard-databases.
    (chain / "nodes/yrd-tax/notes.txt").write_text("keep me", encoding="utf-8")
    refused = init("chain", "--force", "--discard-databases")
    assert refused.returncode == 2
    assert "did not write (nodes/yrd-tax/notes.txt)" in refused.stderr
    assert (chain / "nodes/yrd-tax/node.db").exists()
    (chain / "nodes/yrd-tax/notes.txt").unlink()

    # Both flags: what goes is listed first; what chain init did not make outside its
    # folders stays.
    log_key = (chain / "coordinator/log-signing-key.pem").read_bytes()
    again = init("chain", "--force", "--discard-databases")
    assert again.returncode == 0, again.stderr
    listed = again.stdout[again.stdout.index("removing") :]
    for name in ("nodes/yrd-tax/node.db", "coordinator/coordinator.db-wal",
                 "coordinator/log-signing-key.pem", "README.md"):  # fmt: skip
        assert f"  {name}\n" in listed, listed
    assert not (chain / "nodes/yrd-tax/node.db").exists()
    assert (chain / "coordinator/log-signing-key.pem").read_bytes() != log_key
    assert (chain / "logs/coordinator.log").read_text() == "mine"
    assert (chain / ".creditshare-chain").is_file()


def test_chain_init_with_postgresql_gives_each_service_a_working_database(tmp_path: Path) -> None:
    """--database-url on a real PostgreSQL server: the databases README.md says to create,
    created, are where each service's settings point (an import, the operator's bootstrap
    and the schema revisions land in each)."""
    admin_url = postgres_admin_url()
    prefix = f"cs_test_{uuid.uuid4().hex[:12]}_"
    server = make_url(admin_url).set(database=prefix + "NAME").render_as_string(False)
    template = server.replace("NAME", "{name}")
    made = run_cli(
        tmp_path, "chain", "init", "--out", "pg", "--chain", "yrd", "--department", "tax",
        "--department", "court", "--database-url", template,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    names = re.findall(r"^createdb (\S+)$", made.stdout, re.MULTILINE)
    assert names == ["coordinator", "node_yrd_tax", "node_yrd_court"]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'CREATE DATABASE "{prefix}{name}"'))
        generate(60, 7, tmp_path / "data")
        for department in ("tax", "court"):
            config = f"pg/nodes/yrd-{department}/node.toml"
            imported = run_cli(
                tmp_path, "node", "import", "--config", config, f"data/yrd/{department}.csv"
            )
            assert imported.returncode == 0, imported.stderr
            assert run_cli(tmp_path, "db", "current", "node", "--config", config).returncode == 0
        config = "pg/coordinator/coordinator.toml"
        bootstrap = run_cli(tmp_path, "admin", "bootstrap", "--config", config)
        assert bootstrap.returncode == 0, bootstrap.stderr
        assert bootstrap.stdout.strip().splitlines()[-1].startswith("cs_")
        assert run_cli(tmp_path, "db", "current", "coordinator", "--config", config).returncode == 0
        with admin.connect() as conn:
            databases = conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": prefix + "%"}
            ).scalars()
            assert sorted(databases) == sorted(prefix + n for n in names)
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{prefix}{name}" WITH (FORCE)'))
        admin.dispose()
