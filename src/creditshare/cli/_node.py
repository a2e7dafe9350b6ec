"""``creditshare node ...``: run or load a department's data node."""

from __future__ import annotations

import asyncio
import json
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
    files: Annotated[
        list[Path], typer.Argument(help="CSV files: together, the department's complete records")
    ],
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty",
            help="accept a snapshot that removes every current record (refused otherwise)",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Import a snapshot: the files are the department's complete current records.

    Records are added, changed or removed to match them, in one transaction: all of it
    lands, or nothing (a bad row is named by file and line). The values a changed or
    removed record had are kept for change detection.
    """
    from creditshare.node import NodeSettings, import_into_node

    summary = import_into_node(load_settings(NodeSettings, config), files, allow_empty=allow_empty)
    if as_json:
        print(json.dumps(summary.to_json(), indent=2))
        return
    console.print(
        f"snapshot {summary.batch_id}: {summary.rows} records from {len(summary.files)} "
        f"file(s) (sha256 {summary.sha256[:16]}…)\n"
        f"{summary.added} added, {summary.changed} changed, {summary.removed} removed, "
        f"{summary.unchanged} unchanged",
        markup=False,
        soft_wrap=True,
    )


@node_app.command("imports")
def node_imports(
    config: ConfigOption,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False,
) -> None:
    """The snapshots imported into this node, newest first, with what each changed."""
    from creditshare.node import NodeSettings, import_history

    batches = import_history(load_settings(NodeSettings, config), limit)
    if as_json:
        doc = [
            {
                "snapshot": b.id,
                "imported_at": b.imported_at.isoformat(),
                "files": b.files.split(";"),
                "sha256": b.sha256,
                "rows": b.rows,
                "added": b.added,
                "changed": b.changed,
                "removed": b.removed,
                "unchanged": b.unchanged,
            }
            for b in batches
        ]
        print(json.dumps(doc, indent=2))
        return
    if not batches:
        console.print("no snapshots imported")
    for b in batches:
        if b.added is None:
            counts = "counts not recorded (imported before snapshots)"
        else:
            counts = (
                f"{b.added} added, {b.changed} changed, {b.removed} removed, "
                f"{b.unchanged} unchanged"
            )
        console.print(
            f"{b.id:>6}  {b.imported_at:%Y-%m-%d %H:%M:%S}  {b.rows:>9} records  {counts}  "
            f"sha256 {b.sha256[:16]}  {b.files}",
            markup=False,
            soft_wrap=True,  # one line per snapshot, whatever the terminal's width
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


@node_app.command("witness-key")
def node_witness_key(
    out: Annotated[Path, typer.Option(help="where to keep the witness key (PEM, mode 0600)")],
    node_id: Annotated[str, typer.Option(help="this node's id: the witness's name")],
) -> None:
    """Make this node's witness key (on the node itself) and print its vkey for clients.

    Set the node's ``witness_key_file`` to OUT; give the printed vkey to banks and
    enterprises (``--witness``). An existing key is kept, never overwritten: its vkey is
    printed again.
    """
    from creditshare.ledger import WitnessKey
    from creditshare.node import generate_witness_key, load_witness_key

    if out.exists():
        key = load_witness_key(out)
        console.print(f"{out} exists (kept); its vkey:")
    else:
        key = generate_witness_key(out)
        console.print(f"witness key written to {out} (mode 0600); its vkey:")
    print(WitnessKey(node_id, key.verify_key.raw).vkey())
