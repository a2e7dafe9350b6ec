"""``creditshare pki ...``: chain CAs and mTLS certificates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from creditshare.cli._common import console

__all__ = ["pki_app"]

pki_app = typer.Typer(no_args_is_help=True, help="Chain CAs and mTLS certificates.")


@pki_app.command("init")
def pki_init(
    chain: Annotated[str, typer.Option(help="yrd, prd or bth")],
    out: Annotated[Path, typer.Option(help="folder for ca.crt and ca.key")],
) -> None:
    """Create a chain's certificate authority."""
    from creditshare.pki import init_ca

    files = init_ca(chain, out)
    console.print(f"CA for chain {chain}: {files.cert} (key {files.key}, mode 0600)")


@pki_app.command("issue")
def pki_issue(
    ca: Annotated[Path, typer.Option("--ca-dir", help="the chain CA's folder")],
    name: Annotated[str, typer.Option(help="node id or coordinator name")],
    role: Annotated[str, typer.Option(help="node or coordinator")],
    out: Annotated[Path, typer.Option(help="output folder")],
    host: Annotated[list[str] | None, typer.Option(help="DNS name or IP (repeatable)")] = None,
) -> None:
    """Issue a node (server) or coordinator (client) certificate from a chain CA."""
    from creditshare.errors import InvalidInputError
    from creditshare.pki import issue

    if role not in ("node", "coordinator"):
        raise InvalidInputError("role must be node or coordinator")
    files = issue(ca, name, role, out, hosts=host or ("localhost", "127.0.0.1"))  # type: ignore[arg-type]
    console.print(f"{role} certificate {files.cert} (key {files.key}, CA {files.ca})")
