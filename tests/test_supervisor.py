"""The supervisor with real processes and a real PostgreSQL: slots, crashes, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import multiprocessing
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg2.extensions
import pytest

from asynctask.cli.start import run_all, run_workers
from asynctask.core import task_rows
from asynctask.core.config import Config
from asynctask.core.connections import connect
from asynctask.core.errors import ConfigError, HandlerImportError
from asynctask.core.logs import setup_logging
from asynctask.core.models import Priority
from asynctask.workers.link import SlotLink
from asynctask.workers.slots import EXIT_CONFIG_ERROR, Slot, describe_exit
from asynctask.workers.watchdog import rss_mb
from tests.api_server import write_config
from tests.conftest import TEST_HANDLERS, make_config
from tests.procs import (
    CTX,
    children,
    count,
    executed,
    insert_many,
    kill_tree,
    listening,
    pid_of,
    stop,
    supervise,
    supervisor,
    title,
    waiting_for_work,
)
from tests.test_worker import fetch
from tests.waiting import wait_until

Cursor = psycopg2.extensions.cursor
ROOT = Path(__file__).resolve().parent.parent


# --- spawn targets (top level: they are pickled by reference) -----------------------------------


def supervise_all(config: Config, port: int) -> None:
    setup_logging("INFO", "text")
    sys.exit(run_all(config, "127.0.0.1", port))


def exit_config_error(*args: Any) -> None:
    sys.exit(EXIT_CONFIG_ERROR)


def crash_and_note(link: SlotLink, config: Config, *args: Any) -> None:
    with open(os.environ["ASYNCTASK_TEST_CRASH_FILE"], "a") as notes:
        notes.write(f"{time.monotonic()}\n")
    sys.exit(3)


async def block_loop(task: Any) -> None:
    """A coroutine handler that blocks the event loop: only the watchdog can stop it."""
    time.sleep(60)  # noqa: ASYNC251 - blocking the loop is the point of this handler


def middle(config: Config, pids: Any) -> None:
    """Start a worker, report its pid, and vanish without stopping it."""
    from asynctask.workers.process import run_worker

    ctx = multiprocessing.get_context("spawn")
    link = SlotLink(ctx, Slot("high_1", Priority.HIGH))
    link.spawning(None)
    child = ctx.Process(target=run_worker, args=(link, config))
    child.start()
    # Wait for its first heartbeat: a spawned child fetches its shared memory from this process
    # while unpickling its arguments, so vanishing earlier would leave it stuck before it runs.
    started = time.monotonic()
    while link.silent_for() >= time.monotonic() - started and time.monotonic() - started < 20:
        time.sleep(0.05)
    pids.put(child.pid)
    pids.close()
    pids.join_thread()
    os._exit(0)


# --- tests --------------------------------------------------------------------------------------


def test_slots_titles_polling_and_clean_stop(database_url: str, sql: Cursor) -> None:
    config = make_config(
        database_url, priority_queues={"high": 2, "normal": 1, "low": 0}, timeout_milliseconds=300
    )
    with supervisor(config, sql) as process:
        assert process.pid is not None
        assert title(process.pid) == "asynctask supervisor"
        assert set(children(pid_of(process))) == {
            "asynctask forkserver",
            "asynctask worker high_1",
            "asynctask worker high_2",
            "asynctask worker normal_1",
        }
        # Plain SQL, no NOTIFY: only the poll can find these.
        insert_many(sql, 30, priority=1)
        insert_many(sql, 10, priority=2)
        insert_many(sql, 5, priority=3)
        wait_until(lambda: count(sql, "state = 'completed'") == 40, timeout=10)
        sql.execute("SELECT count(DISTINCT locked_by) FROM tasks")
        assert stop(process) == 0
    assert count(sql, "state = 'running'") == 0
    assert count(sql, "priority = 3 AND state = 'available'") == 5  # no low workers configured


def test_notify_wakes_an_idle_worker_well_before_the_poll(database_url: str, sql: Cursor) -> None:
    config = make_config(
        database_url, priority_queues={"high": 1, "normal": 0, "low": 0}, timeout_milliseconds=5000
    )

    async def measure() -> list[float]:
        conn = await connect(database_url)
        latencies = []
        try:
            for _ in range(100):
                task = (
                    await task_rows.insert_task_rows(conn, [task_rows.NewRow("ok", 1, 1, "{}")])
                )[0]
                latencies.append(await _wait_started(conn, task["id"]))
        finally:
            conn.close()
        return latencies

    with supervisor(config, sql) as process:
        wait_until(lambda: waiting_for_work(sql) == 1)  # settled into its idle wait
        latencies = asyncio.run(measure())
        assert stop(process) == 0
    median, worst = statistics.median(latencies), max(latencies)
    print(
        f"\nidle wake-up latency over 100 tasks: median {median * 1000:.1f} ms,"
        f" worst {worst * 1000:.1f} ms"
    )
    assert worst < 2.5  # well under the 5 s poll interval: each one was woken by NOTIFY


def _slot_running(sql: Cursor, task_id: int, within: float = 2.5) -> str:
    """The slot (high_2) running a task, which must start within `within` seconds."""
    wait_until(lambda: count(sql, f"id = {task_id} AND state = 'running'") == 1, within)
    sql.execute("SELECT locked_by FROM tasks WHERE id = %s", (task_id,))
    return str(fetch(sql)[0]).rsplit(":", 1)[1]


def _create(database_url: str, type_: str, data: dict[str, Any], count: int = 1) -> list[int]:
    async def create() -> list[int]:
        conn = await connect(database_url)
        try:
            tasks = [(type_, 1, 1, json.dumps(data))] * count
            return await task_rows.insert_tasks(conn, tasks)
        finally:
            conn.close()

    return asyncio.run(create())


def _pool_of_two(database_url: str, sql: Cursor) -> Config:
    # A poll interval far past each test's waits: every start below was woken, none polled.
    return make_config(
        database_url,
        priority_queues={"high": 2, "normal": 0, "low": 0},
        timeout_milliseconds=60_000,
    )


def test_an_idle_pool_wakes_only_its_leader_for_a_single_task(
    database_url: str, sql: Cursor
) -> None:
    with supervisor(_pool_of_two(database_url, sql), sql) as process:
        wait_until(lambda: waiting_for_work(sql) == 2)  # both claimed nothing; they wait 60 s
        slots = []
        for _ in range(10):
            (task_id,) = _create(database_url, "sleepy", {"seconds": 0.2})
            slots.append(_slot_running(sql, task_id))
            wait_until(lambda: count(sql, "state = 'completed'") == len(slots))
        assert stop(process) == 0
    assert slots == ["high_1"] * 10  # high_2 never LISTENed and was never nudged


def test_a_task_created_while_the_leader_is_busy_starts_on_a_sibling(
    database_url: str, sql: Cursor
) -> None:
    with supervisor(_pool_of_two(database_url, sql), sql) as process:
        wait_until(lambda: waiting_for_work(sql) == 2)
        (first,) = _create(database_url, "sleepy", {"seconds": 5})
        assert _slot_running(sql, first) == "high_1"
        # The leader hears the next one too, but is busy: it nudges high_2 through its pipe.
        (second,) = _create(database_url, "sleepy", {"seconds": 5})
        assert _slot_running(sql, second) == "high_2"
        assert stop(process) == 0


def _replace(process: Any, sql: Cursor, slot: str) -> None:
    """SIGKILL a worker and wait until its replacement is connected and has looked for work."""
    title = f"asynctask worker {slot}"
    killed = children(pid_of(process))[title]
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: children(pid_of(process)).get(title, killed) != killed)
    wait_until(lambda: waiting_for_work(sql) == 2)  # its first claim found nothing: it waits


def test_a_batch_wakes_the_whole_pool_also_after_restarts(database_url: str, sql: Cursor) -> None:
    def batch_runs_on_both() -> None:
        ids = _create(database_url, "sleepy", {"seconds": 0.5}, count=2)
        assert {_slot_running(sql, task_id) for task_id in ids} == {"high_1", "high_2"}
        wait_until(lambda: count(sql, "state = 'available' OR state = 'running'") == 0)
        wait_until(lambda: waiting_for_work(sql) == 2)  # next claims found nothing: they wait

    with supervisor(_pool_of_two(database_url, sql), sql) as process:
        wait_until(lambda: waiting_for_work(sql) == 2)
        batch_runs_on_both()
        # A replacement of high_2 reads the same pipe; one of high_1 LISTENs and holds its end.
        _replace(process, sql, "high_2")
        batch_runs_on_both()
        _replace(process, sql, "high_1")
        batch_runs_on_both()
        (task_id,) = _create(database_url, "sleepy", {"seconds": 0.2})
        assert _slot_running(sql, task_id) == "high_1"
        assert stop(process) == 0


async def _wait_started(conn: Any, task_id: int) -> float:
    """Seconds from insert to claim (both on the database clock), once the task completed."""
    for _ in range(5000):
        started = await _started(conn, task_id)
        if started is not None:
            return started
        await asyncio.sleep(0.002)
    raise AssertionError(f"task {task_id} did not complete")


async def _started(conn: Any, task_id: int) -> float | None:
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT extract(epoch FROM started_at - inserted_at) FROM tasks"
            " WHERE id = %s AND state = 'completed'",
            (task_id,),
        )
        row = await cur.fetchone()
    return None if row is None else float(row[0])


def test_sigkill_mid_task_restarts_the_slot_and_loses_nothing(
    database_url: str, executions: Cursor
) -> None:
    sql = executions
    config = make_config(database_url, priority_queues={"high": 1, "normal": 0, "low": 0})
    sql.execute(
        "INSERT INTO tasks (type, priority, data) VALUES ('record', 1, '{\"seconds\": 2}')"
        " RETURNING id"
    )
    slow = fetch(sql)[0]
    insert_many(sql, 20, "record")
    with supervisor(config, sql) as process:
        assert process.pid is not None
        first = wait_until(lambda: children(pid_of(process)).get("asynctask worker high_1"))
        wait_until(lambda: executed(sql, slow) == 1)
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()
        second = wait_until(
            lambda: (
                (pid := children(pid_of(process)).get("asynctask worker high_1")) != first and pid
            ),
            interval=0.002,
        )
        replaced = time.monotonic() - killed_at
        wait_until(lambda: listening(sql) == 1)
        listening_after = time.monotonic() - killed_at
        wait_until(lambda: count(sql, "state = 'completed'") == 21, timeout=20)
        assert stop(process) == 0
    print(
        f"\nSIGKILL -> replacement process up: {replacement_ms(replaced)};"
        f" -> replacement LISTENing: {replacement_ms(listening_after)}"
    )
    assert second != first
    sql.execute("SELECT attempts, last_error FROM tasks WHERE id = %s", (slow,))
    attempts, last_error = fetch(sql)
    assert attempts == 2
    assert f"worker high_1 (pid {first}) died while running this task: killed by SIGKILL" in (
        last_error
    )
    assert executed(sql, slow) == 2  # at-least-once: the killed attempt ran, then the retry
    sql.execute("SELECT count(*), count(DISTINCT task_id) FROM executions")
    assert fetch(sql) == (22, 21)


def _holders(sql: Cursor) -> int:
    sql.execute("SELECT count(DISTINCT locked_by) FROM tasks WHERE state = 'running'")
    return int(fetch(sql)[0])


def replacement_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def test_a_killed_forkserver_is_replaced_and_takes_its_workers_with_it(
    database_url: str, sql: Cursor
) -> None:
    config = make_config(
        database_url, priority_queues={"high": 2, "normal": 0, "low": 0}, timeout_milliseconds=300
    )
    names = {"asynctask forkserver", "asynctask worker high_1", "asynctask worker high_2"}
    with supervisor(config, sql) as process:
        before = wait_until(lambda: (kids := children(pid_of(process))).keys() == names and kids)
        os.kill(before["asynctask forkserver"], signal.SIGKILL)

        def replaced() -> dict[str, int] | None:
            kids = children(pid_of(process))
            fresh = kids.keys() == names and not set(kids.values()) & set(before.values())
            return kids if fresh else None

        after = wait_until(replaced, timeout=20)
        # No one could report the old workers' exits any more: they were killed, not left to run
        # beside their replacements.
        assert not any(_alive(pid) for pid in before.values())
        wait_until(lambda: listening(sql) == 2)
        insert_many(sql, 10)
        wait_until(lambda: count(sql, "state = 'completed'") == 10, timeout=10)
        # The spawned replacement forks the next replacement just the same.
        os.kill(after["asynctask worker high_1"], signal.SIGKILL)
        wait_until(
            lambda: (
                children(pid_of(process)).get("asynctask worker high_1")
                not in (None, after["asynctask worker high_1"])
            )
        )
        assert children(pid_of(process))["asynctask forkserver"] == after["asynctask forkserver"]
        assert stop(process) == 0


def test_as_pid_1_the_supervisor_replaces_a_killed_forkserver_and_leaves_no_zombie(
    database_url: str, sql: Cursor, tmp_path: Path
) -> None:
    # As PID 1 (a container without an init) the supervisor reaps orphans itself: it must leave
    # its fork server to multiprocessing, and reap the workers a dead server leaves behind.
    config_file = write_config(
        tmp_path / "config.yaml",
        database_url,
        priority_queues={"high": 2, "normal": 0, "low": 0},
        timeout_milliseconds=300,
    )
    command = [sys.executable, "-m", "asynctask.cli", "--config", str(config_file), "workers"]
    process = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", *command],
        cwd=ROOT,
        start_new_session=True,
    )
    names = {"asynctask forkserver", "asynctask worker high_1", "asynctask worker high_2"}

    def ours() -> dict[str, int]:
        # Not multiprocessing's resource tracker, which the spawned replacement server brings.
        kids = children(supervisor_pid)
        return {name: pid for name, pid in kids.items() if name.startswith("asynctask ")}

    try:
        supervisor_pid = wait_until(lambda: children(process.pid).get("asynctask supervisor"))
        before = wait_until(lambda: (kids := ours()).keys() == names and kids)
        wait_until(lambda: listening(sql) == 2)
        killed_at = time.monotonic()
        os.kill(before["asynctask forkserver"], signal.SIGKILL)
        wait_until(
            lambda: ours().keys() == names and not set(ours().values()) & set(before.values()),
            timeout=20,
            interval=0.01,
        )
        replaced = time.monotonic() - killed_at
        wait_until(lambda: listening(sql) == 2)
        insert_many(sql, 10)
        wait_until(lambda: count(sql, "state = 'completed'") == 10, timeout=10)
        # Orphans are reaped on the supervisor's 1 s tick.
        wait_until(lambda: _zombies_of(supervisor_pid) == [], timeout=5)
        os.kill(supervisor_pid, signal.SIGTERM)
        print(f"\nforkserver SIGKILLed -> new server, both workers up: {replacement_ms(replaced)}")
        assert process.wait(20) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def _zombies_of(parent: int) -> list[str]:
    """Children of `parent` that exited and were not reaped (state Z)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z" and int(fields[1]) == parent:
                found.append(stat.read_text())
    return found


