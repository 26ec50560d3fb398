"""Hostile input and hostile neighbours: each attack is a test named after what it tries.

- A poison task (data nested deeper than any decoder copes with, or huge values, put in the table
  by plain SQL so the API's own limits do not apply) must not stop a queue, nor make any read of
  it fail.
- Sizes: a task's data, a list page and a large body each have a bound where memory is spent.
- Auth cannot be switched off by accident (a blank variable, a public address without tokens), and
  without tokens a web page cannot use the API (JSON bodies only, Host checked: DNS rebinding).
- Smaller: over-long ids, prefix-matched public paths, slow or idle connections, /metrics, the
  Server header, tokens echoed in config errors, clients that leave mid-body.
- The embedded server: a second local user on the same machine (created here, removed after) must
  not reach the database of a project run by root, by unix socket or by TCP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import socket
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psycopg2
import psycopg2.extensions
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.cli.main import main as cli_main
from asynctask.core.config import Config
from asynctask.core.config_loader import load_config, parse_config
from asynctask.core.errors import ConfigError
from asynctask.core.exposure import check_exposure
from asynctask.service import keys
from asynctask.service.app import create_app, serve
from asynctask.service.bodies import LARGE_BODY_BYTES, PARSERS
from asynctask.service.rules import MAX_DATA_DEPTH, TOO_DEEP, NewTask, TaskRules, too_large
from asynctask.workers.metrics import serve_supervisor_metrics, supervisor_metrics
from tests.conftest import make_config
from tests.embedded_scratch import Scratch, postmaster_pid
from tests.processes import answers, free_port
from tests.procs import CTX, count, insert_many, stop, supervisor
from tests.waiting import wait_until, wait_until_async

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor
DEEP = 3000  # far past Python's decoder (about 1,000 levels), well within jsonb's
JSON = {"Content-Type": "application/json"}
ROOT = Path(__file__).resolve().parent.parent


def _nested(depth: int) -> dict[str, object]:
    data: object = []
    for _ in range(depth - 2):
        data = [data]
    return {"a": data}


def _insert_deep(sql: Cursor, priority: int = 1) -> int:
    sql.execute(
        "INSERT INTO tasks (type, priority, data) VALUES"
        " ('ok', %s, ('{\"a\": ' || repeat('[', %s) || repeat(']', %s) || '}')::jsonb)"
        " RETURNING id",
        (priority, DEEP, DEEP),
    )
    row = sql.fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: Config) -> Client:
    return await aiohttp_client(create_app(config))


async def test_data_nested_past_the_limit_is_refused_naming_the_field(client: Client) -> None:
    ok = await client.post("/api/tasks", json={"type": "ok", "data": _nested(MAX_DATA_DEPTH)})
    assert ok.status == 201
    deep = await client.post("/api/tasks", json={"type": "ok", "data": _nested(200)})
    assert deep.status == 422
    assert (await deep.json())["fields"] == {"data": [TOO_DEEP]}
    batch = await client.post(
        "/api/tasks/batch", json={"tasks": [{"type": "ok"}, {"type": "ok", "data": _nested(65)}]}
    )
    assert batch.status == 422
    assert (await batch.json())["fields"] == {"tasks.1.data": [TOO_DEEP]}


async def test_a_body_too_deep_to_parse_is_refused_not_a_500(client: Client, sql: Cursor) -> None:
    # ~975 levels answered 201 before, then broke the worker and (at ~979) the POST's own answer.
    for depth in (975, 100_000):
        body = '{"type": "ok", "data": {"a": ' + "[" * depth + "]" * depth + "}}"
        answer = await client.post("/api/tasks", data=body, headers=JSON)
        assert answer.status == 422
        assert list((await answer.json())["fields"]) in (["data"], ["_schema"])
    assert count(sql, "true") == 0  # nothing was stored


async def test_a_client_hammering_one_idempotency_key_makes_one_task(
    client: Client, sql: Cursor
) -> None:
    # 40 requests at once with one key, then 40 more: one insert; each answer is that task (201,
    # the first or a replay) or 409 while the first is in flight.
    async def post() -> tuple[int, int | None]:
        answer = await client.post(
            "/api/tasks", json={"type": "ok"}, headers={"Idempotency-Key": "same"}
        )
        body = await answer.json()
        return answer.status, body.get("id")

    answers = await asyncio.gather(*(post() for _ in range(40)))
    answers += await asyncio.gather(*(post() for _ in range(40)))
    assert count(sql, "true") == 1
    sql.execute("SELECT id FROM tasks")
    (only,) = sql.fetchone() or (None,)
    assert {status for status, _ in answers} <= {201, 409}
    assert {task_id for status, task_id in answers if status == 201} == {only}
    assert await post() == (201, only)  # settled: a plain replay


async def test_every_read_of_a_poison_row_answers(client: Client, sql: Cursor) -> None:
    poison = _insert_deep(sql)
    sql.execute(
        "INSERT INTO tasks (type, data)"
        " VALUES ('ok', json_build_object('big', repeat('x', 5000000))::jsonb)"
    )
    one = await client.get(f"/api/tasks/{poison}")
    assert one.status == 200
    text = await one.text()
    # Shown as stored, not parsed and re-encoded (which no Python JSON library could do).
    assert text.startswith(f'{{"id": {poison}, ') and "[" * DEEP + "]" * DEEP in text
    # The 5 MB row fills a page of its own (api.max_page_bytes); the poison row is on the next.
    first = await (await client.get("/api/tasks?limit=10")).json()
    assert [task["id"] for task in first["tasks"]] == [poison + 1]
    page = await client.get(f"/api/tasks?limit=10&cursor={first['next_cursor']}")
    assert page.status == 200 and "[" * DEEP in await page.text()
    cancelled = await client.post(f"/api/tasks/{poison}/cancel")
    assert cancelled.status == 200 and '"state": "cancelled"' in await cancelled.text()
    retried = await client.post(f"/api/tasks/{poison}/retry")
    assert retried.status == 200 and '"state": "available"' in await retried.text()


def test_a_poison_row_fails_alone_and_the_queue_behind_it_drains(
    database_url: str, sql: Cursor
) -> None:
    # A pool of one: before, the worker died decoding the row, its replacement handed the row back
    # uncharged, and the tasks behind it never ran.
    config = make_config(
        database_url, priority_queues={"high": 1, "normal": 0, "low": 0}, timeout_milliseconds=100
    )
    poison = _insert_deep(sql)
    sql.execute(
        "INSERT INTO tasks (type, priority, data) VALUES"
        " ('ok', 1, json_build_object('big', repeat('x', 20000000))::jsonb)"
    )
    insert_many(sql, 5, "ok", priority=1)
    with supervisor(config, sql) as process:
        wait_until(lambda: count(sql, "state IN ('completed', 'failed')") == 7, timeout=60)
        assert stop(process) == 0
    sql.execute("SELECT state, attempts, last_error FROM tasks WHERE id = %s", (poison,))
    state, attempts, last_error = sql.fetchone() or ()
    assert (state, attempts) == ("failed", 1)
    assert "its data cannot be decoded (nested too deeply)" in last_error
    assert "failed permanently without running" in last_error
    assert count(sql, "state = 'completed'") == 6  # the huge one ran too
    assert count(sql, "state = 'running'") == 0


# --- sizes: per-task data, list pages, large bodies ---------------------------------------------


async def test_data_above_the_size_limit_is_refused_naming_the_field(
    aiohttp_client: MakeClient, database_url: str, sql: Cursor
) -> None:
    client = await aiohttp_client(create_app(make_config(database_url, api__max_data_bytes=1000)))
    fits = {"type": "ok", "data": {"s": "x" * 990}}  # {"s":"…"} is 998 bytes
    assert (await client.post("/api/tasks", json=fits)).status == 201
    big = {"type": "ok", "data": {"s": "é" * 500}}  # 500 characters, 1,000 bytes in UTF-8
    answer = await client.post("/api/tasks", json=big)
    assert answer.status == 422
    assert (await answer.json())["fields"] == {"data": [too_large(1000)]}
    batch = await client.post("/api/tasks/batch", json={"tasks": [fits, big]})
    assert (await batch.json())["fields"] == {"tasks.1.data": [too_large(1000)]}
    assert count(sql) == 1


async def test_a_list_page_ends_at_its_byte_budget_with_a_cursor(
    aiohttp_client: MakeClient, database_url: str, sql: Cursor
) -> None:
    budget = 1024 * 1024
    client = await aiohttp_client(create_app(make_config(database_url, api__max_page_bytes=budget)))
    # Oldest first: one row larger than a whole page, then five of 300 KB (put in by SQL, as an
    # older version or a script could; the API's own limit would refuse them).
    for size in (3_000_000, *[300_000] * 5):
        sql.execute(
            "INSERT INTO tasks (type, data) VALUES ('ok', json_build_object('s', repeat('x', %s)))",
            (size,),
        )
    pages, cursor = [], ""
    while cursor is not None:
        answer = await client.get("/api/tasks?limit=100" + (f"&cursor={cursor}" if cursor else ""))
        text = await answer.text()
        page = json.loads(text)
        pages.append([task["id"] for task in page["tasks"]])
        if len(page["tasks"]) > 1:
            assert len(text) < budget + 4096  # the data within the budget, plus the other fields
        cursor = page["next_cursor"]
    # 3 x 300 KB fit in 1 MiB, the fourth would not: the page ends early, with its cursor; the
    # 3 MB row comes alone (the first row of a page always comes), and nothing comes twice.
    assert pages == [[6, 5, 4], [3, 2], [1]]


class _GatedRules(TaskRules):
    """Batch validation that records its concurrency and thread, and waits to be let go."""

    state: ClassVar[dict[str, Any]] = {}

    def batch(self, body: Any) -> list[NewTask]:
        gate = self.state
        with gate["lock"]:
            gate["running"] += 1
            gate["peak"] = max(gate["peak"], gate["running"])
            gate["threads"].add(threading.current_thread() is threading.main_thread())
        gate["started"].set()
        gate["go"].wait(20)
        try:
            return super().batch(body)
        finally:
            with gate["lock"]:
                gate["running"] -= 1


async def test_large_bodies_are_parsed_one_at_a_time_off_the_event_loop(
    aiohttp_client: MakeClient, config: Config, sql: Cursor
) -> None:
    _GatedRules.state.update(
        lock=threading.Lock(),
        running=0,
        peak=0,
        threads=set(),
        started=threading.Event(),
        go=threading.Event(),
    )
    app = create_app(config)
    app[keys.RULES] = _GatedRules(config.task_types, config.max_attempts, 1024)
    client = await aiohttp_client(app)
    tasks = [{"type": "ok", "data": {"n": i, "pad": "x" * 60}} for i in range(1000)]
    body = json.dumps({"tasks": tasks})
    assert len(body) > LARGE_BODY_BYTES
    posts = [
        asyncio.create_task(client.post("/api/tasks/batch", data=body, headers=JSON))
        for _ in range(4)
    ]
    await asyncio.to_thread(_GatedRules.state["started"].wait, 20)
    # One body is being validated, held there: the loop still answers, and no other body is.
    assert (await client.get("/health")).status == 200
    assert _GatedRules.state["running"] == 1
    _GatedRules.state["go"].set()
    assert [answer.status for answer in await asyncio.gather(*posts)] == [201] * 4
    assert _GatedRules.state["peak"] == PARSERS == 1
    assert _GatedRules.state["threads"] == {False}  # never on the event loop's thread
    assert count(sql) == 4000


# --- auth cannot be switched off by accident ----------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   ", " , ,"])
def test_a_blank_tokens_variable_counts_as_unset(blank: str) -> None:
    raw = {"api": {"tokens": ["from-the-file"]}}
    assert parse_config(raw, {"ASYNCTASK_API_TOKENS": blank}).api.tokens == ("from-the-file",)
    assert parse_config({}, {"ASYNCTASK_API_TOKENS": blank}).api.tokens == ()
    assert parse_config(raw, {"ASYNCTASK_API_TOKENS": "a, b"}).api.tokens == ("a", "b")


def test_compose_injects_no_empty_tokens() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        # None: passed through from the shell only when set there; no `${VAR:-}` default.
        assert environment.get("ASYNCTASK_API_TOKENS") is None, name
        assert environment.get("ASYNCTASK_API_ALLOW_ANONYMOUS") is None, name
    assert "ASYNCTASK_API_TOKENS:-" not in (ROOT / "docker-compose.yml").read_text()


@pytest.mark.parametrize("command", ["api", "run"])
def test_the_api_refuses_a_public_address_without_tokens(
    command: str, tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": database_url}}))
    assert cli_main(["--config", str(path), command, "--host", "0.0.0.0"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "api.host: '0.0.0.0' is not a loopback address" in error
    assert "ASYNCTASK_API_TOKENS" in error and "api.allow_anonymous" in error
    config = make_config(database_url)
    with pytest.raises(ConfigError, match="not a loopback address"):
        serve(config, "192.0.2.1", 4000)
    check_exposure(config.api, "127.0.0.1")
    check_exposure(make_config(database_url, api__allow_anonymous=True).api, "0.0.0.0")
    check_exposure(make_config(database_url, api__tokens=["t"]).api, "0.0.0.0")


async def test_a_body_not_declared_as_json_is_415(client: Client, sql: Cursor) -> None:
    # What a web page can send cross-origin without a preflight: text/plain, a form, or no type.
    body = '{"type": "ok"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        for path in ("/api/tasks", "/api/tasks/batch"):
            answer = await client.post(path, data=body.encode(), headers=headers)
            assert answer.status == 415, content_type
            assert "Content-Type must be application/json" in (await answer.json())["error"]
    assert count(sql) == 0
    charset = {"Content-Type": "application/json; charset=utf-8"}
    assert (await client.post("/api/tasks", data=body, headers=charset)).status == 201


async def test_a_foreign_host_is_421_without_tokens(
    aiohttp_client: MakeClient, database_url: str, sql: Cursor
) -> None:
    client = await aiohttp_client(create_app(make_config(database_url)))
    # DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1.
    for host in ("evil.example", "evil.example:4000", "127.0.0.1.nip.io"):
        foreign = {"Host": host}
        answer = await client.post("/api/tasks", json={"type": "ok"}, headers=foreign)
        assert answer.status == 421 and "api.allowed_hosts" in (await answer.json())["error"]
        assert (await client.get("/api/tasks", headers=foreign)).status == 421
        assert (await client.get("/health", headers=foreign)).status == 200  # probes stay open
    assert count(sql) == 0
    for host in ("localhost:4000", "LOCALHOST.", "127.0.0.1", "[::1]:4000"):
        assert (await client.get("/api/tasks", headers={"Host": host})).status == 200, host
    named = await aiohttp_client(
        create_app(make_config(database_url, api__allowed_hosts=["tasks.internal"]))
    )
    assert (await named.get("/api/tasks", headers={"Host": "tasks.internal:80"})).status == 200
    assert (await named.get("/api/tasks", headers={"Host": "localhost"})).status == 421
    tokens = await aiohttp_client(create_app(make_config(database_url, api__tokens=["t"])))
    bearer = {"Host": "evil.example", "Authorization": "Bearer t"}
    assert (await tokens.get("/api/tasks", headers=bearer)).status == 200  # the token decides
    # The setting from the environment: comma-separated, compared as the header's name part.
    environ = {"ASYNCTASK_API_ALLOWED_HOSTS": "Tasks.Example., [::1]"}
    assert parse_config({}, environ).api.allowed_hosts == ("tasks.example", "::1")
    with pytest.raises(ConfigError, match=r"api.allowed_hosts: \[1\] is not allowed"):
        parse_config({"api": {"allowed_hosts": [1]}}, {})


async def test_a_page_of_another_origin_is_403_without_tokens(
    client: Client, aiohttp_client: MakeClient, database_url: str, sql: Cursor
) -> None:
    # A page on another site (or another local port) posting straight to the API: a cancel or a
    # retry has no body, so only the Origin its browser adds tells it apart.
    task = await (await client.post("/api/tasks", json={"type": "ok"})).json()
    cancel = f"/api/tasks/{task['id']}/cancel"
    own = f"http://{client.host}:{client.port}"
    for origin in ("http://evil.example", f"http://{client.host}:1", "null"):
        answer = await client.post(cancel, headers={"Origin": origin})
        assert answer.status == 403 and origin in (await answer.json())["error"], origin
        foreign = {"Origin": origin, **JSON}
        assert (await client.post("/api/tasks", json={"type": "ok"}, headers=foreign)).status == 403
    sql.execute("SELECT state FROM tasks")
    assert sql.fetchall() == [("available",)]  # not cancelled, and nothing else created
    # Its own pages (Swagger UI) and clients that send no Origin (curl, SDKs) are answered.
    assert (await client.post(cancel, headers={"Origin": own})).status == 200
    tokens = await aiohttp_client(create_app(make_config(database_url, api__tokens=["t"])))
    bearer = {"Origin": "http://evil.example", "Authorization": "Bearer t"}
    assert (await tokens.get("/api/tasks", headers=bearer)).status == 200  # the token decides


# --- smaller: ids, public paths, timeouts, metrics, Server header, masked tokens, disconnects ---


async def test_a_task_id_longer_than_the_route_is_404_not_500(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    long_id = "1" * 4301  # past int()'s 4,300-digit limit: a ValueError and a 500 before
    with caplog.at_level(logging.DEBUG):
        for method, path in (
            ("GET", f"/api/tasks/{long_id}"),
            ("POST", f"/api/tasks/{long_id}/cancel"),
            ("POST", f"/api/tasks/{long_id}/retry"),
            ("GET", "/api/tasks/" + "9" * 19),  # 19 digits, the route's most, past bigint
        ):
            answer = await client.request(method, path)
            assert answer.status == 404, path
            assert len((await answer.json())["error"]) < 200  # not the whole path echoed
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_public_paths_are_exact_not_prefixes(
    aiohttp_client: MakeClient, database_url: str
) -> None:
    client = await aiohttp_client(create_app(make_config(database_url, api__tokens=["t"])))
    for path in ("/health", "/ready", "/api/openapi", "/api/docs"):
        assert (await client.get(path)).status == 200, path
    for path in (
        "/healthz",
        "/health/x",
        "/readyz",
        "/metricsx",
        "/api/docsx",
        "/api/openapi.json",
    ):
        assert (await client.get(path)).status == 401, path
    assert (await client.get("/api/docs/static/nope.js")).status == 404  # Swagger UI's files


async def test_with_tokens_stats_and_unknown_paths_answer_401(
    aiohttp_client: MakeClient, database_url: str
) -> None:
    client = await aiohttp_client(create_app(make_config(database_url, api__tokens=["t"])))
    # Without the token, an unknown path looks like a real one: neither says whether it exists.
    for path in ("/api/stats", "/api/tasks", "/nope", "/api/nope", "/.env"):
        answer = await client.get(path)
        assert answer.status == 401 and answer.headers["WWW-Authenticate"] == "Bearer", path
    bearer = {"Authorization": "Bearer t"}
    assert (await client.get("/api/stats", headers=bearer)).status == 200
    assert (await client.get("/nope", headers=bearer)).status == 404


async def test_metrics_need_a_token_unless_public_metrics(
    aiohttp_client: MakeClient, database_url: str
) -> None:
    guarded = await aiohttp_client(create_app(make_config(database_url, api__tokens=["t"])))
    assert (await guarded.get("/metrics")).status == 401
    assert (await guarded.get("/metrics", headers={"Authorization": "Bearer t"})).status == 200
    config = make_config(database_url, api__tokens=["t"], api__public_metrics=True)
    public = await aiohttp_client(create_app(config))
    assert (await public.get("/metrics")).status == 200
    assert (await public.get("/api/stats")).status == 401  # the JSON twin keeps its token


def test_worker_metrics_listen_on_loopback_by_default(database_url: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # api.host 0.0.0.0 (as in a container) no longer decides where the workers' metrics listen.
    config = make_config(database_url, metrics_port=port, api__host="0.0.0.0")
    assert config.metrics_host == "127.0.0.1"
    metrics = supervisor_metrics(config, ["high_1"])
    assert metrics is not None
    try:
        serve_supervisor_metrics(metrics)
        assert _listening_on(port) == {"127.0.0.1"}
    finally:
        metrics.close()


def _listening_on(port: int) -> set[str]:
    """The IPv4 addresses with a listening TCP socket on `port` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


