"""``creditshare db ...``: database schemas (Alembic migrations) of either service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from creditshare._settings import load_settings
from creditshare.cli._common import console

__all__ = ["db_app"]

db_app = typer.Typer(no_args_is_help=True, help="Database schemas (Alembic migrations).")


ServiceArgument = Annotated[str, typer.Argument(help="whose database: coordinator or node")]
OptionalConfig = Annotated[
    Path | None, typer.Option("--config", "-c", help="the service's TOML settings file")
]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="database URL (instead of the one --config and the env give)"),
]


def _database_engine(service: str, config: Path | None, url: str | None) -> Any:
    """An engine on the service's database, without touching its schema."""
    from creditshare import migrations
    from creditshare._database import open_engine

    if service not in migrations.SERVICES:
        raise typer.BadParameter(
            f"choose one of {', '.join(migrations.SERVICES)}", param_hint="SERVICE"
        )
    if url is None:
        if config is None:
            raise typer.BadParameter("give --config (or --url)", param_hint="--config")
        if service == "coordinator":
            from creditshare.coordinator import CoordinatorSettings

            url = load_settings(CoordinatorSettings, config).database_url
        else:
            from creditshare.node import NodeSettings

            url = load_settings(NodeSettings, config).database_url
    return open_engine(url)


@db_app.command("upgrade")
def db_upgrade(
    service: ServiceArgument,
    config: OptionalConfig = None,
    url: UrlOption = None,
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Bring a database's schema to the newest revision (safe with replicas running)."""
    from creditshare import migrations

    engine = _database_engine(service, config, url)
    try:
        before = migrations.current(engine, service)
        after = migrations.upgrade(engine, service, revision)
    finally:
        engine.dispose()
    console.print(f"{service} database: {before or 'empty'} -> {after}")


@db_app.command("current")
def db_current(
    service: ServiceArgument, config: OptionalConfig = None, url: UrlOption = None
) -> None:
    """Print the schema revision; exit 1 if it is behind the newest."""
    from creditshare import migrations

    engine = _database_engine(service, config, url)
    try:
        now = migrations.current(engine, service)
    finally:
        engine.dispose()
    newest = migrations.head(service)
    print(f"{service} database at {now or 'no revision'} (newest {newest})")
    if now != newest:
        raise typer.Exit(code=1)
