"""The console's FastAPI app: the role's pages, the package's assets, and the guards.

Guards, in order, for every request but the login link, the language switch, assets and
the health probe: a live session cookie (else 401 with how to log in); for a request that changes
anything, the same origin (``Origin``/``Sec-Fetch-Site``, so another site's page cannot
post through the user's browser) and the session's CSRF token in ``X-CSRF-Token``
(htmx sends it from ``<body hx-headers>``). Every response forbids framing and loads
scripts, styles and images from the console alone (CSP): the pages need no other host.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi.staticfiles import StaticFiles

from creditshare.client import CreditShareClient
from creditshare.console import _home
from creditshare.console._auth import CSRF_HEADER, Sessions, cookie_name
from creditshare.console._roles import role_pages
from creditshare.console._settings import ConsoleSettings
from creditshare.console._state import ConsoleState, open_client

__all__ = ["create_console_app"]

#: Paths served without a session: the login link, assets, the probe, the language switch.
_OPEN = ("/login", "/static/", "/healthz", "/favicon.ico", "/lang/")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_console_app(
    settings: ConsoleSettings, client: CreditShareClient | None = None
) -> FastAPI:
    """The console for ``settings.role``; ``client`` replaces the one the settings
    describe (tests), else it is opened now, every key file read at once."""
    router, navigation = role_pages(settings.role)
    state = ConsoleState(
        settings=settings,
        client=client or open_client(settings),
        sessions=Sessions(
            cookie=cookie_name(settings.port), idle=settings.session_idle_minutes * 60.0
        ),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if state.client is not None:
            state.client.close()

    app = FastAPI(
        title="creditshare console",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    state.navigation = navigation
    if settings.identity is not None and state.client is not None:
        state.participant = state.client.identity.participant_id
    app.state.console = state
    app.mount(
        "/static",
        StaticFiles(directory=str(resources.files("creditshare.console") / "static")),
        name="static",
    )
    app.include_router(_home.router)
    app.include_router(router)

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        refusal = _refusal(request, state)
        response = refusal if refusal is not None else await call_next(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app


def _refusal(request: Request, state: ConsoleState) -> Response | None:
    path = request.url.path
    if path == "/" and request.method in _SAFE_METHODS and state.cookie not in request.cookies:
        return None  # the landing page explains how to log in
    if any(path == p or (p.endswith("/") and path.startswith(p)) for p in _OPEN):
        return None
    session = request.cookies.get(state.cookie)
    if state.sessions.csrf_token(session) is None:
        return PlainTextResponse(
            "Not logged in: open the login link the console printed at start "
            "(also in its work folder, file login-url).",
            status_code=401,
        )
    if request.method in _SAFE_METHODS:
        return None
    if not _same_origin(request):
        return PlainTextResponse("Refused: this request came from another site.", 403)
    given = request.headers.get(CSRF_HEADER, "")
    if not state.sessions.csrf_ok(session, given):
        return PlainTextResponse(
            "Refused: the page's form token is missing or stale; reload the page.", 403
        )
    return None


def _same_origin(request: Request) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return site is not None  # a browser that sent Sec-Fetch-Site said same-origin
    host = request.headers.get("host", "")
    return hmac.compare_digest(urlsplit(origin).netloc.encode(), host.encode())
