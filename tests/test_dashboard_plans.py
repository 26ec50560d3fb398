"""Every query the dashboard runs, planned on a table big enough that a full scan would show.

bench/dashboard_big.py times the same routes on 10,000,000 rows; here the planner's choice is the
check: no plan may read the whole `tasks` table (a Seq Scan), whatever the filter.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from asynctask.core import task_rows
from asynctask.core.bulk import BULK_CANCELLABLE, BulkFilter
from asynctask.core.heartbeats import DEAD_AFTER_SECONDS
from asynctask.core.models import (
    PRIORITIES,
    RETRYABLE_STATES,
    STATES,
    Priority,
    State,
)
from asynctask.core.sql import QUERIES, inline_params
from tests.conftest import _admin, _url_for

Cursor = psycopg2.extensions.cursor
ROWS = 300_000
# Mostly completed, as a long-lived table is; a few of every other state, types common and rare.
FILL = f"""
INSERT INTO tasks (type, priority, state, attempts, finished_at, lease_expires_at, locked_by)
SELECT CASE WHEN i % 1000 = 0 THEN 'rare' WHEN i % 10 = 0 THEN 'finances' ELSE 'report' END,
    CASE WHEN i % 50 = 0 THEN 3 WHEN i % 5 = 0 THEN 2 ELSE 1 END,
    s.state, 1, now(),
    CASE WHEN s.state = 'running' THEN now() + interval '30 seconds' END,
    CASE WHEN s.state = 'running' THEN 'h:1:high_1' END
FROM generate_series(1, {ROWS}) AS i,
LATERAL (SELECT CASE
    WHEN i % 997 = 0 THEN 'failed' WHEN i % 1999 = 0 THEN 'cancelled'
    WHEN i % 2003 = 0 THEN 'retrying' WHEN i > {ROWS} - 2000 AND i % 3 = 0 THEN 'available'
    WHEN i > {ROWS} - 20 THEN 'running' ELSE 'completed' END AS state) AS s
"""
LIST_FILTERS = list(
    itertools.product([None, *STATES], [None, *PRIORITIES], [None, "report", "rare", "nope"])
)


@pytest.fixture(scope="module")
def big(template_db: str) -> Iterator[Cursor]:
    """One database for the module: ROWS tasks, analyzed and vacuumed."""
    name = "asynctask_plans_" + template_db.rsplit("_", 1)[1]
    admin = _admin()
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    conn = psycopg2.connect(_url_for(name))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(FILL)
        cur.execute("VACUUM ANALYZE tasks")
        yield cur
    conn.close()
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def plan(cur: Cursor, name: str, *params: Any) -> str:
    cur.execute("EXPLAIN " + QUERIES[name].inline, inline_params(params))
    return "\n".join(row[0] for row in cur.fetchall())


def assert_indexed(text: str) -> None:
    assert "Seq Scan on tasks" not in text, text


@pytest.mark.parametrize(("state", "priority", "type_"), LIST_FILTERS)
def test_every_task_list_filter_reads_the_index(
    big: Cursor, state: str | None, priority: str | None, type_: str | None
) -> None:
    chosen = None if priority is None else Priority(priority)
    shown = None if state is None else State(state)
    for before in (None, ROWS // 2):
        params = task_rows.list_params(101, 1 << 20, shown, chosen, type_, before)
        text = plan(big, "list_tasks", *params)
        assert_indexed(text)
        if state != "running":
            assert "tasks_list_idx" in text
        if state in (None, "running"):
            assert "tasks_running_idx" in text


def test_a_filter_that_matches_nothing_reads_almost_nothing(big: Cursor) -> None:
    params = task_rows.list_params(101, 1 << 20, None, None, "nope", None)
    big.execute("EXPLAIN (ANALYZE, BUFFERS) " + QUERIES["list_tasks"].inline, inline_params(params))
    lines = [row[0] for row in big.fetchall()]
    total = next(line for line in lines if "Buffers:" in line)  # the top node's: all of them
    pages = sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", total))
    assert pages < 200, "\n".join(lines)  # a probe per (state, priority), not a page per row


@pytest.mark.parametrize(
    ("action", "states", "priority", "type_"),
    [
        ("bulk_cancel", BULK_CANCELLABLE, None, None),
        ("bulk_cancel", BULK_CANCELLABLE, Priority.LOW, "rare"),
        ("bulk_cancel", (State.RETRYING,), None, "report"),
        ("bulk_retry", RETRYABLE_STATES, None, None),
        ("bulk_retry", (State.FAILED,), Priority.HIGH, "finances"),
    ],
)
def test_bulk_actions_update_through_the_index(
    big: Cursor,
    action: str,
    states: tuple[State, ...],
    priority: Priority | None,
    type_: str | None,
) -> None:
    chosen = BulkFilter([str(s) for s in states], priority=priority, type=type_)
    params = chosen.params() if action == "bulk_cancel" else chosen.params()[:3]
    assert_indexed(plan(big, action, *params))


def test_the_overview_and_the_other_pages_never_scan_tasks(big: Cursor) -> None:
    big.execute("SELECT max(id) FROM tasks")
    (last,) = big.fetchone()  # type: ignore[misc]
    assert_indexed(plan(big, "get_task", last))
    assert_indexed(plan(big, "queue_lag", [p.number for p in PRIORITIES]))
    for name, params in {
        "count_tasks": (),
        "task_moves": (60,),
        "queue_states": (),
        "list_workers": (DEAD_AFTER_SECONDS,),
        "workers_summary": (DEAD_AFTER_SECONDS,),
        "dead_supervisors": (DEAD_AFTER_SECONDS,),
    }.items():
        text = plan(big, name, *params)
        assert " tasks " not in text.replace("(", " ").replace(")", " "), (name, text)
