"""What every sub-app shares: the console, the option types that must read alike
everywhere, the values an option accepts, and how a list is printed.

Every command that lists things prints a table with headers, or with ``--json`` one
JSON document (an array, or an object) on stdout and nothing else there: a script
pipes it into ``jq`` without scraping. ``tests/unit/test_cli_lists.py`` fails for a
list command without ``--json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from creditshare.crypto import PrivateKey

__all__ = [
    "CHAINS",
    "JOB_STATUSES",
    "MODEL_TYPES",
    "PURPOSES",
    "ROLES",
    "ApiKeyOption",
    "ChainName",
    "ConfigOption",
    "CoordinatorOption",
    "IdentityOption",
    "JobStatus",
    "JsonOption",
    "KeyFileOption",
    "ModelType",
    "ParticipantIdOption",
    "PurposeName",
    "RoleName",
    "chain_values",
    "console",
    "paillier_key",
    "print_json",
    "print_table",
    "when",
]

console = Console()

#: The values options accept: typer lists a Literal's (an Enum's, for a repeatable
#: option) in ``--help`` and refuses anything else naming them. Kept equal to the enums
#: they mirror by tests/unit/test_cli_lists.py; here so ``--help`` imports nothing heavy.
RoleName = Literal["bank", "bureau", "department", "enterprise", "operator", "regulator"]
PurposeName = Literal["pre_loan_review", "post_loan_monitoring", "model_training"]
JobStatus = Literal["aligning", "training", "finished", "failed", "cancelled"]
ModelType = Literal["logistic", "gbdt"]


class ChainName(StrEnum):
    """A regional chain, as a repeatable option takes it (``--chain yrd --chain bth``)."""

    YRD = "yrd"
    PRD = "prd"
    BTH = "bth"


ROLES: tuple[str, ...] = get_args(RoleName)
PURPOSES: tuple[str, ...] = get_args(PurposeName)
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
MODEL_TYPES: tuple[str, ...] = get_args(ModelType)
CHAINS: tuple[str, ...] = tuple(c.value for c in ChainName)


def chain_values(chains: Sequence[ChainName] | None) -> list[str] | None:
    """The chains a repeatable ``--chain`` gave, as plain strings (None: not given)."""
    return [ChainName(c).value for c in chains] if chains else None


JsonOption = Annotated[
    bool,
    typer.Option("--json", help="print one JSON document instead of a table (nothing else)"),
]


def print_json(document: Any) -> None:
    """``document`` as JSON on stdout: the only thing a ``--json`` run prints there."""
    print(json.dumps(document, ensure_ascii=False, indent=2, default=str))


Row = TypeVar("Row")
#: Columns a table may take when stdout is not a terminal.
_PIPED_WIDTH = 200


def print_table(
    columns: Sequence[tuple[str, Callable[[Row], object]]],
    rows: Iterable[Row],
    *,
    empty: str = "nothing to list",
    title: str | None = None,
) -> None:
    """A table with a header row: one column per ``(header, value of a row)``; a value
    of None shows as "-". ``empty`` is printed instead of a table without rows."""
    table = Table(*(header for header, _ in columns), title=title)
    count = 0
    for row in rows:
        count += 1
        table.add_row(*(_cell(value(row)) for _, value in columns))
    if count == 0:
        console.print(empty, markup=False)
        return
    # Piped (not a terminal) rich would assume 80 columns and fold every cell; a file or
    # a pager reads better with a row per line.
    wide = console if console.is_terminal else Console(width=max(console.width, _PIPED_WIDTH))
    wide.print(table)


def when(value: object) -> str | None:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS`` (UTC as sent); None stays None."""
    if not isinstance(value, str) or not value:
        return None
    return value.replace("T", " ")[:19]


def _cell(value: object) -> Text:
    """A value as plain text (never read as rich markup: an error may hold brackets)."""
    if value is None or value == "":
        return Text("-")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, float):
        return Text(f"{value:.4g}")
    return Text(str(value))


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


def paillier_key(key_file: Path | None) -> PrivateKey:
    """The requester's Paillier key; when there is none at that path yet, a new one is
    made there and stderr says so (a mistyped ``--key-file`` must not pass unnoticed:
    the query or job then runs, and is recorded, under a key nobody meant to use)."""
    from creditshare.client import default_key_path, load_key, load_or_create_key

    path = key_file or default_key_path()
    if path.exists():
        return load_key(path)
    key = load_or_create_key(path)
    Console(stderr=True).print(
        f"no Paillier key at {path}: made a new {key.public_key.bits}-bit key there",
        markup=False,
        soft_wrap=True,
    )
    return key
