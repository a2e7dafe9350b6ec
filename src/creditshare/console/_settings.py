"""Typed settings of a participant's console (file + ``CREDITSHARE_CONSOLE_*`` environment).

One console serves one participant in one role, on that participant's own machine: its
API key, signing identity and Paillier key are read here and never leave the process
(the browser gets pages, never keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from creditshare._settings import EnvFirstSettings
from creditshare.client import WitnessPolicy
from creditshare.crypto import VerifyKey
from creditshare.errors import CreditShareError

__all__ = ["ROLES", "ConsoleSettings", "Language", "Role"]

Role = Literal["bank", "enterprise", "bureau", "department", "operator", "regulator"]
Language = Literal["zh", "en"]
ROLES: tuple[Role, ...] = (
    "bank",
    "enterprise",
    "bureau",
    "department",
    "operator",
    "regulator",
)

#: What each role needs to work, checked at start so a console never half-works.
_NEEDS: dict[str, tuple[str, ...]] = {
    "bank": ("coordinator_url", "api_key", "identity", "key_file"),
    "enterprise": ("coordinator_url", "api_key", "identity", "log_key"),
    "bureau": ("coordinator_url", "api_key", "identity", "key_file"),
    "department": ("node_config",),
    "operator": ("coordinator_url", "api_key"),
    # A regulator signs each cohort query and decrypts the summed answer here.
    "regulator": ("coordinator_url", "api_key", "identity", "key_file"),
}


class ConsoleSettings(EnvFirstSettings):
    model_config = SettingsConfigDict(env_prefix="CREDITSHARE_CONSOLE_", extra="forbid")

    role: Role = Field(description="whose console this is")
    coordinator_url: str | None = Field(
        default=None, description="the coordinator's base URL (every role but department)"
    )
    api_key: SecretStr | None = Field(default=None, description="the participant's API key")
    identity: Path | None = Field(
        default=None,
        description="folder with the participant's signing.key and CA credentials (bank, "
        "bureau, enterprise, regulator: queries, jobs, consents and cohort queries are "
        "signed here)",
    )
    key_file: Path | None = Field(
        default=None,
        description="the bank's, bureau's or regulator's Paillier key file (decrypts here)",
    )
    alert_key_file: Path | None = Field(
        default=None, description="a bank's X25519 alert key file (opens monitoring alerts)"
    )
    log_key: str | None = Field(
        default=None,
        description="the ledger's Ed25519 public key, base64, from a channel other than "
        "the coordinator (an enterprise's access log is verified against it; required for "
        "an enterprise: a key fetched from the coordinator would prove nothing about it)",
    )
    witnesses_file: Path | None = Field(
        default=None,
        description="an enterprise's witness (data node) vkeys, one a line, as for "
        "`creditshare enterprise queries --witnesses-file`: the access log must lie under "
        "a tree head a quorum of them cosigned (without it: unwitnessed, and said so)",
    )
    quorum: int | None = Field(
        default=None,
        ge=1,
        description="distinct witnesses that must have cosigned a head (default: all in "
        "witnesses_file)",
    )
    node_config: Path | None = Field(
        default=None,
        description="a department's node settings file (its console reads the node's own "
        "database: imports, access log, refusals, health)",
    )
    privacy_allowance: float = Field(
        default=10.0,
        gt=0,
        description="a regulator's ε allowance per month at each node (the nodes' "
        "stats_epsilon_per_period, as the chain operator publishes it; 10 by default, as "
        "theirs): the statistics page shows what remains of it (the nodes enforce it)",
    )
    host: str = Field(default="127.0.0.1", description="listen address (keep it on loopback)")
    port: int = Field(default=8600, ge=0, le=65535, description="listen port (0: any free)")
    language: Language = Field(default="zh", description="default page language")
    session_idle_minutes: int = Field(
        default=480,
        ge=1,
        le=1440,
        description="a login session ends after this long without a request (and 24 h "
        "after login in any case)",
    )
    work_dir: Path = Field(
        default=Path("console-data"),
        description="where the console keeps what it must remember (tree heads it accepted, "
        "a bank's alert inbox, uploaded label files of training jobs)",
    )

    @model_validator(mode="after")
    def _complete(self) -> ConsoleSettings:
        missing = [name for name in _NEEDS[self.role] if getattr(self, name) is None]
        if missing:
            article = "an" if self.role[0] in "aeiou" else "a"
            raise ValueError(f"{article} {self.role} console needs {', '.join(missing)}")
        if self.log_key is not None:
            try:
                VerifyKey.from_text(self.log_key)
            except CreditShareError as exc:
                raise ValueError(f"log_key: {exc}") from None
        if self.quorum is not None and self.witnesses_file is None:
            raise ValueError("quorum needs witnesses_file")
        try:
            self.witness_policy()  # a bad witnesses file stops the start, naming the line
        except CreditShareError as exc:
            raise ValueError(f"witnesses_file: {exc}") from None
        return self

    def witness_policy(self) -> WitnessPolicy | None:
        """The witnesses ``witnesses_file`` names and the quorum of them a head needs
        (default: all of them); None without a witnesses file."""
        if self.witnesses_file is None:
            return None
        policy = WitnessPolicy.from_file(self.witnesses_file, 1)
        return WitnessPolicy(policy.witnesses, self.quorum or len(policy.witnesses))
