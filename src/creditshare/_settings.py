"""Loading a service's typed settings from a TOML file plus the environment.

Each service has one pydantic-settings class; this module only decides where
values come from: the environment wins over the file, so an operator can
override one value (a database URL, a listen address) without editing the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from creditshare.errors import ConfigurationError

__all__ = ["EnvFirstSettings", "load_settings"]

S = TypeVar("S", bound=BaseSettings)


class EnvFirstSettings(BaseSettings):
    """Base for service settings: environment variables override file values."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings, file_secret_settings


def load_settings(cls: type[S], path: Path | None = None, **overrides: Any) -> S:
    """Build ``cls`` from a TOML file (if given) and the environment, or explain why not."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"configuration file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc
    data.update(overrides)
    try:
        return cls(**data)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        problems = "; ".join(
            ": ".join(
                filter(
                    None,
                    [
                        ".".join(str(p) for p in err["loc"]),
                        # A validator's own message, without pydantic's "Value error, ".
                        err["msg"].removeprefix("Value error, "),
                    ],
                )
            )
            for err in exc.errors()
        )
        raise ConfigurationError(f"{where}invalid configuration: {problems}") from exc
