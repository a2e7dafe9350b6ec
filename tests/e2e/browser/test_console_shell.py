"""What every console has, whatever its role: the login link, the guards, the language
switch, and pages that need no host but the console."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from ..conftest import Trust
from .conftest import Consoles, check_page, open_console

pytestmark = pytest.mark.e2e


def test_only_the_printed_link_logs_in_and_forms_need_the_session_token(
    consoles: Consoles, trust: Trust
) -> None:
    console = consoles.start("operator", coordinator_url=trust.url, api_key=trust.operator_api_key)
    with httpx.Client(base_url=console.url, follow_redirects=False) as anonymous:
        assert anonymous.get("/logout").status_code in (401, 405)
        landing = anonymous.get("/")
        assert landing.status_code == 401 and "login-url" in landing.text
        assert anonymous.get("/login", params={"token": "x" * 43}).status_code == 401
        assert "Content-Security-Policy" in landing.headers
        assert landing.headers["X-Frame-Options"] == "DENY"
    with httpx.Client(base_url=console.url, follow_redirects=False) as user:
        token = console.login_url.split("token=", 1)[1]
        logged = user.get("/login", params={"token": token})
        assert logged.status_code == 303
        # The console names its own cookie (by port, and at random): cookies ignore ports.
        names = [n for n in logged.cookies if n.startswith("creditshare_console_")]
        assert len(names) == 1 and names[0].startswith(
            f"creditshare_console_{urlsplit(console.url).port}_"
        )
        cookie = logged.cookies.get(names[0])
        assert cookie and "httponly" in logged.headers["set-cookie"].lower()
        assert "samesite=strict" in logged.headers["set-cookie"].lower()
        # Logged in, but a POST without the page's token, or from another site, is refused.
        assert user.post("/logout").status_code == 403
        foreign = user.post(
            "/logout", headers={"Origin": "http://evil.example", "X-CSRF-Token": "x"}
        )
        assert foreign.status_code == 403 and "another site" in foreign.text


def test_the_shell_is_chinese_by_default_switches_to_english_and_needs_no_other_host(
    consoles: Consoles, trust: Trust, browser: object
) -> None:
    console = consoles.start("operator", coordinator_url=trust.url, api_key=trust.operator_api_key)
    with open_console(browser, console, language="zh") as page:
        page.goto(console.url + "/")
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        assert "控制台" in page.title()
        check_page(page, "shell-zh")
        page.get_by_role("link", name="English").click()
        page.wait_for_load_state()
        assert page.locator("html").get_attribute("lang") == "en"
        assert "console" in page.title()
        check_page(page, "shell-en")