async def test_the_server_header_names_no_versions(client: Client) -> None:
    assert (await client.get("/health")).headers["Server"] == "asynctask"
    assert (await client.get("/nope")).headers["Server"] == "asynctask"
    # The HTTP parser's own 400, sent before any of the app's code runs.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"NOT HTTP\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.0 400") and b"\r\nServer: asynctask\r\n" in answer
    assert b"aiohttp" not in answer and b"Python" not in answer


def test_config_errors_never_echo_tokens(tmp_path: Path) -> None:
    secret = "s3cret-token-value"
    path = tmp_path / "config.yaml"
    cases = {
        f"api:\n  tokens: [{secret}, 42]\n": "api.tokens: ['***', int] is not allowed",
        f"api:\n  tokens: {{{secret}: 1}}\n": "api.tokens: dict is not allowed",
        f"api:\n  tokens: [{secret}\n": "cannot be read as YAML",  # a syntax error on that line
        f"- {secret}\n": "the top level must be a mapping of keys, not a list",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert message in str(info.value) and secret not in str(info.value), text


async def test_a_client_that_leaves_mid_body_is_no_error(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    # A server as `asynctask api` runs it (the test client's server cancels handlers instead).
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with caplog.at_level(logging.DEBUG):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /api/tasks HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                b'{"type": "ok", "data": {"s": "' + b"x" * 1000
            )
            await writer.drain()
            writer.close()
            await wait_until_async(lambda: "client closed the connection" in caplog.text)
        exposition = runner.app[keys.METRICS].exposition().decode()
        assert 'route="/api/tasks",status="499"' in exposition
        assert 'status="500"' not in exposition
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        await runner.cleanup()


def test_slow_or_idle_connections_are_closed(database_url: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = make_config(database_url, api__idle_timeout_seconds=1, api__body_timeout_seconds=1)
    api = CTX.Process(target=_serve, args=(config, port))
    api.start()
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/health"))
        # Idle: connected, sends nothing. Slow head: half a request line. Both are closed.
        for sent in (b"", b"GET /health HT"):
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.sendall(sent)
                conn.settimeout(30)
                assert conn.recv(100) == b""  # closed by the server, not by this timeout
        # Slow body: the head and a tenth of the body, then nothing: 408, and closed.
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(
                b"POST /api/tasks HTTP/1.1\r\nHost: localhost\r\n"
                b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"type":'
            )
            conn.settimeout(30)
            answer = _read_all(conn)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"api.body_timeout_seconds" in answer
    finally:
        api.terminate()
        api.join(30)


def _serve(config: Config, port: int) -> None:
    serve(config, "127.0.0.1", port)


def _read_all(conn: socket.socket) -> bytes:
    answer = b""
    while chunk := conn.recv(65536):
        answer += chunk
    return answer


# --- the embedded server is private ------------------------------------------------------------

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="creates local users (CI runs as root)")


@dataclass(frozen=True)
class EmbeddedServer:
    """A root-run project's embedded server, kept up by `asynctask api`."""

    state: Path
    port: int
    scratch: Scratch


@pytest.fixture(scope="module")
def embedded_server() -> Iterator[EmbeddedServer]:
    scratch = Scratch()
    try:
        project = scratch.project("project")
        api_port = free_port()
        api = scratch.start(project, "api", "--port", str(api_port))
        health = f"http://127.0.0.1:{api_port}/health"
        wait_until(lambda: answers(health) or api.poll() is not None)
        state = scratch.cluster(project)
        assert postmaster_pid(state / "pgdata") is not None, "asynctask api did not start it"
        port = int((state / "pgdata" / "postmaster.pid").read_text().splitlines()[3])
        yield EmbeddedServer(state, port, scratch)
    finally:
        scratch.close()


def _as(user: str, *command: str) -> subprocess.CompletedProcess[str]:
    """`command` as `user`: its own uid and group only, an empty environment, no password file."""
    entry = pwd.getpwnam(user)
    switch = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
    return subprocess.run(
        [*switch, "env", "-i", "PATH=/usr/bin:/bin", "HOME=/nonexistent", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )


def _psql(user: str, host: str | Path, port: int, role: str, password: str | None = None) -> str:
    """psql as `user`; returns its error (or '' if it got in, which the tests forbid)."""
    secret = [f"PGPASSWORD={password}"] if password else []
    where = ["-h", str(host), "-p", str(port), "-U", role, "-d", "postgres"]
    done = _as(user, "env", *secret, "psql", "-X", "-w", *where, "-Atc", "SELECT 1")
    return "" if done.returncode == 0 else done.stderr.strip()


@root_only
def test_second_local_user_cannot_connect_to_the_embedded_server(
    embedded_server: EmbeddedServer,
) -> None:
    server, port = embedded_server, embedded_server.port
    intruder = server.scratch.add_user()
    # TCP: the only entry is `postgres` with its scram password; nothing is trusted.
    assert "no password supplied" in _psql(intruder, "127.0.0.1", port, "postgres")
    assert "password authentication failed" in _psql(
        intruder, "127.0.0.1", port, "postgres", "postgres"
    )
    assert "no pg_hba.conf entry" in _psql(intruder, "127.0.0.1", port, intruder)
    # Unix socket: the server has none, neither in the usual places nor anywhere else.
    assert f".s.PGSQL.{port}" not in Path("/proc/net/unix").read_text()
    for directory in ("/tmp", "/var/run/postgresql", server.state, server.state / "pgdata"):
        refused = _psql(intruder, directory, port, "postgres")
        assert "No such file or directory" in refused or "Permission denied" in refused
    # The password and the data are out of reach.
    assert _as(intruder, "cat", str(server.state / "password")).returncode != 0
    assert _as(intruder, "ls", str(server.state / "pgdata")).returncode != 0
    assert _as(intruder, "ls", str(server.state)).returncode != 0
    # The owner (root, with the password) gets in: the refusals above are the server's answer.
    password = (server.state / "password").read_text().strip()
    conn = psycopg2.connect(
        host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres"
    )
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone() == ("postgres",)
    conn.close()
