"""Pages every role's console has: landing, login, logout, language, health."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from creditshare.console._i18n import LANGUAGES
from creditshare.console._render import LANG_COOKIE, page
from creditshare.console._state import console_state

__all__ = ["router"]

router = APIRouter()

#: Where the language switch may send the browser back to: a path of this console only
#: (no ``//host``, no ``/\host`` that browsers read as ``//host``, no scheme, no query).
_LOCAL_PATH = re.compile(r"^/[A-Za-z0-9/_.-]*$")


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    """The role's landing page once logged in; how to log in before."""
    state = console_state(request)
    if state.sessions.csrf_token(request.cookies.get(state.cookie)) is None:
        return page(request, "login.html", status_code=401)
    if state.navigation:
        return RedirectResponse(state.navigation[0][0], status_code=303)
    return page(request, "home.html")


@router.get("/login")
def login(request: Request, token: str = "") -> Response:
    state = console_state(request)
    session = state.sessions.login(token)
    if session is None:
        return page(request, "login.html", status_code=401, refused=True)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(state.cookie, session, httponly=True, samesite="strict", path="/")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    state = console_state(request)
    state.sessions.logout(request.cookies.get(state.cookie))
    # htmx (the header's button) is told to load the login page itself: a redirect
    # would be followed inside the request and the page's 401 never shown.
    response: Response = (
        Response(status_code=204, headers={"HX-Redirect": "/"})
        if request.headers.get("HX-Request")
        else RedirectResponse("/", status_code=303)
    )
    response.delete_cookie(state.cookie, path="/")
    return response


@router.get("/lang/{language}")
def switch_language(request: Request, language: str, back: str = "/") -> Response:
    """Remember the chosen language; back to the page it was chosen on (a local path).

    Open without a session (the login page has the switch too), so ``back`` is all a
    link elsewhere could aim: anything but a plain local path goes to ``/``."""
    if language not in LANGUAGES:
        language = console_state(request).settings.language
    if not _LOCAL_PATH.fullmatch(back) or back.startswith("//"):
        back = "/"
    response = RedirectResponse(back, status_code=303)
    response.set_cookie(LANG_COOKIE, language, samesite="strict", path="/")
    return response


@router.get("/healthz")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})
