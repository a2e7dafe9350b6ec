"""Browser tests: real consoles (``creditshare console`` processes) against the session's
real federation, driven by Playwright in Debian's Chromium (``/usr/bin/chromium``,
installed by ``.ci/run``; Playwright never downloads a browser here).

Every page a test opens goes through ``open_console``: the browser may reach the console
and nothing else (every other request is aborted and recorded, and the test fails if
there was one), and script errors or CSP violations fail the test too. ``check_page``
runs axe-core (vendored from npm in ``vendor/``) and keeps a screenshot in
``$CREDITSHARE_ARTIFACTS/screenshots`` (default ``test-artifacts/screenshots``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from creditshare.client import save_key
from creditshare.crypto import PrivateKey

from ..conftest import Trust

CHROMIUM = Path(os.environ.get("CREDITSHARE_CHROMIUM", "/usr/bin/chromium"))
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
ARTIFACTS = Path(os.environ.get("CREDITSHARE_ARTIFACTS", "test-artifacts")) / "screenshots"
#: Chromium on a closed network: no background connections, no sandbox as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
#: The axe rule sets checked: WCAG 2.1 A and AA, and axe's best practices.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
START_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module. Not per session: Playwright's sync API
    keeps an asyncio loop marked running in this thread while it is started, and every
    later test that runs a loop of its own (``asyncio.run``, ``run_until_complete``)
    would fail with "another loop is running"; stopping it clears that."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Console:
    """A running ``creditshare console`` process."""

    role: str
    url: str
    login_url: str
    work_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _toml(settings: dict[str, Any]) -> str:
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        else:  # JSON string escapes are valid TOML basic-string escapes
            lines.append(f"{key} = {json.dumps(str(value))}")
    return "\n".join(lines) + "\n"


def start_console(folder: Path, role: str, **settings: Any) -> Console:
    """Start a console process for ``role`` with ``settings`` (paths, keys, URLs) on a
    free loopback port; returns once its login link is written."""
    work_dir = folder / f"console-{role}"
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "console.toml"
    config.write_text(
        _toml({"role": role, "port": 0, "work_dir": str(work_dir), **settings}), encoding="utf-8"
    )
    log = work_dir / "console.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITSHARE_CONSOLE_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "creditshare", "console", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    link_file = work_dir / "login-url"
    deadline = time.monotonic() + START_TIMEOUT
    while not link_file.exists() or not link_file.read_text().strip():
        if process.poll() is not None:
            raise RuntimeError(f"the {role} console exited: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the {role} console did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    login_url = link_file.read_text().strip()
    parts = urlsplit(login_url)
    return Console(role, f"{parts.scheme}://{parts.netloc}", login_url, work_dir, process, log)


@dataclass
class Consoles:
    """Consoles a test started; all stopped at its end."""

    folder: Path
    started: list[Console] = field(default_factory=list)

    def start(self, role: str, **settings: Any) -> Console:
        console = start_console(self.folder, role, **settings)
        self.started.append(console)
        return console


@pytest.fixture
def consoles(tmp_path: Path) -> Iterator[Consoles]:
    started = Consoles(tmp_path)
    yield started
    for console in started.started:
        console.stop()


def paillier_key_file(folder: Path) -> Path:
    """A fresh 2048-bit Paillier key, saved where a bank's or bureau's console reads it."""
    path = folder / "paillier-key.json"
    save_key(PrivateKey.generate(), path)
    return path


def participant_console_settings(
    trust: Trust, folder: Path, participant_id: str, role: str, name: str
) -> dict[str, Any]:
    """Register a bank or bureau on the federation (credentials uploaded) and return the
    settings its console needs: coordinator, API key, identity folder, Paillier key."""
    api_key, _ = trust.participant(participant_id, role, name)
    return {
        "coordinator_url": trust.url,
        "api_key": api_key,
        "identity": str(trust.layout.identity_dir(participant_id, role)),
        "key_file": str(paillier_key_file(folder / participant_id)),
    }


@dataclass
class Watch:
    """What a page did that it must not: requests to other hosts, script errors."""

    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert not self.blocked, f"the page asked hosts other than its console: {self.blocked}"
        assert not self.errors, f"the page logged errors: {self.errors}"


@contextmanager
def open_console(browser: Any, console: Console, language: str = "en") -> Iterator[Any]:
    """A logged-in page on ``console`` in a fresh browser context that can reach the
    console's own origin only; fails the test if the page asked anything else or
    logged an error (a CSP violation is one)."""
    own = urlsplit(console.url).netloc
    watch = Watch()
    context = browser.new_context(locale="zh-CN" if language == "zh" else "en-US")

    def route(request_route: Any) -> None:
        if urlsplit(request_route.request.url).netloc == own:
            request_route.continue_()
        else:
            watch.blocked.append(request_route.request.url)
            request_route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda exc: watch.errors.append(f"script error: {exc}"))
    page.on(
        "console",
        lambda message: (
            watch.errors.append(f"console {message.type}: {message.text}")
            if message.type == "error" and not _refused_form(message.text)
            else None
        ),
    )
    try:
        page.goto(console.login_url)
        page.goto(f"{console.url}/lang/{language}?back=/")
        yield page
        watch.check()
    finally:
        context.close()


#: Chromium logs every 4xx answer as a console error; a form's refusal (422, 409) is an
#: answer the page shows next to its field, not a fault of the page.
_REFUSAL = re.compile(
    r"^Failed to load resource: the server responded with a status of (422|409)\b"
)


def _refused_form(text: str) -> bool:
    return _REFUSAL.match(text) is not None


def check_page(page: Any, name: str) -> None:
    """Run axe-core on the page as it is now (WCAG 2.1 AA and best practices): no
    violation allowed; then keep a full-page screenshot named ``name``."""
    page.wait_for_load_state("networkidle")
    # Evaluated over the DevTools protocol, which the page's CSP does not govern (the
    # page itself may load scripts from its console only).
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate(
        "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})",
        AXE_TAGS,
    )
    violations = [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(n["target"]) for n in v["nodes"][:5])
        for v in result["violations"]
    ]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{_slug(name)}.png"), full_page=True)
    assert not violations, f"accessibility violations on {name}:\n" + "\n".join(violations)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")
