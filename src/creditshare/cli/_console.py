"""``creditshare console``: serve a participant's web console on its own machine."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from creditshare._settings import load_settings
from creditshare.cli._common import console

__all__ = ["console_command", "write_private"]


def console_command(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML settings file (role, coordinator_url, api_key, identity, key_file, "
            "node_config, ...; see README, 'Web console'); CREDITSHARE_CONSOLE_* override it",
        ),
    ] = None,
    port: Annotated[int | None, typer.Option(help="listen port (0: any free one)")] = None,
) -> None:
    """Serve the web console of one participant (bank, enterprise, bureau, department,
    operator, regulator) on loopback; prints the login link (also written to work_dir/login-url)."""
    import uvicorn

    from creditshare.console import ConsoleSettings, create_console_app

    overrides = {} if port is None else {"port": port}
    settings = load_settings(ConsoleSettings, config, **overrides)
    listener = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((settings.host, settings.port))
    # Listening before the login link is written: whoever reads the link at once (a
    # test, a script) is queued until uvicorn serves, never refused.
    listener.listen(128)
    bound = listener.getsockname()[1]
    # The port it got (port 0: any free one) names its session cookie.
    app = create_console_app(settings.model_copy(update={"port": bound}))
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    link = f"http://{host}:{bound}/login?token={app.state.console.sessions.login_token}"
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    write_private(settings.work_dir / "login-url", link + "\n")
    console.print(f"{settings.role} console on http://{host}:{bound}/")
    console.print(f"log in (this machine only): {link}", soft_wrap=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[listener])


def write_private(target: Path, text: str) -> None:
    """``text`` in a new file ``target`` only its owner can read (0600).

    The file is removed and made afresh: opening an existing one would keep its mode
    (a login link left 0644 by hand stays readable by every local user) and would
    follow a symlink planted there to wherever it points. ``O_EXCL | O_NOFOLLOW``
    refuses to reuse anything that appears in between."""
    target.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
