"""The rider web app (a PWA) at `/app/`: the files `make app` builds into `webapp/dist/`.

The page is a client of the public API like any other (`/v1/...`, bearer tokens); nothing here
renders a rider's data. Without a build, `/app/` explains how to make one and every file under
it answers a `rider_app_not_built` problem, so the rest of the service runs either way.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from shared.errors import NotFound

WEBAPP_DIR = Path(__file__).resolve().parent
DIST_DIR = WEBAPP_DIR / "dist"
BUILD_HINT = (
    "The rider app was not built: install Node.js 18+ and npm (apt-get install nodejs npm), "
    "then run `make app`."
)

# Everything comes from this origin; no inline script or style, no eval. Service workers and
# the manifest too. `no-cache`: the service worker decides what is kept for offline use.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
    ".json": "application/json",
}
NOT_BUILT_PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CityPass · rider app not built</title></head>
<body>
<h1>Ứng dụng hành khách chưa được build</h1>
<p>Cài Node.js 18+ và npm (<code>apt-get install nodejs npm</code>), rồi chạy
<code>make app</code> và tải lại trang.</p>
<h1 lang="en">The rider app is not built</h1>
<p lang="en">Install Node.js 18+ and npm (<code>apt-get install nodejs npm</code>), then run
<code>make app</code> and reload this page.</p>
</body></html>
"""


def not_built() -> NotFound:
    return NotFound(BUILD_HINT, code="rider_app_not_built", title="Rider app not built")


def router(dist: Path = DIST_DIR) -> APIRouter:
    """Routes serving the build in `dist` (read at each request: `make app` may run later)."""
    routes = APIRouter(include_in_schema=False)
    root = dist.resolve()

    @routes.get("/app")
    async def app_without_slash() -> RedirectResponse:
        return RedirectResponse("app/", status_code=308)  # relative: works behind a path prefix

    @routes.get("/app/")
    async def page(request: Request) -> Response:
        index = root / "index.html"
        if not index.is_file():
            if "text/html" in request.headers.get("accept", ""):
                return HTMLResponse(NOT_BUILT_PAGE, status_code=404, headers=HEADERS)
            raise not_built()
        return FileResponse(index, media_type=MEDIA_TYPES[".html"], headers=HEADERS)

    @routes.get("/app/{name:path}")
    async def asset(name: str) -> FileResponse:
        if not (root / "index.html").is_file():
            raise not_built()
        path = (root / name).resolve()
        if not path.is_relative_to(root) or path.suffix not in MEDIA_TYPES or not path.is_file():
            raise NotFound(f"The rider app has no file {name!r}.", code="asset_not_found")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)

    return routes
