"""Printing credit profiles for people (rich tables) and programs (JSON)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from creditshare.client import CreditProfile
from creditshare.departments import PRESENCE_INDICATOR

__all__ = ["print_profile"]


def print_profile(console: Console, profile: CreditProfile, title: str = "") -> None:
    heading = title or profile.uscc
    console.rule(f"[bold]{heading}")
    console.print(
        f"USCC [bold]{profile.uscc}[/]  model {profile.model_id}  "
        f"score [bold]{profile.score}[/]  probability of default "
        f"[bold]{profile.probability_of_default:.2%}[/]"
    )
    if not profile.nodes_with_records:
        console.print(
            "[yellow]No node holds a record for this enterprise; "
            "the score is the model's baseline.[/]"
        )
    else:
        chains = ", ".join(profile.chains_with_records)
        console.print(
            f"records held by {len(profile.nodes_with_records)} node(s) on chain(s): {chains}"
        )
        table = Table(show_header=True, header_style="bold")
        for column in ("chain", "department", "indicator", "value"):
            table.add_column(column)
        for item in profile.indicators:
            if item.name == PRESENCE_INDICATOR:
                continue
            value = item.label if item.label is not None else f"{item.value:g}"
            table.add_row(item.chain, item.department, item.description or item.name, value)
        console.print(table)
    console.print(f"coverage: {len(profile.answered)} node(s) answered", end="")
    if profile.failed:
        failed = ", ".join(f"{f['node']} ({f['reason']})" for f in profile.failed)
        console.print(f"; [red]failed: {failed}[/]")
    else:
        console.print("; none failed")
