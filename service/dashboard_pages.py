"""The dashboard's pages: a few static files (service/dashboard/) served with strict headers.

The pages are a small vanilla-JS app on the JSON API (docs/dashboard-api.md): no build step, no
CDN. They hold no data, so they load without a token (the login form is part of them), and they
are not API routes, so they stay out of the OpenAPI document (no @docs decorator).
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from aiohttp import web

DASHBOARD_PATH: Final = "/dashboard"
# The one origin serves everything the pages use; nothing inline, nothing framed.
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with each release: revalidate rather than serve a stale app.
    "Cache-Control": "no-cache",
}
# The files served, by URL name: a fixed list, so no path from a request ever reaches the disk.
FILES: Final = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
ASSET_ROUTE: Final = DASHBOARD_PATH + "/{name:app\\.js|style\\.css}"


def _read(name: str) -> bytes:
    return resources.files("asynctask.service").joinpath("dashboard", name).read_bytes()


def _file_response(name: str) -> web.Response:
    return web.Response(
        body=_read(name), content_type=FILES[name], charset="utf-8", headers=HEADERS
    )


async def root(request: web.Request) -> web.StreamResponse:
    """GET / and /dashboard/: the dashboard is the API's home page."""
    raise web.HTTPFound(DASHBOARD_PATH)


async def page(request: web.Request) -> web.Response:
    """GET /dashboard: the app's one HTML page (its views are hash routes: #/tasks, ...)."""
    return _file_response("index.html")


async def asset(request: web.Request) -> web.Response:
    """GET /dashboard/app.js and /dashboard/style.css."""
    return _file_response(request.match_info["name"])


def add_routes(app: web.Application) -> None:
    """Serve the pages: / and /dashboard/ (redirects), /dashboard and its two assets."""
    app.router.add_get("/", root, allow_head=False)
    app.router.add_get(DASHBOARD_PATH, page, allow_head=False)
    app.router.add_get(DASHBOARD_PATH + "/", root, allow_head=False)  # a typed trailing slash
    app.router.add_get(ASSET_ROUTE, asset, allow_head=False)


def is_page(path: str) -> bool:
    """True for the dashboard's paths (public: they hold no data)."""
    return path in ("/", DASHBOARD_PATH) or path.startswith(DASHBOARD_PATH + "/")
