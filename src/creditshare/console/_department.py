"""The department operator's pages: its node's imports, access log, refusals and health.

A department's console runs beside its data node and reads the node's own database,
read-only, the way ``creditshare node imports|access-log|refusals`` do (a database not
at the newest schema is refused with what to run, never migrated behind the running
node's back). It talks to no coordinator: what the department sees here is its own
record of what its node holds, answered and refused.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from creditshare import migrations
from creditshare._settings import load_settings
from creditshare.console._format import utc_time
from creditshare.console._render import page
from creditshare.console._state import console_state
from creditshare.errors import ConfigurationError
from creditshare.node import (
    SERVICE_NAME,
    NodeSettings,
    RecordStore,
    access_log_entries,
    import_history,
    make_read_only_engine,
    refusal_log_entries,
)

__all__ = ["NAVIGATION", "router"]

router = APIRouter()

#: The role's menu: (path, message key), in order; the first is its landing page.
NAVIGATION: list[tuple[str, str]] = [
    ("/department/imports", "department.nav_imports"),
    ("/department/access-log", "department.nav_access_log"),
    ("/department/refusals", "department.nav_refusals"),
    ("/department/health", "department.nav_health"),
]

#: How many USCCs of each kind of change the imports page lists (the rest are counted).
CHANGES_SHOWN = 20
#: How long the health page waits for the node's port.
PROBE_TIMEOUT_SECONDS = 3.0
Limit = Query(default=50, ge=1, le=1000)


def _node_settings(request: Request) -> NodeSettings:
    """The node's settings, read from ``node_config`` on every page (an operator who
    fixes the file sees the fix on reload); ConfigurationError says what is wrong."""
    path = console_state(request).settings.node_config
    if path is None:  # the settings refuse a department console without one
        raise ConfigurationError("this console has no node_config")
    return load_settings(NodeSettings, path)


def _problem(exc: Exception) -> str:
    """One line for the page: our own errors say what to do; a database error's first
    line is enough (its SQL and parameters are not for the page)."""
    if isinstance(exc, ConfigurationError):
        return str(exc)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first[:300]}"


@router.get("/department/imports", response_class=HTMLResponse)
def imports(request: Request, limit: int = Limit) -> HTMLResponse:
    """Snapshot history, newest first, and what the latest snapshot changed."""
    problem, batches, changes, held = None, [], None, None
    try:
        settings = _node_settings(request)
        batches = import_history(settings, limit)  # refuses an unmigrated database
        engine = make_read_only_engine(settings.database_url)
        try:
            store = RecordStore(engine)
            changes, held = store.latest_changes(limit=CHANGES_SHOWN), store.count()
        finally:
            engine.dispose()
    except (ConfigurationError, SQLAlchemyError) as exc:
        problem = _problem(exc)
    rows = [
        {
            "id": b.id,
            "imported_at": utc_time(b.imported_at),
            "rows": b.rows,
            "added": b.added,
            "changed": b.changed,
            "removed": b.removed,
            "unchanged": b.unchanged,
            "sha256": b.sha256,
            "files": b.files.split(";"),
        }
        for b in batches
    ]
    latest = None
    if changes is not None:
        latest = {
            "snapshot": changes.batch_id,
            "kinds": [
                (kind, count, list(uscc))
                for kind, uscc, count in zip(
                    ("added", "changed", "removed"),
                    (changes.added, changes.changed, changes.removed),
                    changes.counts,
                    strict=True,
                )
            ],
        }
    return page(
        request,
        "department/imports.html",
        problem=problem,
        batches=rows,
        latest=latest,
        held=held,
        limit=limit,
    )


@router.get("/department/access-log", response_class=HTMLResponse)
def access_log(request: Request, limit: int = Limit) -> HTMLResponse:
    """What the node answered, newest first: ledger index, requester, purpose, consent."""
    problem, entries = None, []
    try:
        for row in access_log_entries(_node_settings(request), limit):
            # A tree model's second call under one receipt is kept at -1 - index.
            tree = row.leaf_index < 0
            entries.append(
                {
                    "index": -1 - row.leaf_index if tree else row.leaf_index,
                    "call": "TreeScore" if tree else "Score",
                    "answered_at": utc_time(row.answered_at),
                    "uscc": row.uscc,
                    "requester": row.requester,
                    "purpose": row.purpose,
                    "consent_id": row.consent_id,
                    "model_id": row.model_id,
                }
            )
    except (ConfigurationError, SQLAlchemyError) as exc:
        problem = _problem(exc)
    return page(
        request, "department/access_log.html", problem=problem, entries=entries, limit=limit
    )


@router.get("/department/refusals", response_class=HTMLResponse)
def refusals(request: Request, limit: int = Limit) -> HTMLResponse:
    """Requests the node refused: forged or altered consents, revoked credentials,
    replays, a stale revocation list. Each one is worth a look."""
    problem, entries = None, []
    try:
        entries = [
            {
                "refused_at": utc_time(row.refused_at),
                "rpc": row.rpc,
                "status": row.status,
                "request_id": row.request_id or "-",
                "reason": row.reason,
            }
            for row in refusal_log_entries(_node_settings(request), limit)
        ]
    except (ConfigurationError, SQLAlchemyError) as exc:
        problem = _problem(exc)
    return page(request, "department/refusals.html", problem=problem, entries=entries, limit=limit)


@dataclass(frozen=True)
class Check:
    """One line of the health page: what was checked, whether it passed, what was seen."""

    name: str
    ok: bool
    detail: str


@router.get("/department/health", response_class=HTMLResponse)
def health(request: Request) -> HTMLResponse:
    """The node's settings, its gRPC port answering, its database reachable and current."""
    try:
        settings = _node_settings(request)
    except ConfigurationError as exc:
        return page(request, "department/health.html", problem=_problem(exc), node=None)
    schema = settings.department_schema
    node = {
        "node_id": settings.node_id,
        "chain": settings.chain.value,
        "department": schema.id,
        "department_name": schema.display_name,
        "listen": settings.listen,
        "fields": [f.name for f in schema.fields],
        "indicators": [i.name for i in schema.indicators],
        "source": schema.source,
    }
    checks = [_probe_port(settings), _check_database(settings)]
    return page(request, "department/health.html", problem=None, node=node, checks=checks)


