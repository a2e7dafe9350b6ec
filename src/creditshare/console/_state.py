"""What a console holds while it runs: its settings, words, sessions and SDK client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from creditshare.client import (
    CreditShareClient,
    Identity,
    load_alert_key,
    load_key,
)
from creditshare.console._auth import Sessions
from creditshare.console._i18n import Catalog, load_catalog
from creditshare.console._settings import ConsoleSettings
from creditshare.errors import ConfigurationError

__all__ = ["ConsoleState", "console_state", "open_client"]


@dataclass
class ConsoleState:
    settings: ConsoleSettings
    client: CreditShareClient | None
    catalog: Catalog = field(default_factory=load_catalog)
    sessions: Sessions = field(default_factory=Sessions)
    #: The participant id its identity's credentials name (None: no identity configured).
    participant: str | None = None
    #: The role's menu: (path, message key) pairs.
    navigation: list[tuple[str, str]] = field(default_factory=list)
    #: What a role's pages keep between requests (e.g. the bureau's running jobs).
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def cookie(self) -> str:
        """This console's session cookie name (its own: see ``_auth``)."""
        return self.sessions.cookie

    @property
    def sdk(self) -> CreditShareClient:
        """The participant's SDK client (every role but a department's has one)."""
        if self.client is None:
            raise ConfigurationError("this console has no coordinator connection")
        return self.client


def open_client(settings: ConsoleSettings) -> CreditShareClient | None:
    """The SDK client the settings describe, every key loaded now: a console with a
    missing or unreadable key file fails at start, naming it, not on the first page."""
    if settings.coordinator_url is None:
        return None
    try:
        identity = Identity.load(settings.identity) if settings.identity else None
        private_key = load_key(settings.key_file) if settings.key_file else None
        alert_key = load_alert_key(settings.alert_key_file) if settings.alert_key_file else None
    except FileNotFoundError as exc:
        raise ConfigurationError(f"console: {exc.filename}: no such file") from exc
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    return CreditShareClient(
        settings.coordinator_url,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        private_key=private_key,
        identity=identity,
        head_state=settings.work_dir / "heads.json",
        alert_key=alert_key,
    )


def console_state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state
