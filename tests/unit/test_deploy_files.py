"""The deployment files, checked against the code they deploy.

Nothing in deploy/, node/Dockerfile or coordinator/Dockerfile can run here (no container
runtime, no cluster), so they are checked by construction:

* every ``creditshare`` command they run (Dockerfile CMD, compose commands, manifest args,
  shell scripts, the operator notes' and docs/*.md's shell blocks) exists in the Typer CLI
  and parses;
* every ``CREDITSHARE_*`` name is a settings field of the right class (nested fields
  through ``__``) or a variable the code reads;
* every settings file in deploy/ names only settings fields and loads with the real
  loader, with the environment the compose service or the pod gives it and with the very
  files the PKI step (deploy/scripts/init-chain.sh, run here for real) writes;
* ports, node addresses, certificate names, databases, probe paths, Secrets and
  ConfigMaps agree across the Dockerfiles, the compose file, HAProxy and the manifests;
* the settings tables of coordinator/README.md and node/README.md list exactly the
  settings fields, with their types, defaults and environment variables.

Every failure names the file and the name that is wrong. To print a README table from the
settings classes (meanings kept from the README):

    python tests/unit/test_deploy_files.py coordinator|node
"""

from __future__ import annotations

import enum
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from fastapi.testclient import TestClient
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from creditshare import cli
from creditshare._settings import load_settings
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import init_log_key
from creditshare.errors import ConfigurationError
from creditshare.node import NodeSettings
from creditshare.pki import certificate_info

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"
POSTGRES_INIT = DEPLOY / "postgres" / "init-databases.sh"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILES = {
    "coordinator": ROOT / "coordinator" / "Dockerfile",
    "node": ROOT / "node" / "Dockerfile",
}
READMES = {"coordinator": ROOT / "coordinator" / "README.md", "node": ROOT / "node" / "README.md"}
SETTINGS: dict[str, type[BaseSettings]] = {
    "coordinator": CoordinatorSettings,
    "node": NodeSettings,
}
ENV_PREFIX = {"coordinator": "CREDITSHARE_COORDINATOR_", "node": "CREDITSHARE_NODE_"}
#: The setting that holds each service's listen port.
PORT_SETTING = {"coordinator": "port", "node": "listen"}
TABLE_HEADER = "| setting | type | default | environment variable | meaning |"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def report(problems: Sequence[str]) -> None:
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Exactly ``values`` as the CREDITSHARE_* environment for the block."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("CREDITSHARE_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(values)
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith("CREDITSHARE_")]:
            del os.environ[name]
        os.environ.update(saved)


def port_of(kind: str, settings: BaseSettings) -> int:
    if isinstance(settings, CoordinatorSettings):
        return settings.port
    assert isinstance(settings, NodeSettings), kind
    return int(settings.listen.rsplit(":", 1)[-1])


def host_of(kind: str, settings: BaseSettings) -> str:
    if isinstance(settings, CoordinatorSettings):
        return settings.host
    assert isinstance(settings, NodeSettings), kind
    return settings.listen.rsplit(":", 1)[0].strip("[]")


def database_url(settings: BaseSettings) -> str:
    assert isinstance(settings, CoordinatorSettings | NodeSettings)
    return settings.database_url


# ===================================================================== the CLI


# Typer builds a click command tree; recent Typer versions vendor their own click, so the
# tree is walked by its interface (commands, get_command, make_context), not by class.
CLI: Any = typer.main.get_command(cli.app)


def _is_group(command: Any) -> bool:
    return hasattr(command, "list_commands") and hasattr(command, "get_command")


def _cli_envvars(command: Any) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        envvar = param.envvar
        if isinstance(envvar, str):
            names.add(envvar)
        elif envvar:
            names.update(envvar)
    if _is_group(command):
        for sub in command.commands.values():
            names |= _cli_envvars(sub)
    return names


def _code_envvars() -> set[str]:
    """CREDITSHARE_* names that appear as string literals in the package: read by the code."""
    names: set[str] = set()
    for path in (ROOT / "src" / "creditshare").rglob("*.py"):
        names.update(re.findall(r"[\"'](CREDITSHARE_[A-Z0-9_]*[A-Z0-9])[\"']", path.read_text()))
    return names


KNOWN_ENVVARS = _cli_envvars(CLI) | _code_envvars()


def cli_problem(args: Sequence[str], where: str) -> str | None:
    """What is wrong with running ``creditshare *args``, or None if the CLI accepts it.

    Walks the command tree to the (sub)command, then lets it parse the rest exactly as
    it would at run time (unknown options, missing required options and arguments,
    bad values are refused), without invoking it."""
    command: Any = CLI
    path = ["creditshare"]
    rest = list(args)
    while _is_group(command):
        if not rest or rest[0].startswith("-"):
            return f"{where}: `{' '.join(path)}` needs a subcommand"
        name = rest.pop(0)
        context = command.context_class(command, info_name=path[-1])
        sub = command.get_command(context, name)
        if sub is None:
            known = ", ".join(sorted(command.list_commands(context)))
            return f"{where}: `{' '.join([*path, name])}`: no such command (there are: {known})"
        path.append(name)
        command = sub
    try:
        with command.make_context(" ".join(path), list(rest)):
            pass
    except Exception as exc:
        message = getattr(exc, "format_message", None)
        if message is None:  # not a usage error: a bug worth its traceback
            raise
        return f"{where}: `{shlex.join([*path, *rest])}`: {message()}"
    return None


def settings_kind(args: Sequence[str]) -> str | None:
    """Whose settings ``creditshare *args`` loads from its --config, if any."""
    if config_arg(args) is None:
        return None
    if args[:1] == ["node"]:
        return "node"
    if list(args[:2]) == ["db", "upgrade"] and len(args) > 2 and args[2] in SETTINGS:
        return args[2]
    if args[:1] and args[0] in ("coordinator", "admin", "ledger"):
        return "coordinator"
    return None


