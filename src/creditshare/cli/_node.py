"""``creditshare node ...``: run or load a department's data node."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from creditshare._logging import configure_logging
from creditshare._settings import load_settings
from creditshare.cli._common import ConfigOption, console

__all__ = ["node_app"]

node_app = typer.Typer(no_args_is_help=True, help="Run or load a department's data node.")


@node_app.command("serve")
def node_serve(config: ConfigOption) -> None:
    """Serve the node's gRPC API until SIGTERM."""
    from creditshare.node import NodeSettings, serve

    settings = load_settings(NodeSettings, config)
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


@node_app.command("import")
def node_import(
    config: ConfigOption,
    files: Annotated[list[Path], typer.Argument(help="CSV files, imported in one transaction")],
) -> None:
    """Import department CSV files: all rows land, or none (the error says file and line)."""
    from creditshare.node import NodeSettings, import_into_node

    summary = import_into_node(load_settings(NodeSettings, config), files)
    console.print(
        f"imported {summary.rows} records from {len(summary.files)} file(s) "
        f"(sha256 {summary.sha256[:16]}…)"
    )


@node_app.command("refusals")
def node_refusals(config: ConfigOption, limit: Annotated[int, typer.Option(min=1)] = 50) -> None:
    """Requests this node refused, newest first: forged or altered consents, swapped keys,
    revoked credentials, replays, a stale revocation list. Each is an attempt worth a look."""
    from creditshare.node import NodeSettings, refusal_log_entries

    rows = refusal_log_entries(load_settings(NodeSettings, config), limit)
    if not rows:
        console.print("no refused requests")
    for row in rows:
        console.print(
            f"{row.refused_at:%Y-%m-%d %H:%M:%S}  {row.rpc:<13} {row.status:<19} "
            f"{row.request_id or '-'}  {row.reason}",
            markup=False,
        )


@node_app.command("access-log")
def node_access_log(config: ConfigOption, limit: Annotated[int, typer.Option(min=1)] = 50) -> None:
    """What this node answered, newest first (ledger index, requester, purpose, consent)."""
    from creditshare.node import NodeSettings, access_log_entries

    for row in access_log_entries(load_settings(NodeSettings, config), limit):
        console.print(
            f"{row.leaf_index:>8}  {row.answered_at:%Y-%m-%d %H:%M:%S}  {row.uscc}  "
            f"{row.requester}  {row.purpose}  consent {row.consent_id}"
        )
