"""The coordinator's /docs renders in a browser that can reach the coordinator and
nothing else (a chain's intranet): Swagger UI, its styles and the API document all
come from the coordinator itself."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from creditshare.demo import Federation

from .conftest import ARTIFACTS


def test_docs_render_with_every_other_host_blocked(browser: Any, federation: Federation) -> None:
    url = federation.layout.coordinator_url
    own = urlsplit(url).netloc
    loaded: list[str] = []
    blocked: list[str] = []
    errors: list[str] = []
    context = browser.new_context()

    def route(request_route: Any) -> None:
        target = request_route.request.url
        if urlsplit(target).netloc == own:
            loaded.append(urlsplit(target).path)
            request_route.continue_()
        else:
            blocked.append(target)
            request_route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"script error: {exc}"))
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    try:
        page.goto(f"{url}/docs")
        # Swagger UI renders the document's title, then one section per tag.
        title = page.locator(".information-container .title")
        title.wait_for(timeout=60_000)
        assert re.match(r"creditshare coordinator", title.inner_text())
        page.locator(".opblock-tag", has_text="registry").first.wait_for(timeout=60_000)
        assert page.locator(".opblock-summary-path", has_text="/v1/nodes").count() >= 1
        page.wait_for_load_state("networkidle")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "coordinator-docs.png"), full_page=True)
    finally:
        context.close()
    assert not blocked, f"/docs asked hosts other than the coordinator: {blocked}"
    assert not errors, f"/docs logged errors: {errors}"
    assert {
        "/docs",
        "/static/swagger/swagger-ui-bundle.js",
        "/static/swagger/swagger-ui.css",
        "/openapi.json",
    } <= set(loaded)