def test_sigkill_of_the_whole_supervisor_leaves_nothing_running(
    database_url: str, executions: Cursor
) -> None:
    sql = executions
    config = make_config(
        database_url, priority_queues={"high": 2, "normal": 0, "low": 0}, lease_seconds=120
    )
    insert_many(sql, 6, "record", '{"seconds": 1.5}')
    with supervisor(config, sql) as process:
        # Both workers hold a claim (not one worker a claim of two): two dead processes to charge.
        wait_until(lambda: count(sql, "state = 'running'") >= 2 and _holders(sql) == 2)
        kill_tree(process)
    assert count(sql, "state = 'running'") >= 2  # the killed claims are still there
    started = time.monotonic()
    with supervisor(config, sql) as process:
        wait_until(lambda: count(sql, "state = 'completed'") == 6, timeout=30)
        assert stop(process) == 0
    assert time.monotonic() - started < 60  # released at start, long before the 120 s lease
    assert count(sql, "state = 'running'") == 0
    assert count(sql, "last_error LIKE 'worker process % died while running this task%'") >= 2


def test_hung_sync_handler_times_out_and_its_process_is_replaced(
    database_url: str, sql: Cursor
) -> None:
    handlers = {**TEST_HANDLERS, "hang": {"function": "tests.handlers:hang", "timeout_seconds": 1}}
    config = make_config(
        database_url, priority_queues={"high": 1, "normal": 0, "low": 0}, handlers=handlers
    )
    sql.execute(
        "INSERT INTO tasks (type, priority, max_attempts) VALUES ('hang', 1, 2) RETURNING id"
    )
    hung = fetch(sql)[0]
    insert_many(sql, 3)
    with supervisor(config, sql) as process:
        assert process.pid is not None
        pids = {children(pid_of(process))["asynctask worker high_1"]}
        while count(sql, f"id = {hung} AND state = 'failed'") == 0:
            pid = children(pid_of(process)).get("asynctask worker high_1")
            pids |= {pid} if pid else set()
            time.sleep(0.05)
        wait_until(lambda: count(sql, "state = 'completed'") == 3)
        assert stop(process) == 0
    assert len(pids) >= 2  # each stuck attempt cost its process
    sql.execute("SELECT attempts, last_error FROM tasks WHERE id = %s", (hung,))
    attempts, last_error = fetch(sql)
    assert attempts == 2
    assert last_error.startswith("TimeoutError: attempt exceeded its timeout of 1 s")


