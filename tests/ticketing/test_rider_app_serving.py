"""How ticketing serves the rider app at /app/: the build when there is one, a clear answer when
there is none, and nothing outside the build folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.ticketing import webapp
from services.ticketing.app import build_app
from shared.errors import PROBLEM_MEDIA_TYPE, install_problem_handlers
from tests.ticketing.conftest import ticketing_settings

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def client_for(dist: Path) -> httpx.AsyncClient:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(webapp.router(dist))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://testserver")


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    dist = tmp_path / "dist"
    (dist / "vendor").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>CityPass</title>")
    (dist / "app.js").write_text("export {};")
    (dist / "sw.js").write_text("self;")
    (dist / "manifest.webmanifest").write_text("{}")
    (dist / "vendor" / "qrcode.js").write_text("export default 1;")
    (dist / "notes.py").write_text("secret = 1")
    (tmp_path / "outside.js").write_text("outside")
    async with client_for(dist) as client:
        yield client


@pytest.fixture
async def not_built(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(tmp_path / "dist") as client:
        yield client


class TestBuilt:
    async def test_the_page_and_its_files_are_served_with_a_strict_policy(
        self, built: httpx.AsyncClient
    ) -> None:
        page = await built.get("/app/", headers=HTML)
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert page.headers["cache-control"] == "no-cache"
        for name, media_type in (
            ("app.js", "text/javascript; charset=utf-8"),
            ("sw.js", "text/javascript; charset=utf-8"),
            ("vendor/qrcode.js", "text/javascript; charset=utf-8"),
            ("manifest.webmanifest", "application/manifest+json"),
        ):
            response = await built.get(f"/app/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"] == media_type

    async def test_app_without_a_slash_redirects_relatively(self, built: httpx.AsyncClient) -> None:
        response = await built.get("/app")
        assert response.status_code == 308
        assert response.headers["location"] == "app/"

    @pytest.mark.parametrize(
        "name", ["missing.js", "notes.py", "..%2Foutside.js", "%2E%2E/outside.js", "vendor"]
    )
    async def test_nothing_else_is_served(self, built: httpx.AsyncClient, name: str) -> None:
        response = await built.get(f"/app/{name}")
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
        assert response.json()["code"] == "asset_not_found"


class TestNotBuilt:
    async def test_a_browser_is_told_how_to_build_it(self, not_built: httpx.AsyncClient) -> None:
        response = await not_built.get("/app/", headers=HTML)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "make app" in response.text
        assert "Node.js 18+" in response.text

    @pytest.mark.parametrize("path", ["/app/", "/app/app.js"])
    async def test_other_clients_get_a_problem(
        self, not_built: httpx.AsyncClient, path: str
    ) -> None:
        response = await not_built.get(path, headers={"Accept": "application/json"})
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
        problem = response.json()
        assert problem["code"] == "rider_app_not_built"
        assert "make app" in problem["detail"]


async def test_ticketing_mounts_the_rider_app_outside_its_api_description() -> None:
    app = build_app(ticketing_settings("http://127.0.0.1:9"))  # no lifespan: no server needed
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/app/no-such-file.js")
        assert response.status_code == 404
        assert response.json()["code"] in ("asset_not_found", "rider_app_not_built")
        paths = (await http.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith("/app")]
