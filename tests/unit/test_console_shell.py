"""The console's shell without a browser: settings, words, form errors, sessions."""

from __future__ import annotations

import re
import stat
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from creditshare._settings import load_settings
from creditshare.cli._console import write_private
from creditshare.console import ROLES, ConsoleSettings, create_console_app
from creditshare.console._auth import CSRF_HEADER, Sessions
from creditshare.console._format import utc_time
from creditshare.console._forms import form_errors
from creditshare.console._i18n import load_catalog
from creditshare.errors import ConfigurationError, InvalidInputError, ProblemError

README = Path(__file__).parents[2] / "README.md"
TEMPLATES = Path(str(resources.files("creditshare.console") / "templates"))


def test_a_console_missing_what_its_role_needs_refuses_to_start_naming_it(
    tmp_path: Path,
) -> None:
    config = tmp_path / "console.toml"
    config.write_text('role = "bank"\ncoordinator_url = "http://127.0.0.1:1"\n')
    with pytest.raises(ConfigurationError, match="api_key, identity, key_file"):
        load_settings(ConsoleSettings, config)
    config.write_text('role = "teller"\n')
    with pytest.raises(ConfigurationError, match="role"):
        load_settings(ConsoleSettings, config)


def test_every_setting_is_in_the_readme_table() -> None:
    section = README.read_text(encoding="utf-8").split("## Web console", 1)[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `([a-z_]+)`", section, re.M))
    documented |= set(re.findall(r"^\| `[a-z_]+`, `([a-z_]+)`", section, re.M))
    assert documented == set(ConsoleSettings.model_fields)


def test_every_word_exists_in_both_languages_and_every_key_a_template_uses_exists() -> None:
    catalog = load_catalog()
    assert catalog.check() == []
    used: set[str] = set()
    for template in TEMPLATES.rglob("*.html"):
        used |= set(
            re.findall(r"""\bt\(\s*["']([a-z_]+\.[a-z0-9_]+)["']\s*[,)]""", template.read_text())
        )
    missing = sorted(key for key in used if key not in catalog.messages["en"])
    assert missing == []
    for role in ROLES:  # the shell names every role
        assert f"common.role_{role}" in catalog.messages["zh"]


def test_template_text_is_never_literal_cjk() -> None:
    """Words live in messages/*.toml, so a page is never half in one language."""
    for template in TEMPLATES.rglob("*.html"):
        body = re.sub(r"\{#.*?#\}", "", template.read_text(), flags=re.S)
        body = body.replace("中文", "")  # the language switch names itself
        assert not re.search(r"[\u4e00-\u9fff]", body), template


def test_a_refusal_lands_on_the_field_it_names_and_the_rest_above_the_form() -> None:
    listed = ProblemError(
        422,
        "Invalid request",
        "…",
        {
            "errors": [
                {"location": "body.config.epochs", "message": "too many"},
                {"location": "body.nonsense", "message": "what"},
            ]
        },
    )
    errors = form_errors(listed, ["epochs", "model_id"])
    assert errors.fields == {"epochs": "too many"}
    assert errors.form == ["what"]
    named = ProblemError(422, "Invalid USCC", "bad check digit", {"field": "uscc"})
    assert form_errors(named, ["uscc"]).fields == {"uscc": "bad check digit"}
    plain = ProblemError(409, "Conflict", "model exists already", {})
    assert form_errors(plain, ["model_id"]).form == ["model exists already"]
    assert form_errors(InvalidInputError("no"), ["x"]).form == ["no"]


def test_sessions_need_the_token_and_their_csrf_token() -> None:
    sessions = Sessions()
    assert sessions.login("wrong") is None
    session = sessions.login(sessions.login_token)
    assert session is not None
    csrf = sessions.csrf_token(session)
    assert csrf and sessions.csrf_ok(session, csrf)
    assert not sessions.csrf_ok(session, csrf + "x")
    assert not sessions.csrf_ok(session, None)
    assert not sessions.csrf_ok("other", csrf)
    sessions.logout(session)
    assert sessions.csrf_token(session) is None


def test_pages_are_refused_without_a_session_and_assets_are_served(tmp_path: Path) -> None:
    settings = ConsoleSettings(
        role="operator", coordinator_url="http://127.0.0.1:1", api_key="k", work_dir=tmp_path
    )
    app = create_console_app(settings)
    with TestClient(app) as client:
        assert client.get("/static/htmx.min.js").status_code == 200
        assert client.get("/operator/anything").status_code == 401
        token = app.state.console.sessions.login_token
        assert client.get(f"/login?token={token}", follow_redirects=False).status_code == 303
        assert client.post("/logout").status_code == 403  # no CSRF token


def _operator_app(tmp_path: Path) -> FastAPI:
    settings = ConsoleSettings(
        role="operator", coordinator_url="http://127.0.0.1:1", api_key="k", work_dir=tmp_path
    )
    return create_console_app(settings)


def test_a_logged_out_user_switches_language_from_the_login_page(tmp_path: Path) -> None:
    with TestClient(_operator_app(tmp_path)) as client:
        login = client.get("/")
        assert login.status_code == 401 and 'href="/lang/en?back=/"' in login.text
        switched = client.get("/lang/en?back=/", follow_redirects=False)
        assert switched.status_code == 303 and switched.headers["location"] == "/"
        assert client.cookies.get("creditshare_lang") == "en"
        assert '<html lang="en">' in client.get("/").text


@pytest.mark.parametrize(
    "back",
    ["//evil.com", "/\\evil.com", "https://evil.com", "/a?next=//evil.com", "/%2F/evil.com", ""],
)
def test_the_language_switch_goes_back_to_local_paths_only(tmp_path: Path, back: str) -> None:
    with TestClient(_operator_app(tmp_path)) as client:
        answer = client.get("/lang/zh", params={"back": back}, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        local = client.get(
            "/lang/zh", params={"back": "/operator/participants"}, follow_redirects=False
        )
        assert local.headers["location"] == "/operator/participants"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Referer": "http://evil.example/page"},
    ],
)
def test_a_post_from_another_site_is_refused_even_with_the_csrf_token(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    app = _operator_app(tmp_path)
    with TestClient(app, base_url="http://console") as client:
        sessions = app.state.console.sessions
        client.get(f"/login?token={sessions.login_token}", follow_redirects=False)
        csrf = sessions.csrf_token(client.cookies.get(app.state.console.cookie))
        assert csrf
        refused = client.post("/logout", headers={CSRF_HEADER: csrf, **headers})
        assert refused.status_code == 403 and "another site" in refused.text
        # The same token from the console's own page is accepted.
        same = client.post(
            "/logout",
            headers={CSRF_HEADER: csrf, "Origin": "http://console"},
            follow_redirects=False,
        )
        assert same.status_code == 303


def test_sessions_end_when_idle_and_at_their_lifetime_and_are_forgotten() -> None:
    now = [1000.0]
    sessions = Sessions(idle=60.0, lifetime=300.0, clock=lambda: now[0])
    idle = sessions.login(sessions.login_token)
    busy = sessions.login(sessions.login_token)
    for _ in range(5):  # busy is used every 50 s, idle never again
        now[0] += 50.0
        assert sessions.csrf_token(busy) is not None
    assert sessions.csrf_token(idle) is None
    assert len(sessions) == 1  # the idle one is pruned, not only refused
    now[0] += 50.0  # 300 s after login: over, however busy
    assert sessions.csrf_token(busy) is None
    assert len(sessions) == 0
    # The login link itself stays valid for the process's life.
    assert sessions.login(sessions.login_token) is not None


def test_each_console_names_its_own_cookie_so_two_on_one_host_keep_their_sessions(
    tmp_path: Path,
) -> None:
    first, second = _operator_app(tmp_path), _operator_app(tmp_path)
    name = first.state.console.cookie
    assert re.fullmatch(r"creditshare_console_8600_[0-9a-f]{6}", name)
    assert name != second.state.console.cookie
    with TestClient(first) as a, TestClient(second) as b:
        # One browser (one cookie jar, one host) logged in to both consoles.
        a.get(f"/login?token={first.state.console.sessions.login_token}")
        b.cookies.update(a.cookies)
        b.get(f"/login?token={second.state.console.sessions.login_token}")
        a.cookies.update(b.cookies)
        assert a.get("/operator/anything").status_code != 401
        assert b.get("/operator/anything").status_code != 401
        assert name in a.cookies and "creditshare_console" not in a.cookies


def test_the_header_logs_out_through_htmx_and_the_session_is_gone(tmp_path: Path) -> None:
    app = _operator_app(tmp_path)
    with TestClient(app, base_url="http://console") as client:
        client.get(f"/login?token={app.state.console.sessions.login_token}")
        page = client.get("/operator/nodes")
        assert 'hx-post="/logout"' in page.text
        csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
        assert csrf
        out = client.post(
            "/logout",
            headers={CSRF_HEADER: csrf.group(1), "Origin": "http://console", "HX-Request": "true"},
        )
        assert out.status_code == 204 and out.headers["HX-Redirect"] == "/"
        assert len(app.state.console.sessions) == 0
        assert client.get("/operator/nodes").status_code == 401
        assert 'hx-post="/logout"' not in client.get("/").text  # the login page has none


def test_the_login_link_file_is_made_afresh_0600_and_a_symlink_there_is_not_followed(
    tmp_path: Path,
) -> None:
    target = tmp_path / "login-url"
    target.write_text("old link\n")
    target.chmod(0o644)
    write_private(target, "http://127.0.0.1:1/login?token=new\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == "http://127.0.0.1:1/login?token=new\n"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not yours\n")
    target.unlink()
    target.symlink_to(elsewhere)
    write_private(target, "secret\n")
    assert not target.is_symlink() and target.read_text() == "secret\n"
    assert elsewhere.read_text() == "not yours\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_every_time_is_written_alike_and_says_utc() -> None:
    shown = "2026-11-30 19:21:03 UTC"
    assert utc_time("2026-11-30T19:21:03.5+00:00") == shown
    assert utc_time("2026-11-30T20:21:03Z".replace("20:", "19:", 1)) == shown
    assert utc_time("2026-12-01T03:21:03+08:00") == shown  # another zone: put in UTC
    assert utc_time(datetime(2026, 11, 30, 19, 21, 3)) == shown  # naive: stored in UTC
    assert utc_time(datetime(2026, 11, 30, 19, 21, 3, tzinfo=UTC).timestamp()) == shown
    assert utc_time(None) == "" and utc_time("") == ""
    assert utc_time("not a time") == "not a time"  # as sent: nothing is dropped