def test_sigterm_finishes_the_running_task_and_releases_prefetched(
    database_url: str, sql: Cursor
) -> None:
    config = make_config(database_url, priority_queues={"high": 1, "normal": 0, "low": 0})
    insert_many(sql, 10, "sleepy", '{"seconds": 0.5}')
    with supervisor(config, sql) as process:
        wait_until(lambda: count(sql, "state = 'running'") >= 2)  # a claim of 2: one waits
        assert stop(process) == 0
    assert count(sql, "state = 'running'") == 0
    assert count(sql, "state = 'completed'") >= 2
    assert count(sql, "state = 'available' AND attempts = 0") == 10 - count(
        sql, "state = 'completed'"
    )


def test_second_signal_kills_at_once_and_the_next_start_releases(
    database_url: str, sql: Cursor
) -> None:
    config = make_config(
        database_url,
        priority_queues={"high": 1, "normal": 0, "low": 0},
        shutdown_timeout_seconds=1,
    )
    sql.execute(
        "INSERT INTO tasks (type, priority, data) VALUES ('sleepy', 1, '{\"seconds\": 60}')"
    )
    with supervisor(config, sql) as process:
        wait_until(lambda: count(sql, "state = 'running'") == 1)
        os.kill(pid_of(process), signal.SIGTERM)
        wait_until(lambda: title(pid_of(process)) == "asynctask supervisor (stopping)")
        began = time.monotonic()
        assert stop(process) == 0  # the second SIGTERM: no 30 s grace
        assert time.monotonic() - began < 5
    assert count(sql, "state = 'running'") == 1  # cut off by the kill
    with supervisor(config, sql) as process:
        released_and_rerun = (
            "state = 'running' AND attempts = 2"
            " AND last_error LIKE 'worker process % died while running this task%'"
        )
        wait_until(lambda: count(sql, released_and_rerun) == 1)
        assert stop(process) == 0
    sql.execute("SELECT state, last_error FROM tasks")
    assert fetch(sql) == (
        "retrying",
        "TimeoutError: worker stopping: attempt cut off after shutdown_timeout_seconds = 1",
    )


