"""What every sub-app shares: the console and the option types that must read alike everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = [
    "ApiKeyOption",
    "ConfigOption",
    "CoordinatorOption",
    "IdentityOption",
    "KeyFileOption",
    "ParticipantIdOption",
    "console",
]

console = Console()

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="TOML settings file")]

ParticipantIdOption = Annotated[str, typer.Option("--id", help="participant id")]
CoordinatorOption = Annotated[str, typer.Option(help="coordinator base URL")]

KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="Paillier key file (default: $CREDITSHARE_KEY_FILE or "
        "~/.config/creditshare/paillier-key.json); created on first use",
    ),
]


IdentityOption = Annotated[
    Path,
    typer.Option(
        "--identity",
        envvar="CREDITSHARE_IDENTITY",
        help="folder with your signing.key and the credential(s) (*.crt) the chain CA "
        "issued for it (`creditshare pki request`, then the operator's `pki sign`)",
    ),
]

ApiKeyOption = Annotated[
    str,
    typer.Option("--api-key", envvar="CREDITSHARE_API_KEY", help="participant API key"),
]
