"""/docs is Swagger UI served entirely by the coordinator: every script, style sheet and
icon it names is one of the coordinator's own paths (no CDN: a chain's intranet has none),
each of them is served from the package, and ReDoc (CDN-only in FastAPI) is off."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import creditshare.coordinator
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import init_log_key


class _References(HTMLParser):
    """Every URL a page makes the browser load: src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("docs")
    init_log_key(tmp / "log.pem")
    settings = CoordinatorSettings(
        log_signing_key_file=tmp / "log.pem",
        allow_insecure=True,
        database_url=f"sqlite:///{tmp / 'coordinator.db'}",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_docs_names_only_the_coordinators_own_paths(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    parser = _References()
    parser.feed(page.text)
    assert len(parser.urls) == 3  # the style sheet, the icon, the script
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
    # Nothing else in the page (the inline start-up script) names another host either:
    # the only absolute URL allowed would be none at all.
    assert re.findall(r"https?://", page.text) == []
    assert "url: '/openapi.json'" in page.text
    # Swagger UI's default validator badge is an image from validator.swagger.io.
    assert '"validatorUrl": null' in page.text


def test_every_asset_the_docs_name_is_served_from_the_package(client: TestClient) -> None:
    parser = _References()
    parser.feed(client.get("/docs").text)
    kinds = {}
    for url in parser.urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert len(response.content) > 0, url
        kinds[url.rsplit(".", 1)[-1]] = response.headers["content-type"].split(";")[0]
    assert kinds == {"css": "text/css", "png": "image/png", "js": "text/javascript"}
    script = client.get("/static/swagger/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in script


def test_the_vendored_files_ship_with_their_licence() -> None:
    folder = Path(creditshare.coordinator.__file__).parent / "static" / "swagger"
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "swagger-ui-dist 5." in (folder / "VERSION").read_text()
    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    assert '"coordinator/static/swagger/*"' in pyproject.read_text()


def test_redoc_is_off_and_docs_are_not_api_operations(client: TestClient) -> None:
    assert client.get("/redoc").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/static"))]
    assert client.get("/static/swagger/no-such-file.js").status_code == 404
