"""The dashboard's pages over HTTP: public, strict headers, no other files, not in OpenAPI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.service.app import create_app
from asynctask.service.dashboard_pages import CSP
from tests.conftest import make_config

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


async def test_pages_are_public_and_strict_even_with_tokens(
    aiohttp_client: MakeClient, database_url: str
) -> None:
    client = await aiohttp_client(create_app(make_config(database_url, api__tokens=["s3cret"])))
    for path in ("/", "/dashboard/"):
        moved = await client.get(path, allow_redirects=False)
        assert moved.status == 302 and moved.headers["Location"] == "/dashboard"
    for path, kind in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ]:
        response = await client.get(path)
        assert response.status == 200, path
        assert response.content_type == kind
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    page = await (await client.get("/dashboard")).text()
    assert "<script>" not in page and "style=" not in page  # nothing inline: the CSP forbids it
    # Only the app's own files; the data stays behind the token.
    assert (await client.get("/dashboard/index.py")).status == 404
    assert (await client.get("/dashboard/../setup.py")).status in (401, 404)
    assert (await client.get("/api/stats")).status == 401
