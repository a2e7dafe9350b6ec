"""``creditshare ledger ...``: audit the verifiable query ledger."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from creditshare._settings import load_settings
from creditshare.cli._common import ConfigOption, console

__all__ = ["ledger_app"]


class _Progress:
    """Prints "checked k of n entries" to stderr at most every couple of seconds."""

    def __init__(self, every_s: float = 2.0) -> None:
        self._every_s = every_s
        self._start = self._last = time.monotonic()

    def __call__(self, checked: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self._every_s and checked < total:
            return
        self._last = now
        rate = checked / max(now - self._start, 1e-9)
        share = 100.0 * checked / total if total else 100.0
        print(
            f"checked {checked:,} of {total:,} entries ({share:.1f}%, {rate:,.0f}/s)",
            file=sys.stderr,
            flush=True,
        )


ledger_app = typer.Typer(no_args_is_help=True, help="Audit the verifiable query ledger.")


@ledger_app.command("verify")
def ledger_verify(
    config: ConfigOption,
    uscc: Annotated[str | None, typer.Option(help="only this enterprise's entries")] = None,
) -> None:
    """Recompute every leaf hash, interior node and root from the database and check every
    signed head. Streams the log a page at a time (memory does not grow with it) and
    reports progress on stderr, so a ledger of millions of entries can be watched."""
    from creditshare.coordinator import CoordinatorSettings
    from creditshare.coordinator._admin import audit_ledger
    from creditshare.errors import LedgerIntegrityError

    settings = load_settings(CoordinatorSettings, config)
    try:
        report = audit_ledger(settings, uscc, _Progress())
    except LedgerIntegrityError as exc:  # a row so damaged the audit cannot read on
        print(f"PROBLEM: {exc}; the audit stopped there", file=sys.stderr)
        raise typer.Exit(code=1) from None
    console.print(f"checked {report.leaves_checked} entries and {report.heads_checked} tree heads")
    for problem in report.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    if not report.ok:
        raise typer.Exit(code=1)
    console.print("[green]ledger verified[/]")