def config_arg(args: Sequence[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def serves(args: Sequence[str] | None, kind: str) -> bool:
    return args is not None and list(args[:2]) == [kind, "serve"]


def upgrades(args: Sequence[str] | None, kind: str) -> bool:
    return args is not None and list(args[:3]) == ["db", "upgrade", kind]


# ===================================================================== settings fields


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``| None`` and whether it was optional."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_enum(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, enum.Enum)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def env_problem(name: str) -> str | None:
    """Why ``name`` is not a variable any service reads, or None if it is one.

    ``CREDITSHARE_NODE_TLS__CA`` is ``tls.ca`` of NodeSettings; a name cut short by a
    placeholder (``CREDITSHARE_COORDINATOR_TLS__<CHAIN>__CA`` reads as ``..._TLS__``)
    is checked as far as it goes.
    """
    for kind, prefix in ENV_PREFIX.items():
        if name.startswith(prefix):
            segments = name[len(prefix) :].lower().split("__")
            while segments and not segments[-1]:
                segments.pop()
            return _env_walk(SETTINGS[kind], segments, SETTINGS[kind].__name__)
    if name.rstrip("_") in {p.rstrip("_") for p in ENV_PREFIX.values()} | {"CREDITSHARE"}:
        return None
    if name in KNOWN_ENVVARS:
        return None
    return (
        f"is neither a settings variable ({', '.join(p + '*' for p in ENV_PREFIX.values())}) "
        f"nor one the code reads ({', '.join(sorted(KNOWN_ENVVARS))})"
    )


def _env_walk(annotation: Any, segments: Sequence[str], trail: str) -> str | None:
    annotation, _ = _unwrap(annotation)
    if not segments:
        return None
    head, rest = segments[0], segments[1:]
    if _is_model(annotation):
        fields = annotation.model_fields
        if head not in fields:
            return f"`{head}` is not a field of {trail} (fields: {', '.join(fields)})"
        return _env_walk(fields[head].annotation, rest, f"{trail}.{head}")
    origin = typing.get_origin(annotation)
    if origin is dict:
        key_type, value_type = typing.get_args(annotation)
        if _is_enum(key_type) and head not in {m.value for m in key_type}:
            values = ", ".join(m.value for m in key_type)
            return f"`{head}` is not a key of {trail} (one of: {values})"
        return _env_walk(value_type, rest, f"{trail}.{head}")
    if origin is list:
        return f"{trail} is a list: it is set whole, as JSON, in one variable"
    return f"{trail} is a {_type_name(annotation)}: `{head}` goes nowhere"


def toml_problems(value: Any, annotation: Any, trail: str) -> list[str]:
    """Keys in a settings document that are no field (also where the model would ignore them)."""
    annotation, _ = _unwrap(annotation)
    problems: list[str] = []
    if _is_model(annotation) and isinstance(value, dict):
        fields = annotation.model_fields
        for key, item in value.items():
            where = f"{trail}.{key}" if trail else key
            if key not in fields:
                problems.append(
                    f"`{where}` is not a field of {_type_name(annotation)} "
                    f"(fields: {', '.join(fields)})"
                )
            else:
                problems += toml_problems(item, fields[key].annotation, where)
    elif typing.get_origin(annotation) is dict and isinstance(value, dict):
        key_type, value_type = typing.get_args(annotation)
        for key, item in value.items():
            if _is_enum(key_type) and key not in {m.value for m in key_type}:
                values = ", ".join(m.value for m in key_type)
                problems.append(f"`{trail}.{key}`: `{key}` is not one of {values}")
            problems += toml_problems(item, value_type, f"{trail}.{key}")
    elif typing.get_origin(annotation) is list and isinstance(value, list):
        (item_type,) = typing.get_args(annotation)
        for i, item in enumerate(value):
            problems += toml_problems(item, item_type, f"{trail}[{i}]")
    return problems


def rewrite_paths(value: Any, resolve: Callable[[str], str | None]) -> Any:
    """``value`` with every absolute path a mount provides replaced by the local file."""
    if isinstance(value, dict):
        return {k: rewrite_paths(v, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_paths(v, resolve) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return resolve(value) or value
    return value


def load_service_settings(
    kind: str,
    config_file: Path,
    config_text: str,
    env: Mapping[str, str],
    resolve: Callable[[str], str | None],
    where: str,
) -> tuple[BaseSettings | None, list[str]]:
    """Load ``config_file`` with the real loader, as the container would see it.

    Container paths in the file and the environment become the local files that stand
    for them (``resolve``): those must exist, as the settings check.
    """
    cls = SETTINGS[kind]
    problems: list[str] = []

    def existing(path: str) -> str | None:
        # Every file a setting names must be there, also where the setting does not check.
        local = resolve(path)
        if local is not None and not Path(local).exists():
            problems.append(f"{where}: the settings name {path}, which nothing puts there")
        return local

    data = tomllib.loads(config_text)
    problems += [f"{where}: {p}" for p in toml_problems(data, cls, "")]
    overrides = {k: v for k, v in rewrite_paths(data, existing).items() if data[k] != v}
    local_env = {
        k: str(rewrite_paths(v, existing)) for k, v in env.items() if k.startswith("CREDITSHARE_")
    }
    for name in local_env:
        problem = env_problem(name)
        if problem:
            problems.append(f"{where}: {name} {problem}")
        if name.startswith("CREDITSHARE_") and not name.startswith(ENV_PREFIX[kind]):
            problems.append(
                f"{where}: {name} is not read by the {kind} (its prefix is {ENV_PREFIX[kind]})"
            )
    try:
        with environment(local_env):
            return load_settings(cls, config_file, **overrides), problems
    except ConfigurationError as exc:
        return None, [*problems, f"{where}: settings do not load: {exc}"]


# ===================================================================== shell commands


_PUNCTUATION = ";&|()<>\n"
_SHELL_WORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{"}


def _without_comments(text: str) -> str:
    """``text`` with shell comments removed (a ``#`` starting a word, outside quotes),
    keeping the newline that ends each: it ends a command too."""
    kept: list[str] = []
    quote = ""
    skipping = False
    for i, char in enumerate(text):
        if skipping:
            if char != "\n":
                continue
            skipping = False
        elif quote:
            if char == quote and not (quote == '"' and text[i - 1] == "\\"):
                quote = ""
        elif char in "'\"" and not (i and text[i - 1] == "\\"):
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t\n;&|()"):
            skipping = True
            continue
        kept.append(char)
    return "".join(kept)


def shell_commands(text: str) -> list[list[str]]:
    """The simple commands of a POSIX shell text, as word lists (quotes removed)."""
    source = _without_comments(text.replace("\\\n", " "))
    lexer = shlex.shlex(source, posix=True, punctuation_chars=_PUNCTUATION)
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and all(c in _PUNCTUATION for c in token):
            if any(c in "<>" for c in token):
                commands[-1].append(token)  # a redirection: ends the arguments
            else:
                commands.append([])
        else:
            commands[-1].append(token)
    found: list[list[str]] = []
    for words in commands:
        while words and (words[0] in _SHELL_WORDS or re.fullmatch(r"\w+=.*", words[0])):
            words = words[1:]
        if words:
            found.append(words)
    return found


def creditshare_invocations(words: Sequence[str]) -> list[str] | None:
    """The arguments of the ``creditshare`` run by a command line (also after
    ``exec``, ``kubectl exec ... --`` or ``docker compose exec SERVICE``)."""
    if "creditshare" not in words:
        return None
    args: list[str] = []
    for word in words[words.index("creditshare") + 1 :]:
        if any(c in "<>" for c in word) and all(c in _PUNCTUATION + "0123456789" for c in word):
            break
        args.append(word)
    return args


_COMPOSE_RUN_VALUE_OPTIONS = {
    "-e",
    "--env",
    "-v",
    "--volume",
    "--name",
    "-w",
    "--workdir",
    "-u",
    "--user",
    "-p",
    "--publish",
    "-l",
    "--label",
    "--entrypoint",
    "--env-file",
}


def compose_run(words: Sequence[str]) -> tuple[str, str | None, list[str]] | None:
    """``docker compose run [options] SERVICE ARGS...`` as (SERVICE, --entrypoint, ARGS)."""
    if list(words[:3]) != ["docker", "compose", "run"]:
        return None
    rest = list(words[3:])
    entrypoint: str | None = None
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option.startswith("--entrypoint="):
            entrypoint = option.split("=", 1)[1]
        elif option in _COMPOSE_RUN_VALUE_OPTIONS and rest:
            value = rest.pop(0)
            if option == "--entrypoint":
                entrypoint = value
    if not rest:
        return None
    return rest[0], entrypoint, rest[1:]


def markdown_shell_blocks(path: Path) -> list[str]:
    return re.findall(r"```(?:sh|bash|shell)\n(.*?)```", path.read_text(), flags=re.DOTALL)


# ===================================================================== Dockerfiles


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    args: dict[str, str]
    stages: list[list[tuple[str, str]]]

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        lines = [ln for ln in path.read_text().splitlines() if not ln.strip().startswith("#")]
        joined: list[str] = []
        current = ""
        for line in lines:
            if line.rstrip().endswith("\\"):
                current += line.rstrip()[:-1] + " "
                continue
            current += line
            if current.strip():
                joined.append(current.strip())
            current = ""
        args: dict[str, str] = {}
        stages: list[list[tuple[str, str]]] = []
        for line in joined:
            word, _, rest = line.partition(" ")
            instruction = word.upper()
            if instruction == "FROM":
                stages.append([])
            if not stages:
                if instruction == "ARG" and "=" in rest:
                    name, _, default = rest.partition("=")
                    args[name.strip()] = default.strip()
                continue
            stages[-1].append((instruction, rest.strip()))
        return cls(path, args, stages)

    @property
    def final(self) -> list[tuple[str, str]]:
        return self.stages[-1]

    def values(self, instruction: str, stage: int = -1) -> list[str]:
        return [rest for name, rest in self.stages[stage] if name == instruction]

    def exec_form(self, instruction: str) -> list[str]:
        values = self.values(instruction)
        if not values:
            return []
        parsed = json.loads(values[-1])
        assert isinstance(parsed, list), f"{rel(self.path)}: {instruction} is not in exec form"
        return [str(v) for v in parsed]

    def base_image(self, stage: int = -1) -> str:
        image = self.values("FROM", stage)[0].split()[0]
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args.get(m.group(1), m.group(0)), image)

    def healthcheck(self) -> tuple[str, list[str]]:
        """(options, exec-form command) of the final stage's HEALTHCHECK."""
        options, _, command = self.values("HEALTHCHECK")[-1].partition("CMD ")
        parsed = json.loads(command)
        assert isinstance(parsed, list)
        return options, [str(v) for v in parsed]

    def expose(self) -> list[int]:
        return [int(p.split("/")[0]) for v in self.values("EXPOSE") for p in v.split()]

    def volumes(self) -> list[str]:
        found: list[str] = []
        for value in self.values("VOLUME"):
            parsed = json.loads(value) if value.startswith("[") else value.split()
            found += [str(v) for v in parsed]
        return found


DOCKER = {kind: Dockerfile.parse(path) for kind, path in DOCKERFILES.items()}


def healthcheck_port(kind: str) -> tuple[str, int]:
    """The variable the HEALTHCHECK reads its port from, and its default."""
    _, command = DOCKER[kind].healthcheck()
    code = command[-1]
    match = re.search(r"os\.environ\.get\('(\w+)', '([^']*)'\)", code)
    assert match, f"{rel(DOCKERFILES[kind])}: HEALTHCHECK does not read its port from the env"
    return match.group(1), int(match.group(2).rsplit(":", 1)[-1])


# ===================================================================== docker-compose


_INTERPOLATION = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolation_variables(text: str) -> dict[str, str | None]:
    """Variables the compose file interpolates, each with its operator (``:?`` required)."""
    found: dict[str, str | None] = {}
    for match in _INTERPOLATION.finditer(text):
        if match.group(1):
            continue
        found[match.group(2) or match.group(5)] = match.group(3)
    return found


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name, operator, argument = match.group(2) or match.group(5), match.group(3), match.group(4)
        if env.get(name) or (name in env and operator not in (":-", ":?")):
            return env[name]
        if operator in ("-", ":-"):
            return str(argument)
        raise AssertionError(f"{rel(COMPOSE_FILE)}: ${{{name}}} has no value and no default")

    return _INTERPOLATION.sub(substitute, value)


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    bind: bool


@dataclass
class Compose:
    """docker-compose.yml with YAML merges resolved and ${VARS} interpolated."""

    services: dict[str, dict[str, Any]]
    raw: dict[str, Any]

    @classmethod
    def load(cls, env: Mapping[str, str]) -> Compose:
        raw = yaml.safe_load(COMPOSE_FILE.read_text())
        doc = interpolate(raw, env)
        return cls(dict(doc["services"]), raw)

    def mounts(self, name: str) -> list[Mount]:
        mounts: list[Mount] = []
        for entry in self.services[name].get("volumes", []):
            if isinstance(entry, dict):
                source, target = str(entry.get("source", "")), str(entry["target"])
                bind = entry.get("type") == "bind"
            else:
                parts = str(entry).split(":")
                source, target = parts[0], parts[1]
                bind = source.startswith((".", "/", "~"))
            mounts.append(Mount(source, target, bind))
        return mounts

    def host_file(self, name: str, container_path: str) -> Path | None:
        """The file of this repository that a bind mount puts at ``container_path``."""
        for mount in self.mounts(name):
            if not mount.bind:
                continue
            if container_path == mount.target:
                return (COMPOSE_FILE.parent / mount.source).resolve()
            if container_path.startswith(mount.target.rstrip("/") + "/"):
                tail = container_path[len(mount.target.rstrip("/")) + 1 :]
                return (COMPOSE_FILE.parent / mount.source / tail).resolve()
        return None

    def dockerfile_kind(self, name: str) -> str | None:
        spec = self.services[name]
        build = spec.get("build")
        if build is None:
            image = spec.get("image")
            builders = [n for n, s in self.services.items() if s.get("build") and s.get("image")]
            for other in builders:
                if self.services[other]["image"] == image:
                    return self.dockerfile_kind(other)
            return None
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "")
        path = (COMPOSE_FILE.parent / context / (dockerfile or "Dockerfile")).resolve()
        for kind, known in DOCKERFILES.items():
            if known.resolve() == path:
                return kind
        return None

    def argv(self, name: str) -> list[str]:
        """What the container runs: entrypoint + command (Docker's rules)."""
        spec = self.services[name]
        kind = self.dockerfile_kind(name)
        image = DOCKER[kind] if kind else None

        def words(value: Any) -> list[str]:
            return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

        if "entrypoint" in spec:
            # Setting the entrypoint drops the image's CMD.
            return words(spec["entrypoint"]) + words(spec.get("command", []))
        entrypoint = image.exec_form("ENTRYPOINT") if image else []
        command = (
            words(spec["command"])
            if "command" in spec
            else (image.exec_form("CMD") if image else [])
        )
        return entrypoint + command

    def passthrough_script(self, name: str) -> Path | None:
        """The wrapper script the service runs that ends in ``exec creditshare "$@"``."""
        argv = self.argv(name)
        if len(argv) >= 2 and argv[0] in ("/bin/sh", "sh") and argv[1] != "-c":
            script = self.host_file(name, argv[1])
            if script and 'exec creditshare "$@"' in script.read_text():
                return script
        return None

    def creditshare_args(self, name: str) -> list[str] | None:
        argv = self.argv(name)
        if argv and Path(argv[0]).name == "creditshare":
            return argv[1:]
        if self.passthrough_script(name):
            return argv[2:]
        return None

    def environment(self, name: str) -> dict[str, str]:
        env = self.services[name].get("environment", {})
        if isinstance(env, list):
            env = dict(str(item).split("=", 1) for item in env)
        return {str(k): str(v) for k, v in env.items()}

    def networks(self, name: str) -> set[str]:
        networks = self.services[name].get("networks", ["default"])
        if "network_mode" in self.services[name]:
            return set()
        return set(networks)

    def depends_on(self, name: str) -> dict[str, str]:
        deps = self.services[name].get("depends_on", {})
        if isinstance(deps, list):
            return {d: "service_started" for d in deps}
        return {d: str(v.get("condition", "service_started")) for d, v in deps.items()}


def compose_env() -> dict[str, str]:
    """Values for the compose file's variables: .env.example, with test passwords."""
    return {k: v or f"test-{k.lower().replace('_', '-')}" for k, v in env_example().items()}


@pytest.fixture(scope="module")
def compose() -> Compose:
    return Compose.load(compose_env())


# ===================================================================== the PKI step


@dataclass(frozen=True)
class PkiOutput:
    """deploy/scripts/init-chain.sh run for real; each init volume is a local folder."""

    volumes: dict[str, Path]
    log_public_key: str


def _init_service(compose: Compose) -> str:
    names = [
        n
        for n in compose.services
        if any(m.bind and m.source.endswith("init-chain.sh") for m in compose.mounts(n))
    ]
    assert len(names) == 1, f"{rel(COMPOSE_FILE)}: expected one service running init-chain.sh"
    return names[0]


@pytest.fixture(scope="module")
def pki(compose: Compose, tmp_path_factory: pytest.TempPathFactory) -> PkiOutput:
    init = _init_service(compose)
    argv = compose.argv(init)
    script = compose.host_file(init, argv[1])
    assert script is not None, (
        f"{rel(COMPOSE_FILE)}: {init} runs {argv[1]}, which no mount provides"
    )
    service_env = compose.environment(init)
    assert "PKI_ROOT" in service_env, f"{rel(COMPOSE_FILE)}: {init} must set PKI_ROOT"
    root = tmp_path_factory.mktemp("pki")
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "creditshare").exists(), f"no creditshare command next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITSHARE_")}
    env.update(service_env)
    env.update({"PKI_ROOT": str(root), "OWNER": "", "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"})
    snapshots: list[dict[Path, bytes]] = []
    for _ in range(2):  # the second run must keep everything the first one made
        run = subprocess.run(
            ["sh", str(script)], env=env, capture_output=True, text=True, check=False
        )
        assert run.returncode == 0, f"{rel(script)} failed:\n{run.stdout}{run.stderr}"
        snapshots.append({p: p.read_bytes() for p in root.rglob("*") if p.is_file()})
    first, second = snapshots
    changed = sorted(rel(p) for p in first if second.get(p) != first[p])
    assert not changed, f"{rel(script)} run twice replaced {', '.join(changed)}"
    volumes: dict[str, Path] = {}
    base = service_env["PKI_ROOT"].rstrip("/")
    for mount in compose.mounts(init):
        if not mount.bind:
            assert mount.target.startswith(base + "/"), f"{init}: {mount.target} not under {base}"
            volumes[mount.source] = root / mount.target[len(base) + 1 :]
    keys = {p.read_text().strip() for p in root.rglob("log-public-key.txt")}
    assert len(keys) == 1, f"{rel(script)}: nodes got {len(keys)} different ledger keys"
    return PkiOutput(volumes, keys.pop())


