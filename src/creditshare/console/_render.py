"""Rendering pages: the package's Jinja2 templates with what every page needs.

Every page gets ``t`` (its words in the chosen language), ``lang``, the role, the role's
navigation, the session's CSRF token and ``errors`` (a ``FormErrors``, empty unless a
form was refused). Templates autoescape: nothing the coordinator or a node sends is
ever rendered as markup.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from creditshare import __version__
from creditshare.console._auth import CSRF_FIELD, CSRF_HEADER
from creditshare.console._forms import FormErrors
from creditshare.console._i18n import LANGUAGES
from creditshare.console._state import console_state

__all__ = ["LANG_COOKIE", "language_of", "page", "templates"]

LANG_COOKIE = "creditshare_lang"

templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(str(resources.files("creditshare.console") / "templates")),
        autoescape=True,
    )
)


def language_of(request: Request) -> str:
    """``?lang=``, else the language cookie, else the console's default."""
    for choice in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
        if choice in LANGUAGES:
            return choice
    return console_state(request).settings.language


def page(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    errors: FormErrors | None = None,
    **context: Any,
) -> HTMLResponse:
    """``template`` rendered for this request (status 422 is for a refused form)."""
    state = console_state(request)
    language = language_of(request)

    def t(key: str, **values: Any) -> str:
        return state.catalog.text(language, key, **values)

    response: HTMLResponse = templates.TemplateResponse(
        request,
        template,
        {
            "t": t,
            "lang": language,
            "role": state.settings.role,
            "navigation": state.navigation,
            "csrf": state.sessions.csrf_token(request.cookies.get(state.cookie)) or "",
            "csrf_field": CSRF_FIELD,
            "csrf_header": CSRF_HEADER,
            "errors": errors or FormErrors(),
            "version": __version__,
            "participant": state.participant,
            **context,
        },
        status_code=status_code,
    )
    return response
