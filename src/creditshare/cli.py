"""One command-line entry point: ``creditshare ...``."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from creditshare._settings import load_settings
from creditshare.errors import CreditShareError

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Privacy-preserving credit-information sharing.",
)
node_app = typer.Typer(no_args_is_help=True, help="Run or load a department's data node.")
coordinator_app = typer.Typer(no_args_is_help=True, help="Run the coordinator.")
app.add_typer(node_app, name="node")
app.add_typer(coordinator_app, name="coordinator")

console = Console()

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="TOML settings file")]


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


@app.command()
def synth(
    enterprises: Annotated[int, typer.Option(min=1, max=1_000_000)] = 1000,
    seed: Annotated[int, typer.Option()] = 1,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("synth-data"),
) -> None:
    """Generate deterministic synthetic department data for the three chains."""
    from creditshare.synth import generate

    manifest = generate(enterprises, seed, out)
    for name, rows in sorted(manifest.files.items()):
        console.print(f"{rows:>8}  {out / name}")
    console.print(f"{len(manifest.cross_chain)} enterprises hold records in more than one chain")


@node_app.command("serve")
def node_serve(config: ConfigOption) -> None:
    """Serve the node's gRPC API until SIGTERM."""
    from creditshare.node import NodeSettings, serve

    _logging()
    asyncio.run(serve(load_settings(NodeSettings, config)))


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


@coordinator_app.command("serve")
def coordinator_serve(config: ConfigOption) -> None:
    """Serve the coordinator's HTTP API."""
    from creditshare.coordinator import CoordinatorSettings, serve

    _logging()
    serve(load_settings(CoordinatorSettings, config))


KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="Paillier key file (default: $CREDITSHARE_KEY_FILE or "
        "~/.config/creditshare/paillier-key.json); created on first use",
    ),
]


@app.command()
def keygen(key_file: KeyFileOption = None, bits: Annotated[int, typer.Option()] = 2048) -> None:
    """Generate the requester's Paillier key pair locally (the private key never leaves)."""
    from creditshare.client import default_key_path, load_or_create_key

    path = key_file or default_key_path()
    existed = path.exists()
    key = load_or_create_key(path, bits)
    state = "existing" if existed else "new"
    console.print(f"{state} {key.public_key.bits}-bit key {key.public_key.fingerprint()} at {path}")


@app.command()
def query(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    uscc: Annotated[str, typer.Option(help="enterprise's unified social credit code")],
    model: Annotated[str, typer.Option(help="scoring model id")] = "sme-scorecard-v1",
    chain: Annotated[list[str] | None, typer.Option(help="limit to a chain (repeatable)")] = None,
    key_file: KeyFileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Ask for an enterprise's credit profile and decrypt it locally."""
    from creditshare._render import print_profile
    from creditshare.client import CreditShareClient, load_or_create_key

    key = load_or_create_key(key_file)
    with CreditShareClient(coordinator, key) as client:
        profile = client.query(uscc, model, chain or None)
    if as_json:
        doc = {
            "uscc": profile.uscc,
            "model_id": profile.model_id,
            "score": profile.score,
            "probability_of_default": profile.probability_of_default,
            "linear_score": profile.linear_score,
            "coverage": {"answered": profile.answered, "failed": profile.failed},
            "indicators": [
                {
                    "node": i.node,
                    "chain": i.chain,
                    "department": i.department,
                    "name": i.name,
                    "value": i.value,
                    "label": i.label,
                }
                for i in profile.indicators
            ],
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print_profile(console, profile)


@app.command()
def demo(
    enterprises: Annotated[int, typer.Option(min=50, max=100_000)] = 300,
    seed: Annotated[int, typer.Option()] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    verify: Annotated[
        bool, typer.Option(help="recompute each score in plaintext and compare")
    ] = False,
    work_dir: Annotated[
        Path | None, typer.Option(help="keep files here instead of a temp dir")
    ] = None,
) -> None:
    """Run a whole federation on loopback and query it as a bank would."""
    from creditshare._render import print_profile
    from creditshare.demo import run_demo

    progress = None if as_json else (lambda message: console.print(f"[dim]» {message}[/]"))
    result = run_demo(enterprises, seed, verify=verify, work_dir=work_dir, on_progress=progress)
    if as_json:
        print(json.dumps(result.to_json(verify), ensure_ascii=False, indent=2))
    else:
        for item in result.queries:
            print_profile(console, item.profile, f"{item.label}: {item.name}")
            if item.verification is not None:
                mark = "[green]verified[/]" if item.verification.ok else "[red]MISMATCH[/]"
                console.print(
                    f"plaintext recomputation: {mark} "
                    f"(expected linear score {item.verification.expected_linear:.6f}, "
                    f"decrypted {item.profile.linear_score:.6f})"
                )
        if verify:
            console.rule("[green]all queries verified" if result.verified else "[red]FAILED")
    if verify and not result.verified:
        raise typer.Exit(code=1)


def main() -> None:
    try:
        app()
    except CreditShareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