def compose_resolver(compose: Compose, name: str, pki: PkiOutput) -> Callable[[str], str | None]:
    """Container path -> local file, through the service's volumes filled by the PKI step."""
    mounts = [
        (m.target.rstrip("/"), pki.volumes[m.source])
        for m in compose.mounts(name)
        if m.source in pki.volumes
    ]

    def resolve(path: str) -> str | None:
        for target, local in mounts:
            if path.startswith(target + "/"):
                return str(local / path[len(target) + 1 :])
        host = compose.host_file(name, path)
        return str(host) if host else None

    return resolve


@dataclass
class ServiceSettings:
    kind: str
    settings: BaseSettings


def compose_settings(
    compose: Compose, pki: PkiOutput
) -> tuple[dict[str, ServiceSettings], list[str]]:
    """Each creditshare service's settings, loaded as its container would load them."""
    loaded: dict[str, ServiceSettings] = {}
    problems: list[str] = []
    for name in compose.services:
        args = compose.creditshare_args(name)
        kind = settings_kind(args) if args else None
        if args is None or kind is None:
            continue
        where = f"{rel(COMPOSE_FILE)}: service {name}"
        config = config_arg(args)
        assert config is not None
        host_config = compose.host_file(name, config)
        if host_config is None or not host_config.is_file():
            problems.append(f"{where}: --config {config} is not a file any bind mount provides")
            continue
        resolve = compose_resolver(compose, name, pki)
        env = {k: v for k, v in compose.environment(name).items() if k.startswith("CREDITSHARE_")}
        wrapper = compose.passthrough_script(name)
        if wrapper:
            for variable, default_file in re.findall(
                r'(CREDITSHARE_\w+)="\$\(cat "\$\{\w+:-([^}]+)\}"\)"', wrapper.read_text()
            ):
                local = resolve(default_file)
                if local is None or not Path(local).is_file():
                    problems.append(
                        f"{where}: {rel(wrapper)} reads {default_file}, which no volume holds"
                    )
                else:
                    env[variable] = Path(local).read_text().strip()
        settings, found = load_service_settings(
            kind,
            host_config,
            host_config.read_text(),
            env,
            resolve,
            f"{where} ({rel(host_config)})",
        )
        problems += found
        if settings is not None:
            loaded[name] = ServiceSettings(kind, settings)
    return loaded, problems


# ===================================================================== Kubernetes


@dataclass(frozen=True)
class K8sObject:
    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    @property
    def where(self) -> str:
        return f"{rel(self.path)}: {self.kind} {self.name}"

    @property
    def pod_spec(self) -> dict[str, Any] | None:
        spec = self.doc.get("spec", {})
        if self.kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            return dict(spec["template"]["spec"])
        if self.kind == "CronJob":
            return dict(spec["jobTemplate"]["spec"]["template"]["spec"])
        return None

    @property
    def pod_labels(self) -> dict[str, str]:
        spec = self.doc.get("spec", {})
        template = spec.get("jobTemplate", {}).get("spec", spec).get("template", {})
        return dict(template.get("metadata", {}).get("labels", {}))

    def data(self) -> dict[str, str]:
        return {**self.doc.get("data", {}), **self.doc.get("stringData", {})}


