"""Hostile input and hostile neighbours: each attack is a test named after what it tries.

- A poison task (data nested deeper than any decoder copes with, or huge values, put in the table
  by plain SQL so the API's own limits do not apply) must not stop a queue, nor make any read of
  it fail.
- The embedded server: a second local user on the same machine (created here, removed after) must
  not reach the database of a project run by root, by unix socket or by TCP.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import subprocess
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.core.config import Config
from asynctask.service.app import create_app
from asynctask.service.rules import MAX_DATA_DEPTH, TOO_DEEP
from tests.conftest import make_config
from tests.embedded_scratch import Scratch, postmaster_pid
from tests.procs import count, insert_many, stop, supervisor
from tests.waiting import wait_until

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor
DEEP = 3000  # far past Python's decoder (about 1,000 levels), well within jsonb's
JSON = {"Content-Type": "application/json"}


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
    page = await client.get("/api/tasks?limit=10")
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
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            api_port = probe.getsockname()[1]
        api = scratch.start(project, "api", "--port", str(api_port))
        wait_until(lambda: _answers(api_port) or api.poll() is not None)
        state = scratch.cluster(project)
        assert postmaster_pid(state / "pgdata") is not None, "asynctask api did not start it"
        port = int((state / "pgdata" / "postmaster.pid").read_text().splitlines()[3])
        yield EmbeddedServer(state, port, scratch)
    finally:
        scratch.close()


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
            return True
    except OSError:
        return False


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