def _dial(listen: str) -> tuple[str, int]:
    """Where to reach a node that listens on ``listen`` from its own machine."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "*"):  # noqa: S104 - a wildcard listen is reached on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


#: A node's refusal of a client without a certificate, sent after the handshake verified it.
_CLIENT_CERTIFICATE_REQUIRED = frozenset({"TLSV13_ALERT_CERTIFICATE_REQUIRED"})


def _probe_port(settings: NodeSettings) -> Check:
    """Whether the node answers on its gRPC port.

    Without TLS: the standard gRPC health check (``node serve`` registers it). With TLS
    the node admits only clients its chain CA certified for client use, which the
    department's console is not (the node's own certificate is a server certificate);
    so the console checks what it can: a TLS 1.3 handshake with a server that presents
    the node's own certificate, signed by the chain CA (a handshake the node ends for
    want of a client certificate counts only if it ended after that verification).
    """
    try:
        host, port = _dial(settings.listen)
    except ValueError:
        return Check("port", False, f"listen {settings.listen!r} names no port")
    started = time.perf_counter()
    if settings.tls is None:
        try:
            with grpc.insecure_channel(f"{host}:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = stub.Check(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                    timeout=PROBE_TIMEOUT_SECONDS,
                )
        except grpc.RpcError as exc:
            return Check("port", False, f"gRPC health check: {exc.code().name}")
        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        state = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return Check("port", serving, f"gRPC health check: {state} ({_ms(started)})")
    tls = settings.tls
    try:
        context = ssl.create_default_context(cafile=str(tls.ca))
        context.check_hostname = False  # the node is dialled by its listen address
        # TLS 1.3 only: its certificate_required alert can come only after the client
        # verified the server (a TLS 1.2 handshake_failure may come before that).
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.set_alpn_protocols(["h2"])
        own = x509.load_pem_x509_certificate(tls.cert.read_bytes()).public_bytes(Encoding.DER)
        with (
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_SECONDS) as raw,
            context.wrap_socket(raw) as channel,
        ):
            presented = channel.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        return Check("port", False, f"TLS: the certificate on {host}:{port} fails: {exc}")
    except ssl.SSLError as exc:
        if exc.reason in _CLIENT_CERTIFICATE_REQUIRED:
            # TLS 1.3: the server's certificate and Finished were verified before this
            # client sent its (empty) certificate; the node then refused it, as it must.
            return Check(
                "port", True, f"TLS: the node verified, then: {exc.reason} ({_ms(started)})"
            )
        # Anything else (a plaintext listener's WRONG_VERSION_NUMBER, another protocol)
        # ended before the node's certificate was verified: nothing shows it is the node.
        return Check("port", False, f"TLS handshake with {host}:{port} failed: {exc.reason}")
    except (OSError, ValueError) as exc:
        return Check("port", False, f"{host}:{port}: {exc}")
    if presented != own:
        return Check("port", False, f"{host}:{port} presents another certificate than tls.cert")
    return Check("port", True, f"TLS: the node's own certificate ({_ms(started)})")


def _check_database(settings: NodeSettings) -> Check:
    """The database answers, at the newest schema revision; how many records it holds."""
    url = make_url(settings.database_url)
    file = url.database if url.get_backend_name() == "sqlite" else None
    if file not in (None, "", ":memory:") and not Path(str(file)).is_file():
        # Connecting would create an empty file there: a typo'd path is not a database.
        return Check("database", False, f"there is no node database at {file}")
    engine = None
    try:
        engine = make_read_only_engine(settings.database_url)
        revision, newest = migrations.current(engine, "node"), migrations.head("node")
        if revision != newest:
            return Check("database", False, f"at revision {revision}, not {newest}")
        held = RecordStore(engine).count()
    except (SQLAlchemyError, OSError) as exc:
        return Check("database", False, _problem(exc))
    finally:
        if engine is not None:
            engine.dispose()
    return Check("database", True, f"revision {revision}; {held} records")


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"