def k8s_objects() -> list[K8sObject]:
    found: list[K8sObject] = []
    for path in sorted(KUBERNETES.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append(K8sObject(path, doc))
    return found


K8S = k8s_objects()
APPLIED = [o for o in K8S if "examples" not in o.path.relative_to(KUBERNETES).parts]


def k8s_lookup(kind: str, name: str) -> K8sObject | None:
    matches = [o for o in K8S if o.kind == kind and o.name == name]
    return matches[0] if matches else None


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@dataclass
class K8sContainer:
    owner: K8sObject
    spec: dict[str, Any]
    kind: str | None  # which Dockerfile built its image

    @property
    def where(self) -> str:
        return f"{self.owner.where} container {self.spec['name']}"

    @property
    def pod(self) -> dict[str, Any]:
        pod = self.owner.pod_spec
        assert pod is not None
        return pod

    def argv(self) -> list[str]:
        image = DOCKER[self.kind] if self.kind else None
        if "command" in self.spec:
            return [*self.spec["command"], *self.spec.get("args", [])]
        entrypoint = image.exec_form("ENTRYPOINT") if image else []
        args = (
            self.spec["args"] if "args" in self.spec else (image.exec_form("CMD") if image else [])
        )
        return [*entrypoint, *(str(a) for a in args)]

    def creditshare_args(self) -> list[str] | None:
        argv = self.argv()
        return argv[1:] if argv and Path(argv[0]).name == "creditshare" else None

    def ports(self) -> dict[str, int]:
        return {
            str(p.get("name", p["containerPort"])): int(p["containerPort"])
            for p in self.spec.get("ports", [])
        }

    def port(self, ref: str | int) -> int | None:
        if isinstance(ref, int):
            return ref if ref in self.ports().values() else None
        return self.ports().get(ref)

    def volume(self, name: str) -> dict[str, Any] | None:
        for volume in self.pod.get("volumes", []):
            if volume["name"] == name:
                return dict(volume)
        return None

    def file(self, path: str) -> tuple[K8sObject | None, str | None, str]:
        """(ConfigMap or Secret, key, problem) providing the file at ``path``."""
        best: dict[str, Any] | None = None
        for mount in self.spec.get("volumeMounts", []):
            target = str(mount["mountPath"]).rstrip("/")
            if path.startswith(target + "/") and (
                best is None or len(target) > len(best["mountPath"])
            ):
                best = mount
        if best is None:
            return None, None, f"no volume is mounted above {path}"
        key = path[len(str(best["mountPath"]).rstrip("/")) + 1 :]
        volume = self.volume(str(best["name"]))
        if volume is None:
            return None, None, f"volumeMount {best['name']} has no volume"
        if "configMap" in volume:
            source = k8s_lookup("ConfigMap", str(volume["configMap"]["name"]))
        elif "secret" in volume:
            source = k8s_lookup("Secret", str(volume["secret"]["secretName"]))
        else:
            return None, None, f"{path} is on volume {volume['name']}, which holds no shipped file"
        if source is None:
            return (
                None,
                None,
                f"volume {volume['name']} names a ConfigMap/Secret defined nowhere in "
                f"{rel(KUBERNETES)}",
            )
        if key not in source.data():
            return source, None, f"{source.kind} {source.name} has no key {key} (for {path})"
        return source, key, ""

    def env(self) -> tuple[dict[str, str], list[str]]:
        values: dict[str, str] = {}
        problems: list[str] = []
        for item in self.spec.get("env", []):
            name = str(item["name"])
            if "value" in item:
                values[name] = str(item["value"])
                continue
            ref = item.get("valueFrom", {})
            for ref_kind, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if ref_kind in ref:
                    source = k8s_lookup(kind, str(ref[ref_kind]["name"]))
                    key = str(ref[ref_kind]["key"])
                    if source is None:
                        problems.append(
                            f"{self.where}: env {name}: {kind} {ref[ref_kind]['name']} is defined "
                            f"nowhere in {rel(KUBERNETES)}"
                        )
                    elif key not in source.data():
                        problems.append(
                            f"{self.where}: env {name}: {kind} {source.name} has no key {key}"
                        )
                    else:
                        values[name] = str(source.data()[key])
        return values, problems


def image_kinds(compose: Compose) -> dict[str, str]:
    """Image name -> which Dockerfile builds it (as the compose file builds them)."""
    kinds: dict[str, str] = {}
    for name, spec in compose.services.items():
        kind = compose.dockerfile_kind(name)
        if kind and spec.get("image"):
            kinds[str(spec["image"])] = kind
    return kinds


def k8s_containers(compose: Compose) -> list[K8sContainer]:
    kinds = image_kinds(compose)
    containers: list[K8sContainer] = []
    for obj in APPLIED:
        pod = obj.pod_spec
        if pod is None:
            continue
        for spec in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            containers.append(K8sContainer(obj, spec, kinds.get(str(spec["image"]))))
    return containers


def k8s_settings(
    compose: Compose, pki: PkiOutput, tmp: Path
) -> tuple[list[tuple[K8sContainer, ServiceSettings]], list[str]]:
    """Settings of every creditshare container, loaded from its ConfigMap with the files
    its Secrets would hold: the ones the PKI step writes to the compose volume of the
    same name (README: the Secrets are made from those folders)."""
    loaded: list[tuple[K8sContainer, ServiceSettings]] = []
    problems: list[str] = []
    for container in k8s_containers(compose):
        args = container.creditshare_args()
        kind = settings_kind(args) if args else None
        if args is None or kind is None:
            continue
        config = config_arg(args)
        assert config is not None
        source, key, problem = container.file(config)
        if source is None or key is None:
            problems.append(f"{container.where}: --config {config}: {problem}")
            continue
        config_file = tmp / f"{source.name}-{key}"
        config_file.write_text(source.data()[key])

        def resolve(path: str, container: K8sContainer = container) -> str | None:
            secret, key, problem = container.file(path)
            if secret is None or key is None:
                problems.append(f"{container.where}: {problem}")
                return None
            if secret.kind != "Secret":
                return None
            local = pki.volumes.get(secret.name)
            if local is None:
                problems.append(
                    f"{container.where}: Secret {secret.name} matches no volume the PKI step "
                    f"fills ({', '.join(pki.volumes)}), so its files are unknown"
                )
                return None
            return str(local / key)

        env, found = container.env()
        problems.extend(found)
        for name, value in list(env.items()):
            if "<" in value and name == "CREDITSHARE_NODE_LOG_PUBLIC_KEY":
                env[name] = pki.log_public_key  # the example holds a placeholder
        settings, found = load_service_settings(
            kind, config_file, source.data()[key], env, resolve, container.where
        )
        problems.extend(found)
        if settings is not None:
            loaded.append((container, ServiceSettings(kind, settings)))
    return loaded, problems


# ===================================================================== the coordinator app


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("app")
    init_log_key(tmp / "log.pem")
    settings = CoordinatorSettings(
        log_signing_key_file=tmp / "log.pem",
        allow_insecure=True,
        database_url=f"sqlite:///{tmp / 'coordinator.db'}",
    )
    with environment({}), TestClient(create_app(settings)) as client:
        yield client


def route_problem(client: TestClient, path: str, where: str) -> str | None:
    status = client.get(path).status_code
    if status in (404, 405):
        return f"{where}: GET {path} is not a route of the coordinator app (status {status})"
    return None


# ===================================================================== settings tables


@dataclass(frozen=True)
class Row:
    setting: str
    type: str
    default: str
    env: str

    def cells(self) -> tuple[str, str, str, str]:
        return (f"`{self.setting}`", self.type, self.default, self.env)


def _constraints(info: FieldInfo | None, unit: str = "characters") -> list[str]:
    """The field's bounds as text; a length bound counts ``unit`` (characters of a
    string, items of a list)."""
    found: list[str] = []
    for item in info.metadata if info else []:
        for attribute, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(item, attribute, None) is not None:
                found.append(f"{symbol} {getattr(item, attribute)}")
        shortest, longest = getattr(item, "min_length", None), getattr(item, "max_length", None)
        if shortest is not None or longest is not None:
            found.append(f"{shortest or 0}–{longest} {unit}" if longest else f"≥ {shortest} {unit}")
        if getattr(item, "pattern", None) is not None:
            found.append(f"matching `{item.pattern}`")
    return found


def _is_file_path(info: FieldInfo | None) -> bool:
    return any(getattr(m, "path_type", None) == "file" for m in (info.metadata if info else []))


def type_text(annotation: Any, info: FieldInfo | None = None) -> str:
    annotation, optional = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    if annotation is bool:
        text = "boolean"
    elif annotation is int:
        text = "integer"
    elif annotation is float:
        text = "number"
    elif annotation is str:
        text = "string"
    elif annotation is Path:
        text = "path of an existing file" if _is_file_path(info) else "path"
    elif _is_enum(annotation) or origin is typing.Literal:
        choices = (
            [m.value for m in annotation] if _is_enum(annotation) else typing.get_args(annotation)
        )
        values = [f"`{v}`" for v in choices]
        text = ", ".join(values[:-1]) + f" or {values[-1]}"
    elif _is_model(annotation):
        text = "table"
    elif origin is dict:
        key_type, value_type = typing.get_args(annotation)
        if _is_enum(key_type):
            text = f"table per {key_type.__name__.lower()}"
        elif _is_model(value_type):
            text = "table per name"
        else:
            text = f"table of name = {type_text(value_type)}"
    elif origin is list:
        (item,) = typing.get_args(annotation)
        text = "array of tables" if _is_model(item) else f"array of {type_text(item)}"
    else:
        text = _type_name(annotation)
    collection = origin in (list, set, frozenset, tuple, dict)
    constraints = _constraints(info, "items" if collection else "characters")
    if constraints:
        text += ", " + ", ".join(constraints)
    return text + (", optional" if optional else "")


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return "the defaults below"
    if isinstance(value, dict | list) and not value:
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    return f"`{value!r}`"


def settings_rows(kind: str) -> list[Row]:
    """Every setting of a service, nested ones included, in declaration order."""
    rows: list[Row] = []

    def visit(annotation: Any, info: FieldInfo, setting: str, env: str | None) -> None:
        rows.append(
            Row(
                setting, type_text(annotation, info), default_text(info), f"`{env}`" if env else "—"
            )
        )
        inner, _ = _unwrap(annotation)
        origin = typing.get_origin(inner)
        if _is_model(inner):
            for name, sub in inner.model_fields.items():
                visit(
                    sub.annotation,
                    sub,
                    f"{setting}.{name}",
                    f"{env}__{name.upper()}" if env else None,
                )
        elif origin is dict:
            key_type, value_type = typing.get_args(inner)
            if _is_model(value_type):
                key = key_type.__name__.lower() if _is_enum(key_type) else "name"
                for name, sub in value_type.model_fields.items():
                    sub_env = f"{env}__<{key.upper()}>__{name.upper()}" if env else None
                    visit(sub.annotation, sub, f"{setting}.<{key}>.{name}", sub_env)
        elif origin is list:
            (item,) = typing.get_args(inner)
            if _is_model(item):
                for name, sub in item.model_fields.items():
                    visit(sub.annotation, sub, f"{setting}[].{name}", None)

    for name, info in SETTINGS[kind].model_fields.items():
        visit(info.annotation, info, name, f"{ENV_PREFIX[kind]}{name.upper()}")
    return rows


def readme_table(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    if TABLE_HEADER not in lines:
        return []
    rows: list[list[str]] = []
    for line in lines[lines.index(TABLE_HEADER) + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def render_table(kind: str) -> str:
    """The settings table for ``kind``'s README; meanings kept from the README, else the
    field's description, else TODO."""
    meanings = {row[0]: row[4] for row in readme_table(READMES[kind]) if len(row) == 5}
    descriptions: dict[str, str] = {}
    for name, info in SETTINGS[kind].model_fields.items():
        if info.description:
            descriptions[f"`{name}`"] = info.description
    lines = [TABLE_HEADER, "|---|---|---|---|---|"]
    for row in settings_rows(kind):
        cells = row.cells()
        meaning = meanings.get(cells[0]) or descriptions.get(cells[0]) or "TODO"
        lines.append("| " + " | ".join([*cells, meaning]) + " |")
    return "\n".join(lines)


# ===================================================================== tests: Dockerfiles


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_builds_a_small_non_root_image_that_runs_the_cli(kind: str) -> None:
    docker = DOCKER[kind]
    where = rel(docker.path)
    problems: list[str] = []
    if len(docker.stages) < 2:
        problems.append(f"{where}: expected a build stage and a runtime stage")
    else:
        if not any("pip wheel" in v for v in docker.values("RUN", 0)):
            problems.append(f"{where}: the build stage does not build a wheel (pip wheel)")
        if not any("--from=" in v for v in docker.values("COPY")):
            problems.append(f"{where}: the runtime stage copies nothing from the build stage")
    for stage in range(len(docker.stages)):
        if docker.base_image(stage) != "python:3.11-slim":
            problems.append(
                f"{where}: stage {stage} is FROM {docker.base_image(stage)}, not python:3.11-slim"
            )
    for run in docker.values("RUN"):
        for tool in ("build-essential", "gcc", "g++", "make ", "-dev", "git "):
            if "apt-get" in run and tool in run:
                problems.append(f"{where}: the runtime stage installs build tool {tool.strip()}")
    users = docker.values("USER")
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append(f"{where}: the final USER must be a numeric non-root uid, got {users}")
    if docker.exec_form("ENTRYPOINT") != ["creditshare"]:
        problems.append(
            f'{where}: ENTRYPOINT should be ["creditshare"], got {docker.exec_form("ENTRYPOINT")}'
        )
    cmd = docker.exec_form("CMD")
    problem = cli_problem(cmd, f"{where} CMD")
    if problem:
        problems.append(problem)
    if not serves(cmd, kind):
        problems.append(f"{where}: CMD should be `{kind} serve ...`, got {cmd}")
    config = config_arg(cmd)
    volumes = docker.volumes()
    if config is None or not any(config.startswith(v.rstrip("/") + "/") for v in volumes):
        problems.append(f"{where}: the CMD's --config {config} is in none of the VOLUMEs {volumes}")
    if "/var/lib/creditshare" not in volumes:
        problems.append(f"{where}: the data folder /var/lib/creditshare is not a VOLUME")
    _, healthcheck = docker.healthcheck()
    if healthcheck[:2] != ["python", "-c"]:
        problems.append(f"{where}: HEALTHCHECK should run python -c (no curl in the image)")
    else:
        compile(healthcheck[2], f"{where} HEALTHCHECK", "exec")
    variable, port = healthcheck_port(kind)
    if variable != ENV_PREFIX[kind] + PORT_SETTING[kind].upper():
        problems.append(f"{where}: HEALTHCHECK reads {variable}, not the port setting's variable")
    if docker.expose() != [port]:
        problems.append(f"{where}: EXPOSE {docker.expose()} but the HEALTHCHECK dials {port}")
    for name in re.findall(r"CREDITSHARE_[A-Z0-9_]+", docker.path.read_text()):
        problem = env_problem(name)
        if problem:
            problems.append(f"{where}: {name} {problem}")
    report(problems)


class _HealthzOnly(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_healthcheck(kind: str, env: Mapping[str, str]) -> int:
    _, command = DOCKER[kind].healthcheck()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CREDITSHARE_")}
    argv = [sys.executable, *command[1:]]
    return subprocess.run(
        argv, env={**clean, **env}, capture_output=True, timeout=30, check=False
    ).returncode


def test_coordinator_healthcheck_asks_healthz_on_the_configured_port() -> None:
    server = HTTPServer(("127.0.0.1", 0), _HealthzOnly)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        variable, _ = healthcheck_port("coordinator")
        assert _run_healthcheck("coordinator", {variable: str(server.server_address[1])}) == 0, (
            f"{rel(DOCKERFILES['coordinator'])}: HEALTHCHECK fails against a server answering "
            "/healthz"
        )
    finally:
        server.shutdown()
        server.server_close()
    assert _run_healthcheck("coordinator", {variable: str(_free_port())}) != 0, (
        f"{rel(DOCKERFILES['coordinator'])}: HEALTHCHECK passes with nothing listening"
    )


def test_node_healthcheck_connects_to_the_listen_port() -> None:
    variable, _ = healthcheck_port("node")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert _run_healthcheck("node", {variable: f"0.0.0.0:{port}"}) == 0, (
            f"{rel(DOCKERFILES['node'])}: HEALTHCHECK fails against a listening port"
        )
    assert _run_healthcheck("node", {variable: f"0.0.0.0:{_free_port()}"}) != 0, (
        f"{rel(DOCKERFILES['node'])}: HEALTHCHECK passes with nothing listening"
    )


def test_dockerignore_keeps_the_build_context_to_the_package() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", ".dockerignore: should start by excluding everything (`*`)"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    needed: set[str] = set()
    for docker in DOCKER.values():
        for value in docker.values("COPY", 0):
            needed.update(w.rstrip("/") for w in value.split()[:-1] if not w.startswith("--"))
    assert needed <= included, (
        f".dockerignore: the build stages COPY {sorted(needed - included)}, which it excludes"
    )


# ===================================================================== tests: commands


def test_compose_commands_exist_in_the_cli(compose: Compose) -> None:
    problems: list[str] = []
    ran = 0
    for name in compose.services:
        args = compose.creditshare_args(name)
        if args is not None:
            ran += 1
            problem = cli_problem(args, f"{rel(COMPOSE_FILE)}: service {name}")
            if problem:
                problems.append(problem)
    assert ran, f"{rel(COMPOSE_FILE)} runs no creditshare command at all"
    report(problems)


def test_kubernetes_commands_exist_in_the_cli(compose: Compose) -> None:
    problems: list[str] = []
    containers = k8s_containers(compose)
    assert containers, f"no workload in {rel(KUBERNETES)}"
    for container in containers:
        if container.kind is None:
            problems.append(
                f"{container.where}: image {container.spec['image']} is built by no Dockerfile "
                f"here (the compose file builds {', '.join(image_kinds(compose))})"
            )
            continue
        args = container.creditshare_args()
        if args is None:
            problems.append(f"{container.where}: does not run creditshare ({container.argv()})")
            continue
        problem = cli_problem(args, container.where)
        if problem:
            problems.append(problem)
    report(problems)


def _shell_sources() -> list[tuple[str, str]]:
    sources = [(rel(p), p.read_text()) for p in sorted(DEPLOY.rglob("*.sh"))]
    docs = sorted((ROOT / "docs").glob("*.md"))  # the walkthrough, the architecture...
    for readme in [*READMES.values(), *sorted(DEPLOY.rglob("README.md")), *docs]:
        sources += [(rel(readme), block) for block in markdown_shell_blocks(readme)]
    return sources


def test_script_and_readme_commands_exist_in_the_cli(compose: Compose) -> None:
    problems: list[str] = []
    for where, text in _shell_sources():
        for words in shell_commands(text):
            args = creditshare_invocations(words)
            run = compose_run(words)
            if run is not None:
                service, entrypoint, run_args = run
                if service not in compose.services:
                    problems.append(f"{where}: `docker compose run` of unknown service {service}")
                    continue
                if entrypoint is not None:
                    # The command replaces the service's: creditshare only if named so.
                    args = run_args if Path(entrypoint).name == "creditshare" else None
                elif not run_args:
                    continue  # the service's own command
                elif compose.creditshare_args(service) is None:
                    problems.append(
                        f"{where}: `docker compose run {service} {shlex.join(run_args)}`: "
                        f"{service} does not run creditshare with these arguments"
                    )
                    continue
                else:
                    args = run_args
            if args is None or args == ["$@"]:
                continue
            problem = cli_problem(args, where)
            if problem:
                problems.append(problem)
    report(problems)


# ===================================================================== tests: names


def _deploy_text_files() -> list[Path]:
    files = [
        p
        for p in DEPLOY.rglob("*")
        if p.is_file() and p.suffix in {".yml", ".yaml", ".toml", ".sh", ".md", ".cfg", ".example"}
    ]
    return sorted([*files, *DOCKERFILES.values(), *READMES.values()])


def test_every_creditshare_variable_is_a_setting_or_read_by_the_code() -> None:
    problems: list[str] = []
    seen = 0
    for path in _deploy_text_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for name in re.findall(r"\bCREDITSHARE_[A-Za-z0-9_]*", line):
                seen += 1
                problem = env_problem(name)
                if problem:
                    problems.append(f"{rel(path)}:{number}: {name} {problem}")
    assert seen
    report(problems)


def test_compose_variables_are_in_the_env_example() -> None:
    documented = env_example()
    problems = [
        f"{rel(COMPOSE_FILE)}: ${{{name}}} is required but not in {rel(ENV_EXAMPLE)}"
        for name, operator in interpolation_variables(COMPOSE_FILE.read_text()).items()
        if operator in ("?", ":?") and name not in documented
    ]
    report(problems)


def test_deploy_settings_files_name_only_settings_fields() -> None:
    problems: list[str] = []
    files = sorted((DEPLOY / "config").glob("*.toml"))
    assert files, "no settings files in deploy/config"
    for path in files:
        data = tomllib.loads(path.read_text())
        kind = "node" if "node_id" in data else "coordinator"
        problems += [f"{rel(path)}: {p}" for p in toml_problems(data, SETTINGS[kind], "")]
    report(problems)


def test_configmaps_hold_the_deploy_settings_files() -> None:
    shipped = {rel(p): p.read_text() for p in (DEPLOY / "config").glob("*.toml")}
    problems: list[str] = []
    for obj in APPLIED:
        if obj.kind != "ConfigMap":
            continue
        for key, text in obj.data().items():
            if key.endswith(".toml") and text not in shipped.values():
                problems.append(
                    f"{obj.where}: {key} differs from every file in deploy/config/ (edit both)"
                )
    used = {t for o in APPLIED if o.kind == "ConfigMap" for t in o.data().values()}
    problems += [
        f"{name}: in no ConfigMap of {rel(KUBERNETES)}"
        for name, text in shipped.items()
        if text not in used
    ]
    report(problems)


# ===================================================================== tests: compose wiring


def test_pki_step_writes_what_the_services_need(compose: Compose, pki: PkiOutput) -> None:
    problems: list[str] = []
    init = _init_service(compose)
    for volume in pki.volumes:
        users = [
            n
            for n in compose.services
            if n != init and any(m.source == volume for m in compose.mounts(n))
        ]
        if volume != "ca" and not users:
            problems.append(
                f"{rel(COMPOSE_FILE)}: volume {volume} is filled by {init} but no service mounts it"
            )
        for name in users:
            if init not in compose.depends_on(name) and not any(
                init in compose.depends_on(d) for d in compose.depends_on(name)
            ):
                problems.append(
                    f"{rel(COMPOSE_FILE)}: service {name} mounts {volume} but does not wait for "
                    f"{init}"
                )
    ca_users = [
        n
        for n in compose.services
        if n != init and any(m.source == "ca" for m in compose.mounts(n))
    ]
    if ca_users:
        problems.append(
            f"{rel(COMPOSE_FILE)}: the CA key volume is mounted by {', '.join(ca_users)}"
        )
    report(problems)


def test_compose_services_load_their_settings(compose: Compose, pki: PkiOutput) -> None:
    loaded, problems = compose_settings(compose, pki)
    kinds = {s.kind for s in loaded.values()}
    if kinds != set(SETTINGS):
        problems.append(f"{rel(COMPOSE_FILE)}: loaded settings only for {sorted(kinds)}")
    report(problems)


def _postgres_roles() -> dict[str, tuple[str, str]]:
    """role/database -> the variable holding its password, from init-databases.sh."""
    roles: dict[str, tuple[str, str]] = {}
    for name, variable in re.findall(
        r'^create_database (\S+) "\$\{(\w+)', POSTGRES_INIT.read_text(), flags=re.M
    ):
        roles[name] = (name, variable)
    return roles


def test_compose_wiring_agrees_across_services(compose: Compose, pki: PkiOutput) -> None:
    loaded, problems = compose_settings(compose, pki)
    where = rel(COMPOSE_FILE)
    coordinators = {
        n: s.settings
        for n, s in loaded.items()
        if serves(compose.creditshare_args(n), "coordinator")
    }
    nodes = {
        n: s.settings for n, s in loaded.items() if serves(compose.creditshare_args(n), "node")
    }
    if len(coordinators) < 2:
        problems.append(
            f"{where}: {len(coordinators)} coordinator replica(s), expected two or more"
        )
    if len(nodes) < 3:
        problems.append(f"{where}: {len(nodes)} node(s), expected three")

    # Every serving service listens beyond loopback on the port its image exposes and probes.
    for name, service in loaded.items():
        args = compose.creditshare_args(name)
        if not serves(args, service.kind):
            continue
        port = port_of(service.kind, service.settings)
        if host_of(service.kind, service.settings) in LOOPBACK:
            problems.append(f"{where}: service {name} listens on loopback only")
        docker = DOCKER[service.kind]
        if port not in docker.expose():
            problems.append(
                f"{where}: service {name} listens on {port}; {rel(docker.path)} EXPOSEs "
                f"{docker.expose()}"
            )
        variable, probe_port = healthcheck_port(service.kind)
        if variable not in compose.environment(name) and probe_port != port:
            problems.append(
                f"{where}: service {name} listens on {port}; its image's HEALTHCHECK dials "
                f"{probe_port}"
            )

    # The coordinators reach each node by a name in the node's certificate, on its port.
    for cname, coordinator in coordinators.items():
        assert isinstance(coordinator, CoordinatorSettings)
        addressed: set[str] = set()
        for entry in coordinator.nodes:
            host, _, port_text = entry.address.rpartition(":")
            label = f"{where}: service {cname} node {entry.id} at {entry.address}"
            node = nodes.get(host)
            if node is None:
                problems.append(
                    f"{label}: {host} is no service running `node serve` ({', '.join(nodes)})"
                )
                continue
            assert isinstance(node, NodeSettings)
            addressed.add(host)
            if (node.node_id, node.chain, node.department) != (
                entry.id,
                entry.chain,
                entry.department,
            ):
                problems.append(
                    f"{label}: the node's settings say "
                    f"{node.node_id}/{node.chain.value}/{node.department}"
                )
            if port_of("node", node) != int(port_text):
                problems.append(f"{label}: the node listens on {node.listen}")
            if not compose.networks(cname) & compose.networks(host):
                problems.append(f"{label}: the two services share no network")
            assert node.tls is not None
            sans = certificate_info(node.tls.cert)["sans"]
            if f"DNS:{host}" not in sans:
                problems.append(f"{label}: the node's certificate names {sans}, not {host}")
            tls = coordinator.tls.get(entry.chain)
            if tls is None or tls.ca.read_bytes() != node.tls.ca.read_bytes():
                problems.append(f"{label}: coordinator and node trust different CAs")
            for model in node.models:
                if model not in {m.id for m in coordinator.models}:
                    problems.append(
                        f"{label}: the node has weights for {model}, a model the coordinator does "
                        "not publish"
                    )
        for orphan in sorted(set(nodes) - addressed):
            problems.append(
                f"{where}: service {orphan} runs a node that coordinator {cname} does not address"
            )

    # Only the coordinators reach a node: any other service on one of its networks is
    # PostgreSQL or the node's own migration (same settings file).
    for node_name in nodes:
        node_config = compose.host_file(
            node_name, config_arg(compose.creditshare_args(node_name) or []) or ""
        )
        for other in compose.services:
            shared = compose.networks(node_name) & compose.networks(other)
            if other == node_name or not shared:
                continue
            other_args = compose.creditshare_args(other)
            if serves(other_args, "coordinator") or other == "postgres":
                continue
            if (
                upgrades(other_args, "node")
                and compose.host_file(other, config_arg(other_args or []) or "") == node_config
            ):
                continue
            problems.append(
                f"{where}: service {other} shares network(s) {', '.join(sorted(shared))} with "
                f"node {node_name}: only the coordinators should reach a node"
            )

    # Databases: each service's URL names a role and database that init-databases.sh creates,
    # with the password the postgres service gets for it.
    roles = _postgres_roles()
    for name, service in loaded.items():
        url = make_url(database_url(service.settings))
        label = f"{where}: service {name} database_url"
        host = url.host or ""
        if not url.drivername.startswith("postgresql"):
            problems.append(f"{label} is {url.drivername}, not PostgreSQL")
            continue
        if host not in compose.services or not str(
            compose.services[host].get("image", "")
        ).startswith("postgres:15"):
            problems.append(f"{label}: host {host} is no postgres:15 service")
            continue
        if not compose.networks(name) & compose.networks(host):
            problems.append(f"{label}: service {name} shares no network with {host}")
        if (url.port or 5432) != 5432:
            problems.append(f"{label}: port {url.port}, PostgreSQL listens on 5432")
        role = roles.get(url.username or "")
        if role is None or url.database != role[0]:
            problems.append(
                f"{label}: {url.username}@{url.database} is not made by {rel(POSTGRES_INIT)} "
                f"({', '.join(roles)})"
            )
        elif compose.environment(host).get(role[1]) != url.password:
            problems.append(
                f"{label}: the password is not the {role[1]} the postgres service creates it with"
            )

    # Migrations run first: every serving service waits for a `db upgrade` of the same
    # database, which waits for PostgreSQL.
    for name, service in loaded.items():
        if not serves(compose.creditshare_args(name), service.kind):
            continue
        own_url = database_url(service.settings)
        upgrades_first = [
            d
            for d, condition in compose.depends_on(name).items()
            if condition == "service_completed_successfully"
            and upgrades(compose.creditshare_args(d), service.kind)
            and d in loaded
            and database_url(loaded[d].settings) == own_url
        ]
        if not upgrades_first:
            problems.append(
                f"{where}: service {name} does not wait for a `db upgrade {service.kind}` of its "
                "database"
            )
    for name in loaded:
        waits = compose.depends_on(name).get("postgres")
        if upgrades(compose.creditshare_args(name), loaded[name].kind) and (
            waits != "service_healthy"
        ):
            problems.append(f"{where}: service {name} does not wait for postgres to be healthy")

    # SIGTERM lets in-flight work finish for shutdown_grace_seconds: compose must wait longer
    # before it kills.
    for name, service in loaded.items():
        if serves(compose.creditshare_args(name), service.kind):
            grace = float(getattr(service.settings, "shutdown_grace_seconds", 0.0))
            stop = duration_seconds(str(compose.services[name].get("stop_grace_period", "10s")))
            if stop <= grace:
                problems.append(
                    f"{where}: service {name} stop_grace_period {stop:g}s is not above its "
                    f"shutdown_grace_seconds {grace:g}"
                )
    for name, settings in coordinators.items():
        problems += replica_problems(f"{where}: service {name}", len(coordinators), settings)

    # HAProxy sends to every coordinator replica, on its port, and checks a real route.
    problems += _haproxy_problems(compose, coordinators)
    report(problems)


def _haproxy_config() -> tuple[list[int], list[tuple[str, str, int]], list[str]]:
    """(bind ports, servers as (name, host, port), health-check paths)."""
    binds: list[int] = []
    servers: list[tuple[str, str, int]] = []
    checks: list[str] = []
    for line in HAPROXY_CFG.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] == ["bind"]:
            binds.append(int(words[1].rsplit(":", 1)[1]))
        elif words[:1] == ["server"]:
            host, _, port = words[2].rpartition(":")
            servers.append((words[1], host, int(port)))
        elif words[:2] == ["option", "httpchk"]:
            checks.append(words[-1])
    return binds, servers, checks


def _haproxy_problems(compose: Compose, coordinators: Mapping[str, BaseSettings]) -> list[str]:
    where = rel(HAPROXY_CFG)
    problems: list[str] = []
    binds, servers, _ = _haproxy_config()
    proxies = [
        n
        for n in compose.services
        if compose.host_file(n, "/usr/local/etc/haproxy/haproxy.cfg") == HAPROXY_CFG.resolve()
    ]
    if len(proxies) != 1:
        return [f"{rel(COMPOSE_FILE)}: expected one service mounting {where}, found {proxies}"]
    proxy = proxies[0]
    published = [str(p).rsplit(":", 1)[-1] for p in compose.services[proxy].get("ports", [])]
    for port in binds:
        if str(port) not in published:
            problems.append(
                f"{rel(COMPOSE_FILE)}: {proxy} publishes {published}, HAProxy binds {port}"
            )
    for server, host, port in servers:
        settings = coordinators.get(host)
        if settings is None:
            problems.append(f"{where}: server {server} -> {host}, which runs no coordinator")
        elif port != port_of("coordinator", settings):
            problems.append(
                f"{where}: server {server} -> port {port}; {host} listens on "
                f"{port_of('coordinator', settings)}"
            )
        elif not compose.networks(proxy) & compose.networks(host):
            problems.append(f"{where}: {proxy} shares no network with {host}")
    for missing in sorted(set(coordinators) - {h for _, h, _ in servers}):
        problems.append(f"{where}: coordinator replica {missing} is not behind the proxy")
    if not re.search(r"^\s*http-request deny\b.*\s/metrics\b", HAPROXY_CFG.read_text(), re.M):
        problems.append(f"{where}: forwards /metrics (per replica, for Prometheus) to the public")
    return problems


def duration_seconds(text: str) -> float:
    """A compose duration (``30s``, ``1m30s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def replica_problems(where: str, replicas: int, settings: BaseSettings) -> list[str]:
    """Several coordinator replicas must count rate limits in their shared database."""
    store = getattr(settings, "rate_limit_store", None)
    if replicas > 1 and store not in (None, "database"):
        return [f"{where}: {replicas} replicas with rate_limit_store = {store!r}, not 'database'"]
    return []


# ===================================================================== tests: Kubernetes


def test_kubernetes_references_resolve(compose: Compose) -> None:
    problems: list[str] = []
    for container in k8s_containers(compose):
        _, found = container.env()
        problems += found
        for mount in container.spec.get("volumeMounts", []):
            volume = container.volume(str(mount["name"]))
            if volume is None:
                problems.append(f"{container.where}: volumeMount {mount['name']} has no volume")
            elif "configMap" in volume and not k8s_lookup("ConfigMap", volume["configMap"]["name"]):
                problems.append(
                    f"{container.where}: ConfigMap {volume['configMap']['name']} is defined nowhere"
                )
            elif "secret" in volume and not k8s_lookup("Secret", volume["secret"]["secretName"]):
                problems.append(
                    f"{container.where}: Secret {volume['secret']['secretName']} is defined nowhere"
                )
    namespaces = {o.name for o in APPLIED if o.kind == "Namespace"}
    for obj in K8S:
        if obj.kind != "Namespace" and obj.doc["metadata"].get("namespace") not in namespaces:
            problems.append(
                f"{obj.where}: namespace {obj.doc['metadata'].get('namespace')} is not one of "
                f"{namespaces}"
            )
    applied_secrets = [o.where for o in APPLIED if o.kind == "Secret"]
    if applied_secrets:
        problems.append(
            f"placeholder Secrets would be applied: {applied_secrets} (keep them in examples/)"
        )
    report(problems)


def test_kubernetes_workloads_load_their_settings(
    compose: Compose, pki: PkiOutput, tmp_path: Path
) -> None:
    loaded, problems = k8s_settings(compose, pki, tmp_path)
    kinds = {s.kind for _, s in loaded}
    if kinds != set(SETTINGS):
        problems.append(f"{rel(KUBERNETES)}: loaded settings only for {sorted(kinds)}")
    report(problems)


def test_kubernetes_wiring_agrees_across_objects(
    compose: Compose, pki: PkiOutput, tmp_path: Path
) -> None:
    loaded, problems = k8s_settings(compose, pki, tmp_path)
    serving = [(c, s) for c, s in loaded if serves(c.creditshare_args(), s.kind)]
    services = [o for o in APPLIED if o.kind == "Service"]

    for container, service in serving:
        port = port_of(service.kind, service.settings)
        if port not in container.ports().values():
            problems.append(
                f"{container.where}: listens on {port}, declares ports {container.ports()}"
            )
        for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.spec.get(probe_name)
            if probe is None:
                if probe_name != "startupProbe":
                    problems.append(f"{container.where}: no {probe_name}")
                continue
            action = probe.get("httpGet") or probe.get("tcpSocket") or {}
            if container.port(action.get("port", -1)) != port:
                problems.append(
                    f"{container.where}: {probe_name} port {action.get('port')} is not the listen "
                    f"port {port}"
                )
            if service.kind == "node" and "tcpSocket" not in probe:
                problems.append(
                    f"{container.where}: {probe_name} should be tcpSocket (gRPC is behind mTLS)"
                )
            if service.kind == "coordinator" and "httpGet" not in probe:
                problems.append(f"{container.where}: {probe_name} should be httpGet")
        if service.kind == "coordinator":
            replicas = int(container.owner.doc["spec"].get("replicas", 1))
            if replicas < 2:
                problems.append(
                    f"{container.owner.where}: {replicas} replica(s), expected two or more"
                )
            problems += replica_problems(container.owner.where, replicas, service.settings)
        pre_stop = container.spec.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        pause = pre_stop.get("command", [])
        pause_seconds = float(pause[1]) if pause[:1] == ["sleep"] and len(pause) == 2 else 0.0
        grace = float(getattr(service.settings, "shutdown_grace_seconds", 0.0))
        kill = float(container.pod.get("terminationGracePeriodSeconds", 30))
        if kill <= grace + pause_seconds:
            problems.append(
                f"{container.owner.where}: terminationGracePeriodSeconds {kill:g} is not above "
                f"preStop {pause_seconds:g}s + shutdown_grace_seconds {grace:g}"
            )
        annotations = container.owner.doc["spec"]["template"]["metadata"].get("annotations", {})
        scrape_port = annotations.get("prometheus.io/port")
        if scrape_port is not None and int(scrape_port) != port:
            problems.append(
                f"{container.owner.where}: prometheus.io/port {scrape_port} is not the listen "
                f"port {port}"
            )

    for container in k8s_containers(compose):
        resources = container.spec.get("resources", {})
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(part, {}):
                    problems.append(f"{container.where}: no resources.{part}.{resource}")
        if not container.pod.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{container.where}: the pod does not set runAsNonRoot")

    # Services point at a declared container port of the pods they select.
    def backends(svc: K8sObject) -> list[K8sContainer]:
        selector = svc.doc["spec"].get("selector", {})
        return [c for c, _ in serving if selects(selector, c.owner.pod_labels)]

    for svc in services:
        pods = backends(svc)
        if not pods:
            problems.append(f"{svc.where}: selects no serving pod")
        for port in svc.doc["spec"]["ports"]:
            for container in pods:
                if container.port(port.get("targetPort", port["port"])) is None:
                    problems.append(
                        f"{svc.where}: targetPort {port.get('targetPort')} is no port of "
                        f"{container.where}"
                    )

    # The coordinator dials each node through a Service that reaches exactly that node.
    nodes = {c.owner.name: (c, s.settings) for c, s in serving if s.kind == "node"}
    for container, service in serving:
        if service.kind != "coordinator":
            continue
        assert isinstance(service.settings, CoordinatorSettings)
        for entry in service.settings.nodes:
            host, _, port_text = entry.address.rpartition(":")
            label = f"{container.where}: node {entry.id} at {entry.address}"
            svc_name = host.split(".")[0]
            target = next((s for s in services if s.name == svc_name), None)
            if target is None:
                problems.append(f"{label}: no Service {svc_name}")
                continue
            svc_ports = [p for p in target.doc["spec"]["ports"] if int(p["port"]) == int(port_text)]
            if not svc_ports:
                problems.append(f"{label}: Service {svc_name} has no port {port_text}")
            targets = [(c, s) for c, s in nodes.values() if c in backends(target)]
            if len(targets) != 1:
                problems.append(
                    f"{label}: Service {svc_name} selects {len(targets)} node workloads"
                )
                continue
            node_container, node = targets[0]
            assert isinstance(node, NodeSettings)
            if (node.node_id, node.chain, node.department) != (
                entry.id,
                entry.chain,
                entry.department,
            ):
                problems.append(f"{label}: Service {svc_name} reaches node {node.node_id}")
            for p in svc_ports:
                if node_container.port(p.get("targetPort", p["port"])) != port_of("node", node):
                    problems.append(
                        f"{label}: Service {svc_name} does not forward to the listen port"
                    )
            assert node.tls is not None
            sans = certificate_info(node.tls.cert)["sans"]
            if f"DNS:{host}" not in sans:
                problems.append(f"{label}: the node certificate names {sans}, not {host}")

    problems += _network_policy_problems(serving)
    report(problems)


def _network_policy_problems(serving: Sequence[tuple[K8sContainer, ServiceSettings]]) -> list[str]:
    """Node pods admit connections from coordinator pods only, on the listen port only."""
    problems: list[str] = []
    policies = [o for o in APPLIED if o.kind == "NetworkPolicy"]
    coordinators = [c.owner.pod_labels for c, s in serving if s.kind == "coordinator"]
    others = [
        o.pod_labels for o in APPLIED if o.pod_spec is not None and o.pod_labels not in coordinators
    ]
    for container, node in serving:
        if node.kind != "node":
            continue
        labels = container.owner.pod_labels
        covering = [
            p
            for p in policies
            if selects(p.doc["spec"]["podSelector"].get("matchLabels", {}), labels)
        ]
        if not covering:
            problems.append(f"{container.where}: no NetworkPolicy selects this node's pods")
            continue
        port = port_of("node", node.settings)
        coordinator_admitted = False
        for policy in covering:
            if "Ingress" not in policy.doc["spec"].get("policyTypes", ["Ingress"]):
                problems.append(f"{policy.where}: does not restrict ingress")
            for rule in policy.doc["spec"].get("ingress", []):
                ports = [p.get("port") for p in rule.get("ports", [])]
                if not ports or any(container.port(p) != port for p in ports):
                    problems.append(
                        f"{policy.where}: lets traffic in on {ports or 'every port'}, "
                        f"not only the listen port {port}"
                    )
                if not rule.get("from"):
                    problems.append(f"{policy.where}: an ingress rule admits every source")
                for peer in rule.get("from", []):
                    selector = peer.get("podSelector", {}).get("matchLabels")
                    if selector is None or "namespaceSelector" in peer or "ipBlock" in peer:
                        problems.append(f"{policy.where}: admits a peer other than pods: {peer}")
                        continue
                    coordinator_admitted |= any(selects(selector, c) for c in coordinators)
                    admitted = [o for o in others if selects(selector, o)]
                    if admitted:
                        problems.append(
                            f"{policy.where}: its peer selector {selector} also admits {admitted}"
                        )
        if not coordinator_admitted:
            problems.append(f"{container.where}: no NetworkPolicy admits the coordinator pods")
    return problems


# ===================================================================== tests: probe paths


def test_probe_paths_are_coordinator_routes(app_client: TestClient, compose: Compose) -> None:
    problems: list[str] = []
    paths: list[tuple[str, str]] = []
    _, command = DOCKER["coordinator"].healthcheck()
    paths += [
        (f"{rel(DOCKERFILES['coordinator'])} HEALTHCHECK", p)
        for p in re.findall(r"(/[a-z]+)'", command[-1])
    ]
    paths += [(rel(HAPROXY_CFG), p) for p in _haproxy_config()[2]]
    for container in k8s_containers(compose):
        for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
            http = container.spec.get(probe_name, {}).get("httpGet")
            if http:
                paths.append((f"{container.where} {probe_name}", str(http["path"])))
    for obj in APPLIED:
        template = obj.doc.get("spec", {}).get("template", {})
        scrape = template.get("metadata", {}).get("annotations", {}).get("prometheus.io/path")
        if scrape:
            paths.append((f"{obj.where} prometheus.io/path", str(scrape)))
    assert paths
    for where, path in paths:
        problem = route_problem(app_client, path, where)
        if problem:
            problems.append(problem)
    report(problems)


# ===================================================================== tests: README tables


@pytest.mark.parametrize("kind", sorted(READMES))
def test_readme_settings_table_lists_exactly_the_settings_fields(kind: str) -> None:
    path = READMES[kind]
    where = rel(path)
    table = readme_table(path)
    assert table, f"{where}: no settings table (header `{TABLE_HEADER}`)"
    expected = {row.cells()[0]: row for row in settings_rows(kind)}
    listed = [row[0] for row in table]
    problems: list[str] = []
    cls = SETTINGS[kind].__name__
    for name in expected:
        if name not in listed:
            problems.append(f"{where}: setting {name} of {cls} is missing from the table")
    for row in table:
        if len(row) != 5:
            problems.append(f"{where}: row {row} does not have five cells")
            continue
        if row[0] not in expected:
            problems.append(f"{where}: lists {row[0]}, which is no field of {cls}")
            continue
        want = expected[row[0]].cells()
        for column, got, should in zip(
            ("type", "default", "environment variable"), row[1:4], want[1:], strict=True
        ):
            if got != should:
                problems.append(
                    f"{where}: {row[0]} {column} says {got!r}, the code says {should!r}"
                )
        if not row[4] or row[4] == "TODO":
            problems.append(f"{where}: {row[0]} has no meaning")
    if [n for n in listed if n in expected] != [n for n in expected if n in listed]:
        problems.append(f"{where}: rows are not in the settings class's field order")
    if problems:
        problems.append(f"regenerate with: python {rel(Path(__file__))} {kind}")
    report(problems)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in READMES:
        sys.exit(f"usage: python {rel(Path(__file__))} {'|'.join(READMES)}")
    print(render_table(sys.argv[1]))
