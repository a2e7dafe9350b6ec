"""Page text in Chinese and English, from ``messages/<room>.toml`` files.

Each file holds an ``[en]`` and a ``[zh]`` table with the same keys; a key is used in
templates as ``t("<room>.<key>")`` (``t("bank.query_title")``), so every role's slice
keeps its words in a file of its own. A missing key fails loudly in tests (see
``Catalog.check``) rather than showing a raw key to a loan officer.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from creditshare.errors import ConfigurationError

__all__ = ["LANGUAGES", "Catalog", "load_catalog"]

LANGUAGES = ("zh", "en")


@dataclass(frozen=True)
class Catalog:
    """Every message, by language then dotted key."""

    messages: dict[str, dict[str, str]]

    def text(self, language: str, key: str, **values: Any) -> str:
        """The message ``key`` in ``language`` with ``{name}`` fields filled; an unknown
        key shows itself (and ``check`` fails in tests), never an exception mid-page."""
        template = self.messages.get(language, {}).get(key)
        if template is None:
            template = self.messages["en"].get(key, key)
        return template.format(**values) if values else template

    def check(self) -> list[str]:
        """What is wrong with the catalogs: keys one language has and the other lacks."""
        problems = []
        zh, en = set(self.messages["zh"]), set(self.messages["en"])
        problems += [f"{key}: no Chinese text" for key in sorted(en - zh)]
        problems += [f"{key}: no English text" for key in sorted(zh - en)]
        return problems


def load_catalog() -> Catalog:
    """All ``messages/*.toml`` of the package, keys prefixed by the file's stem."""
    messages: dict[str, dict[str, str]] = {language: {} for language in LANGUAGES}
    folder = resources.files("creditshare.console") / "messages"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        room = entry.name.removesuffix(".toml")
        try:
            document = tomllib.loads(entry.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"console messages {entry.name}: {exc}") from exc
        for language in LANGUAGES:
            for key, value in document.get(language, {}).items():
                messages[language][f"{room}.{key}"] = str(value)
    return Catalog(messages)
