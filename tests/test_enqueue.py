"""asynctask_enqueue(): a task created inside your own transaction, announced only at commit."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

from asynctask.workers.due import parse_at
from tests.test_worker import fetch

Connection = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor


@pytest.fixture
def app_conn(database_url: str) -> Iterator[Connection]:
    """An application's connection: transactions of its own (not autocommit)."""
    conn = psycopg2.connect(database_url)
    yield conn
    conn.close()


@pytest.fixture
def listener(database_url: str) -> Iterator[Connection]:
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("LISTEN tasks_high; LISTEN tasks_normal")
    yield conn
    conn.close()


def _heard(conn: Connection, wait: float = 0.3) -> list[tuple[str, str]]:
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        select.select([conn], [], [], left)
        conn.poll()
    heard = [(n.channel, n.payload) for n in conn.notifies]
    conn.notifies.clear()
    return heard


def _tasks(sql: Cursor) -> list[tuple[int, str, int, str]]:
    sql.execute("SELECT id, type, priority, asynctask_state(state, scheduled_at) FROM tasks")
    return sql.fetchall()


def test_a_rolled_back_transaction_leaves_no_task_and_no_notification(
    app_conn: Connection, listener: Connection, sql: Cursor
) -> None:
    with app_conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id int)")
        cur.execute("INSERT INTO orders VALUES (1)")
        cur.execute("SELECT asynctask_enqueue('report', '{\"order\": 1}', 'high')")
        assert fetch(cur)[0] == 1
    app_conn.rollback()
    assert _tasks(sql) == [] and _heard(listener) == []


def test_a_committed_transaction_announces_its_task_at_commit(
    app_conn: Connection, listener: Connection, sql: Cursor
) -> None:
    with app_conn.cursor() as cur:
        cur.execute("SELECT asynctask_enqueue('report', '{\"order\": 1}', 'high')")
        (task_id,) = fetch(cur)
        cur.execute(
            "SELECT asynctask_enqueue(type => 'report', scheduled_at => now() + interval '1 hour')"
        )
        (later_id,) = fetch(cur)
        assert _heard(listener) == []  # not before the commit
        assert _tasks(sql) == []  # nor visible
    app_conn.commit()
    heard = _heard(listener)
    assert heard[0] == ("tasks_high", str(task_id))  # as the API notifies: the id
    channel, payload = heard[1]
    assert channel == "tasks_normal" and parse_at(payload) is not None
    assert payload.endswith(f" {later_id}")
    assert sorted(_tasks(sql)) == [
        (task_id, "report", 1, "available"),
        (later_id, "report", 2, "scheduled"),
    ]
    sql.execute("SELECT data, max_attempts FROM tasks WHERE id = %s", (later_id,))
    assert fetch(sql) == ({}, 5)


def test_a_held_unique_key_returns_the_holder_and_announces_nothing(
    app_conn: Connection, listener: Connection, sql: Cursor
) -> None:
    enqueue = "SELECT asynctask_enqueue('report', unique_key => 'nightly')"
    with app_conn.cursor() as cur:
        cur.execute(enqueue)
        (first,) = fetch(cur)
    app_conn.commit()
    _heard(listener)
    with app_conn.cursor() as cur:
        cur.execute(enqueue)
        assert fetch(cur) == (first,)
    app_conn.commit()
    assert _heard(listener) == [] and len(_tasks(sql)) == 1
    sql.execute("UPDATE tasks SET state = 'completed'")
    with app_conn.cursor() as cur:
        cur.execute(enqueue)
        assert fetch(cur) != (first,)  # finished: the key is free


def test_a_bad_priority_is_an_error_naming_it(app_conn: Connection) -> None:
    with app_conn.cursor() as cur, pytest.raises(psycopg2.errors.InvalidParameterValue) as info:
        cur.execute("SELECT asynctask_enqueue('report', priority => 'urgent')")
    assert "priority must be high, normal or low, not 'urgent'" in str(info.value)
