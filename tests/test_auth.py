"""Dashboard authentication: the session cookie, roles, and cross-site requests refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any

import psycopg2.extensions
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.service.app import create_app
from asynctask.service.tokens import SESSION_SECONDS, Tokens
from tests.conftest import make_config

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor
TOKENS = ["admin-s3cret", {"token": "look-only", "role": "read"}]


@pytest.fixture
async def client(aiohttp_client: MakeClient, database_url: str) -> Client:
    return await aiohttp_client(create_app(make_config(database_url, api__tokens=TOKENS)))


def same_origin(client: Client) -> dict[str, str]:
    return {"Origin": f"http://{client.host}:{client.port}"}


async def login(client: Client, token: str) -> tuple[str, Any]:
    """Log in; the cookie's value and the Set-Cookie morsel."""
    response = await client.post("/api/session", json={"token": token}, headers=same_origin(client))
    assert response.status == 200, await response.text()
    cookie: SimpleCookie = SimpleCookie(response.headers["Set-Cookie"])
    morsel = cookie["asynctask_session"]
    client.session.cookie_jar.clear()  # the tests send the cookie themselves, or not
    return morsel.value, morsel


def with_cookie(value: str, **headers: str) -> dict[str, str]:
    return {"Cookie": f"asynctask_session={value}", **headers}


async def test_a_token_buys_an_httponly_strict_cookie_that_the_api_accepts(client: Client) -> None:
    assert (await client.get("/api/tasks")).status == 401
    session = await (await client.get("/api/session")).json()
    assert session == {"auth_required": True, "role": None, "via": None, "expires_at": None}
    value, morsel = await login(client, "admin-s3cret")
    assert morsel["httponly"] is True and morsel["samesite"] == "Strict"
    assert morsel["path"] == "/" and int(morsel["max-age"]) == SESSION_SECONDS
    assert "admin-s3cret" not in value  # the cookie holds a signature, not the token
    assert (await client.get("/api/tasks", headers=with_cookie(value))).status == 200
    me = await (await client.get("/api/session", headers=with_cookie(value))).json()
    assert me["role"] == "admin" and me["via"] == "cookie" and me["expires_at"]
    created = await client.post(
        "/api/tasks", json={"type": "ok"}, headers=with_cookie(value, **same_origin(client))
    )
    assert created.status == 201
    out = await client.delete("/api/session", headers=with_cookie(value, **same_origin(client)))
    assert out.status == 200 and (await out.json())["role"] is None
    assert 'asynctask_session=""' in out.headers["Set-Cookie"]


async def test_a_wrong_token_or_body_gets_no_cookie(client: Client) -> None:
    wrong = await client.post("/api/session", json={"token": "nope"}, headers=same_origin(client))
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
    bad = await client.post("/api/session", json={"token": ""}, headers=same_origin(client))
    assert bad.status == 422 and "token" in (await bad.json())["fields"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 403),  # a cookie without Origin or Sec-Fetch-Site: not from a page of ours
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),  # another port or subdomain is another origin
        ({"Sec-Fetch-Site": "same-origin"}, 200),
    ],
)
async def test_changes_riding_on_the_cookie_must_come_from_our_own_pages(
    client: Client, headers: dict[str, str], status: int
) -> None:
    value, _ = await login(client, "admin-s3cret")
    response = await client.post("/api/queues/high/pause", headers=with_cookie(value, **headers))
    assert response.status == status
    if status == 403:
        assert "error" in await response.json()


async def test_a_bearer_token_is_not_a_cross_site_risk(client: Client) -> None:
    headers = {"Authorization": "Bearer admin-s3cret", "Origin": "http://elsewhere.example"}
    assert (await client.post("/api/queues/high/pause", headers=headers)).status == 200


@pytest.mark.parametrize("how", ["bearer", "cookie"])
async def test_a_read_token_sees_everything_and_changes_nothing(
    client: Client, sql: Cursor, how: str
) -> None:
    sql.execute("INSERT INTO tasks (type, state) VALUES ('ok', 'failed')")
    if how == "bearer":
        headers = {"Authorization": "Bearer look-only"}
    else:
        headers = with_cookie((await login(client, "look-only"))[0], **same_origin(client))
    for path in ("/api/tasks", "/api/tasks/1", "/api/stats", "/api/queues", "/api/workers"):
        assert (await client.get(path, headers=headers)).status == 200, path
    changes = [
        ("/api/tasks", {"type": "ok"}),
        ("/api/tasks/batch", {"tasks": [{"type": "ok"}]}),
        ("/api/tasks/1/retry", None),
        ("/api/tasks/1/cancel", None),
        ("/api/queues/high/pause", None),
        ("/api/tasks/bulk/retry", {"dry_run": False}),
    ]
    for path, body in changes:
        response = await client.post(path, json=body, headers=headers)
        assert response.status == 403, path
        assert "only read" in (await response.json())["error"]
    sql.execute("SELECT state FROM tasks")
    assert sql.fetchall() == [("failed",)]
    me = await (await client.get("/api/session", headers=headers)).json()
    assert me["role"] == "read" and me["via"] == how


async def test_a_forged_expired_or_orphaned_cookie_is_refused(
    client: Client, aiohttp_client: MakeClient, database_url: str
) -> None:
    value, _ = await login(client, "look-only")
    expires, nonce, _, mac = value.split(".")
    forged = ".".join((expires, nonce, "admin", mac))  # read promoted to admin
    assert (await client.get("/api/tasks", headers=with_cookie(forged))).status == 401
    assert (await client.get("/api/tasks", headers=with_cookie("garbage"))).status == 401
    tokens = Tokens(make_config(database_url, api__tokens=TOKENS).api)
    assert tokens.session(value) is not None
    assert tokens.session(value, now=int(expires) + 1) is None  # expired
    others = await aiohttp_client(create_app(make_config(database_url, api__tokens=["new-one"])))
    assert (await others.get("/api/tasks", headers=with_cookie(value))).status == 401
    # A wrong Authorization header is not rescued by a good cookie.
    headers = with_cookie(value, Authorization="Bearer nope")
    assert (await client.get("/api/tasks", headers=headers)).status == 401


async def test_without_tokens_everything_is_open_but_cross_site_changes(
    aiohttp_client: MakeClient, database_url: str
) -> None:
    client = await aiohttp_client(create_app(make_config(database_url)))
    session = await (await client.get("/api/session")).json()
    assert session == {"auth_required": False, "role": "admin", "via": "open", "expires_at": None}
    login = await client.post("/api/session", json={"token": "anything"})
    assert login.status == 200 and "Set-Cookie" not in login.headers
    assert (await client.post("/api/queues/high/pause")).status == 200  # curl, scripts
    evil = await client.post("/api/queues/high/resume", headers={"Origin": "http://evil.example"})
    assert evil.status == 403  # a page elsewhere cannot drive a local, open API
    assert (
        await client.get("/api/queues", headers={"Origin": "http://evil.example"})
    ).status == 200
