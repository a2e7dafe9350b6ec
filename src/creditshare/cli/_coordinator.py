"""``creditshare coordinator ...``: the ledger signing key and serving the HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from creditshare._logging import configure_logging
from creditshare._settings import load_settings
from creditshare.cli._common import ConfigOption, console

__all__ = ["coordinator_app"]

coordinator_app = typer.Typer(no_args_is_help=True, help="Run the coordinator.")


@coordinator_app.command("init-key")
def coordinator_init_key(
    out: Annotated[Path, typer.Option(help="where to write the PEM key (mode 0600)")],
) -> None:
    """Create the Ed25519 key that signs ledger tree heads; prints the public half for nodes."""
    from creditshare.coordinator._admin import init_log_key

    key = init_log_key(out)
    console.print(f"log signing key {key.verify_key.key_id} written to {out}")
    console.print(f'nodes\' log_public_key = "{key.verify_key.to_text()}"')


@coordinator_app.command("public-key")
def coordinator_public_key(
    key_file: Annotated[Path, typer.Option(help="the ledger signing key (PEM)")],
) -> None:
    """Print the public half of the ledger signing key: every node's log_public_key."""
    from creditshare.crypto import SigningKey

    try:
        data = key_file.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {key_file}: {exc.strerror}") from None
    print(SigningKey.from_pem(data).verify_key.to_text())


@coordinator_app.command("serve")
def coordinator_serve(config: ConfigOption) -> None:
    """Serve the coordinator's HTTP API."""
    from creditshare.coordinator import CoordinatorSettings, serve

    settings = load_settings(CoordinatorSettings, config)
    configure_logging(settings.log_format, settings.log_level)
    serve(settings)
