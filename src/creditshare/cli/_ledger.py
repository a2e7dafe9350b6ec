"""``creditshare ledger ...``: audit the verifiable query ledger."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from creditshare._settings import load_settings
from creditshare.cli._common import ConfigOption, console

__all__ = ["ledger_app"]

ledger_app = typer.Typer(no_args_is_help=True, help="Audit the verifiable query ledger.")


@ledger_app.command("verify")
def ledger_verify(
    config: ConfigOption,
    uscc: Annotated[str | None, typer.Option(help="only this enterprise's entries")] = None,
) -> None:
    """Recompute every leaf hash and root from the database and check every signed head."""
    from creditshare.coordinator import CoordinatorSettings
    from creditshare.coordinator._admin import audit_ledger

    report = audit_ledger(load_settings(CoordinatorSettings, config), uscc)
    console.print(f"checked {report.leaves_checked} entries and {report.heads_checked} tree heads")
    for problem in report.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    if not report.ok:
        raise typer.Exit(code=1)
    console.print("[green]ledger verified[/]")