def test_two_supervisors_run_each_task_exactly_once(database_url: str, executions: Cursor) -> None:
    sql = executions
    config = make_config(database_url, priority_queues={"high": 2, "normal": 0, "low": 0})
    with supervisor(config) as one, supervisor(config, sql) as two:
        wait_until(lambda: listening(sql) == 4)
        insert_many(sql, 2000, "record")
        sql.execute("SELECT pg_notify('tasks_high', '')")
        wait_until(lambda: count(sql, "state = 'completed'") == 2000, timeout=120)
        assert one.pid is not None and two.pid is not None
        pids_one, pids_two = set(children(one.pid).values()), set(children(two.pid).values())
        assert stop(one) == 0 and stop(two) == 0
    sql.execute(
        "SELECT count(*) - count(DISTINCT task_id), count(DISTINCT task_id) FROM executions"
    )
    duplicates, distinct = fetch(sql)
    print(f"\ntwo supervisors, 2000 tasks: {duplicates} duplicate executions")
    assert (duplicates, distinct) == (0, 2000)
    sql.execute("SELECT DISTINCT pid FROM executions")
    pids = {row[0] for row in sql.fetchall()}
    assert pids & pids_one and pids & pids_two  # both supervisors did work


def test_connection_budget_refusal_names_both_numbers(database_url: str, sql: Cursor) -> None:
    sql.execute(
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
    )
    available = fetch(sql)[0]
    config = make_config(database_url, priority_queues={"high": 256, "normal": 0, "low": 0})
    with pytest.raises(ConfigError) as info:
        run_workers(config)
    assert "need 1 each = 256, 256 in all" in str(info.value)
    assert f"allows {available}" in str(info.value)
    workers = available - 5  # enough room for the workers alone, not for the API pool too
    config = make_config(
        database_url,
        priority_queues={"high": workers, "normal": 0, "low": 0},
        database__pool_size=10,
    )
    with pytest.raises(ConfigError, match=r"API pools' 10 \(database.pool_size x api.processes\)"):
        run_all(config, "127.0.0.1", 0)


