"""Shared fixtures: a real PostgreSQL, a template database built once, one clone per test."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from asynctask.core import schema
from asynctask.core.config import Config
from asynctask.core.config_loader import parse_config

ADMIN_DSN = os.environ.get("ASYNCTASK_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_HANDLERS = {
    "report": "asynctask.workers.handlers:report",
    "finances": "asynctask.workers.handlers:finances",
    "ok": "tests.handlers:ok",
    "flaky": "tests.handlers:flaky",
    "boom": "tests.handlers:boom",
    "unstorable": "tests.handlers:unstorable",
    "sleepy": "tests.handlers:sleepy",
    "hang": "tests.handlers:hang",
    "record": "tests.handlers:record",
    "returns": "tests.handlers:returns",
    "returns_async": "tests.handlers:returns_async",
    "asks_retry": "tests.handlers:asks_retry",
    "asks_cancel": "tests.handlers:asks_cancel",
    "cancellable": "tests.handlers:cancellable",
    "blocking": "tests.handlers:blocking",
}


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """Undo the logging setup of a command run in-process: its handler writes to this test's
    captured stderr, which is closed once the test ends (later log lines then fail to print)."""
    root = logging.getLogger()
    access = logging.getLogger("aiohttp.access")
    handlers, level, access_level = root.handlers[:], root.level, access.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    access.setLevel(access_level)


def _admin() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    return conn


def _url_for(name: str) -> str:
    return psycopg2.extensions.make_dsn(ADMIN_DSN, dbname=name)


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """A database with schema.sql applied, cloned by every test (fast: no DDL per test)."""
    name = f"asynctask_tpl_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn = psycopg2.connect(_url_for(name))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(schema.schema_sql())
    conn.close()
    yield name
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture
def database_url(template_db: str) -> Iterator[str]:
    """A fresh database for this test only, dropped afterwards."""
    name = f"asynctask_t_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    yield _url_for(name)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def make_config(database_url: str, **overrides: Any) -> Config:
    """A validated Config for tests: test handlers, short intervals, the given overrides."""
    raw: dict[str, Any] = {
        "database": {"url": database_url, "pool_size": 5},
        "handlers": TEST_HANDLERS,
        "timeout_milliseconds": 200,
        "priority_queues": {"high": 1, "normal": 1, "low": 1},
    }
    for key, value in overrides.items():
        section, _, sub = key.partition("__")
        if sub:
            raw.setdefault(section, {})[sub] = value
        else:
            raw[key] = value
    return parse_config(raw, environ={})


@pytest.fixture
def config(database_url: str) -> Config:
    """The default test configuration against this test's database."""
    return make_config(database_url)


@pytest.fixture
def sql(database_url: str) -> Iterator[psycopg2.extensions.cursor]:
    """A synchronous autocommit cursor on this test's database, for setup and assertions."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        yield cur
    conn.close()


@pytest.fixture
def executions(
    sql: psycopg2.extensions.cursor, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> psycopg2.extensions.cursor:
    """The table the `record` handler writes to, and its DSN in the environment children inherit."""
    sql.execute("CREATE TABLE executions (task_id bigint, attempt int, pid int)")
    monkeypatch.setenv("ASYNCTASK_TEST_RECORD_DSN", database_url)
    return sql


@pytest.fixture
def cancels(
    sql: psycopg2.extensions.cursor, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> psycopg2.extensions.cursor:
    """The table the `cancellable` handler writes to when cancelled, its DSN in the environment."""
    sql.execute("CREATE TABLE cancels (task_id bigint, at timestamptz, pid int)")
    monkeypatch.setenv("ASYNCTASK_TEST_RECORD_DSN", database_url)
    return sql


@pytest.fixture(scope="session")
def api_stack(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real `asynctask api` and `asynctask workers` (high: 1) on a database of their own,
    shared by the client and client-CLI tests (each test uses tasks of its own)."""
    from tests.api_server import running

    name = f"asynctask_stack_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    try:
        with running(_url_for(name), tmp_path_factory.mktemp("stack")) as stack:
            yield stack
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