def test_handler_import_error_stops_before_starting(database_url: str, tmp_path: Path) -> None:
    config = make_config(database_url, handlers={"bad": "tests.no_such_module:fn"})
    with pytest.raises(HandlerImportError, match=r"handlers.bad: 'tests.no_such_module:fn'"):
        run_workers(config)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        f"database: {{url: '{database_url}'}}\nhandlers: {{bad: 'tests.no_such_module:fn'}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "asynctask.cli", "--config", str(config_file), "workers"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "handlers.bad: 'tests.no_such_module:fn' cannot be imported" in result.stderr
    assert "asynctask worker" not in result.stderr


def test_no_workers_configured_is_refused(database_url: str) -> None:
    config = make_config(database_url, priority_queues={"high": 0, "normal": 0, "low": 0})
    with pytest.raises(ConfigError, match="priority_queues"):
        run_workers(config)


def test_child_config_error_halts_instead_of_looping(database_url: str) -> None:
    config = make_config(database_url)
    process = CTX.Process(target=supervise, args=(config,), kwargs={"target": exit_config_error})
    process.start()
    process.join(20)
    assert process.exitcode == 1


def test_crash_loop_is_slowed_by_backoff(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = tmp_path / "crashes"
    monkeypatch.setenv("ASYNCTASK_TEST_CRASH_FILE", str(notes))
    config = make_config(database_url, priority_queues={"high": 1, "normal": 0, "low": 0})
    process = CTX.Process(target=supervise, args=(config,), kwargs={"target": crash_and_note})
    process.start()
    try:
        # Long enough for the backoff to show: at once, then 0.25-0.5 s, 0.5-1 s, 1-2 s.
        wait_until(lambda: notes.exists() and len(notes.read_text().split()) >= 4, timeout=10)
        assert stop(process) == 0
    finally:
        kill_tree(process)
    starts = [float(line) for line in notes.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert 2 <= len(starts) <= 8  # at once, then 0.25-0.5 s, 0.5-1 s, 1-2 s ... not hundreds
    assert gaps == sorted(gaps) or len(gaps) < 3


def test_watchdog_kills_a_worker_whose_loop_is_blocked(database_url: str, sql: Cursor) -> None:
    handlers = {**TEST_HANDLERS, "block": "tests.test_supervisor:block_loop"}
    config = make_config(
        database_url,
        priority_queues={"high": 1, "normal": 0, "low": 0},
        handlers=handlers,
        task_timeout_seconds=0.5,
    )
    sql.execute("INSERT INTO tasks (type, priority, max_attempts) VALUES ('block', 1, 1)")
    with supervisor(config, sql, grace=1.0) as process:
        wait_until(lambda: count(sql, "state = 'failed'") == 1, timeout=20)
        assert stop(process) == 0
    sql.execute("SELECT last_error FROM tasks")
    assert "killed by the watchdog: no heartbeat for" in fetch(sql)[0]


def test_memory_limit_kills_and_restarts(database_url: str, sql: Cursor) -> None:
    config = make_config(
        database_url, priority_queues={"high": 1, "normal": 0, "low": 0}, worker_max_memory_mb=16
    )
    with supervisor(config, grace=10.0) as process:
        assert process.pid is not None
        seen: set[int] = set()

        def restarted() -> bool:
            pid = children(pid_of(process)).get("asynctask worker high_1")
            seen.update({pid} if pid else set())
            return len(seen) >= 2

        wait_until(restarted, timeout=20)
        assert stop(process) == 0
    assert rss_mb(os.getpid()) > 1 and rss_mb(999_999_999) == 0


def test_worker_exits_when_its_supervisor_vanishes(database_url: str) -> None:
    config = make_config(database_url)
    pids = CTX.Queue()
    parent = CTX.Process(target=middle, args=(config, pids))
    parent.start()
    worker = pids.get(timeout=20)
    parent.join(10)
    try:
        wait_until(
            lambda: children(os.getpid()).get(title(worker)) is None and not _alive(worker),
            timeout=20,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_describe_exit() -> None:
    assert describe_exit(None) == "still running"
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-9) == "killed by SIGKILL (perhaps out of memory?)"
    assert describe_exit(-15) == "killed by SIGTERM"
    assert describe_exit(-200) == "killed by signal 200"


@pytest.mark.skipif(importlib.util.find_spec("asynctask.service.app") is None, reason="no API yet")
def test_run_all_starts_the_api_and_the_workers(database_url: str, sql: Cursor) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = make_config(database_url, priority_queues={"high": 1, "normal": 0, "low": 0})
    process = CTX.Process(target=supervise_all, args=(config, port))
    process.start()
    try:
        assert process.pid is not None
        wait_until(
            lambda: {"asynctask api", "asynctask worker high_1"} <= set(children(pid_of(process)))
        )
        wait_until(lambda: _accepts(port))  # the API is serving (and handles SIGTERM itself)
        assert stop(process) == 0
    finally:
        kill_tree(process)


def _listeners(pid: int, port: int) -> bool:
    """True if process `pid` has a listening TCP socket on `port` (from /proc, no tools)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].split(":")[1], 16), fields[3], fields[9]
        if local_port == port and state == "0A" and inode in inodes:  # 0A: LISTEN
            return True
    return False


def test_api_processes_share_one_port_and_are_restarted_like_workers(
    database_url: str, sql: Cursor
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = make_config(
        database_url, priority_queues={"high": 1, "normal": 0, "low": 0}, api__processes=2
    )
    process = CTX.Process(target=supervise_all, args=(config, port))
    process.start()
    try:
        names = {"asynctask api_1", "asynctask api_2", "asynctask worker high_1"}
        found = wait_until(lambda: (c := children(pid_of(process))) and names <= set(c) and c)
        wait_until(
            lambda: all(_listeners(found[n], port) for n in ("asynctask api_1", "asynctask api_2"))
        )
        os.kill(found["asynctask api_1"], signal.SIGKILL)
        replaced = wait_until(
            lambda: (
                children(pid_of(process)).get("asynctask api_1", found["asynctask api_1"])
                != found["asynctask api_1"]
                and children(pid_of(process))["asynctask api_1"]
            )
        )
        wait_until(lambda: _listeners(replaced, port))
        for _ in range(20):  # every request is answered, whichever process takes it
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                assert answer.status == 200
        assert stop(process) == 0
    finally:
        kill_tree(process)


def test_the_api_command_supervises_its_processes_when_there_are_several(
    database_url: str, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environ = {**os.environ, "DATABASE_URL": database_url, "ASYNCTASK_API_PROCESSES": "2"}
    command = [sys.executable, "-m", "asynctask.cli", "api", "--port", str(port)]
    api = subprocess.Popen(command, env=environ, cwd=tmp_path)
    try:
        names = {"asynctask api_1", "asynctask api_2"}
        found = wait_until(lambda: (c := children(api.pid)) and names <= set(c) and c, timeout=30)
        wait_until(lambda: all(_listeners(found[name], port) for name in names))
        api.send_signal(signal.SIGTERM)
        assert api.wait(30) == 0
    finally:
        api.kill()


def test_ctrl_c_is_logged_as_a_requested_stop_that_waits_for_the_running_task(
    database_url: str, sql: Cursor, tmp_path: Path
) -> None:
    # `asynctask run` in a terminal: Ctrl-C sends SIGINT to the whole process group, so the API
    # and the workers get it too, besides the supervisor's own SIGTERM.
    config = write_config(tmp_path / "config.yaml", database_url, shutdown_timeout_seconds=20)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "asynctask.cli", "run", "--config", str(config)]
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)], stderr=log, start_new_session=True
        )
    try:
        wait_until(lambda: _accepts(port) and listening(sql) == 1, timeout=30)
        sql.execute(
            "INSERT INTO tasks (type, priority, data) VALUES ('sleepy', 1, '{\"seconds\": 1}')"
        )
        wait_until(lambda: count(sql, "state = 'running'") == 1)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    text = log_path.read_text()
    assert (
        "stopping 2 processes; 1 task is running (high_1: task 1): waiting up to 20 s for it"
        " to finish (shutdown_timeout_seconds), then it is cut off and retried later" in text
    ), text
    assert count(sql, "state = 'completed'") == 1
    for name in ("api", "high_1"):
        assert re.search(rf"supervisor: {name} \(pid \d+\) stopped\n", text), text
    assert "exited" not in text and "killed" not in text, text


def test_the_stop_notice_names_every_running_task_or_says_none_runs() -> None:
    from types import SimpleNamespace

    from asynctask.workers.children import stop_notice

    def child(name: str, task: int | None, alive: bool = True) -> Any:
        return SimpleNamespace(name=name, running_task=task, process=object() if alive else None)

    idle = [child("high_1", None), child("api", None), child("low_1", 9, alive=False)]
    assert stop_notice(idle, 30) == "stopping 2 processes; no task is running"
    busy = [child("high_1", 7), child("high_2", None), child("normal_1", 12)]
    assert stop_notice(busy, 2.5) == (
        "stopping 3 processes; 2 tasks are running (high_1: task 7, normal_1: task 12): waiting"
        " up to 2.5 s for them to finish (shutdown_timeout_seconds), then they are cut off and"
        " retried later"
    )


def test_the_heartbeat_file_is_touched_while_the_loop_turns_and_removed_at_exit(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    heartbeat = tmp_path / "alive"
    monkeypatch.setenv("ASYNCTASK_HEARTBEAT_FILE", str(heartbeat))
    config = make_config(database_url, priority_queues={"high": 1, "normal": 0, "low": 0})
    with supervisor(config) as process:
        first = wait_until(lambda: heartbeat.exists() and heartbeat.stat().st_mtime)
        wait_until(lambda: heartbeat.stat().st_mtime > first)  # again, about a second later
        assert stop(process) == 0
    assert not heartbeat.exists()


def test_an_unwritable_heartbeat_file_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from asynctask.workers.alive import heartbeat_file

    assert heartbeat_file({}) is None and heartbeat_file({"ASYNCTASK_HEARTBEAT_FILE": " "}) is None
    beat = heartbeat_file({"ASYNCTASK_HEARTBEAT_FILE": str(tmp_path / "missing" / "alive")})
    assert beat is not None
    for _ in range(3):
        beat.beat()  # the first fails and turns it off; the next ones do nothing
    warnings = [r for r in caplog.records if "ASYNCTASK_HEARTBEAT_FILE" in r.getMessage()]
    assert len(warnings) == 1 and "no heartbeat file" in warnings[0].getMessage()
    beat.remove()  # nothing to remove: no error
