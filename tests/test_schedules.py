"""Periodic tasks: config, ticks (time zones, DST), one task per tick, catch-up."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2.extensions
import pytest
import yaml
from aiohttp.test_utils import TestClient

from asynctask.cli.main import main
from asynctask.core import periodic
from asynctask.core.config import Config
from asynctask.core.connections import connect
from asynctask.core.errors import ConfigError
from asynctask.core.schedules import Schedule
from asynctask.service.app import create_app
from asynctask.workers.connection import QueryConnection
from asynctask.workers.scheduler import Scheduler
from tests import procs
from tests.conftest import TEST_HANDLERS, make_config
from tests.waiting import wait_until

Cursor = psycopg2.extensions.cursor
EVERY_SECOND = {"name": "tick", "cron": "* * * * * *", "type": "returns", "priority": "high"}
BERLIN = "Europe/Berlin"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- config ---------------------------------------------------------------------------------------


def test_a_schedule_is_read_with_its_defaults(database_url: str) -> None:
    config = make_config(
        database_url,
        max_attempts=7,
        schedules=[
            {"name": "nightly", "cron": "0  3 * * *", "type": "report", "data": {"a": 1}},
            {**EVERY_SECOND, "timezone": BERLIN, "catch_up": True, "max_attempts": 2},
            {"name": "some", "cron": "*/5 * * * *", "type": "report", "catch_up": 12},
        ],
    )
    nightly, tick, some = config.schedules
    assert nightly == Schedule(
        "nightly", "0 3 * * *", "report", data_json='{"a": 1}', max_attempts=7
    )
    assert (tick.timezone, tick.catch_up, tick.max_attempts, tick.priority) == (
        BERLIN,
        100,
        2,
        "high",
    )
    assert some.catch_up == 12


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"cron": "61 * * * *"},
            "schedules[1].cron: '61 * * * *' is not allowed (a cron expression of 5 fields, or 6"
            " with seconds first: Bad minute)",
        ),
        ({"cron": "@daily"}, "schedules[1].cron: '@daily' is not allowed (a cron expression"),
        ({"cron": 5}, "schedules[1].cron: 5 is not allowed"),
        ({"type": "nope"}, "schedules[1].type: 'nope' is not allowed (one of the handlers: "),
        ({"timezone": "Mars/Base"}, "schedules[1].timezone: 'Mars/Base' is not allowed (an IANA"),
        ({"priority": "urgent"}, "schedules[1].priority: 'urgent' is not allowed (one of high"),
        ({"catch_up": 0}, "schedules[1].catch_up: 0 is not allowed (false, true (the last 100)"),
        ({"data": [1]}, "schedules[1].data: [1] is not allowed (a mapping"),
        ({"name": "tick"}, "schedules[1].name: 'tick' is used twice"),
        ({"when": 1}, "schedules[1].when: unknown key (allowed: name, cron, type"),
        ({"name": None}, "schedules[1].name: None is not allowed"),
    ],
)
def test_a_bad_schedule_names_its_key(
    database_url: str, entry: dict[str, Any], message: str
) -> None:
    second = {**EVERY_SECOND, "name": "other", **entry}
    with pytest.raises(ConfigError) as caught:
        make_config(database_url, schedules=[EVERY_SECOND, second])
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_an_invalid_cron_stops_start_up_with_one_line(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = {
        "database": {"url": database_url},
        "handlers": TEST_HANDLERS,
        "schedules": [{"name": "x", "cron": "* * 32 * *", "type": "report"}],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    assert main(["--config", str(tmp_path / "config.yaml"), "workers"]) == 2
    assert capsys.readouterr().err == (
        "asynctask: schedules[0].cron: '* * 32 * *' is not allowed (a cron expression of 5"
        " fields, or 6 with seconds first: Bad day-of-month)\n"
    )


# --- ticks ----------------------------------------------------------------------------------------


def test_ticks_follow_the_time_zone_and_debian_cron_across_dst() -> None:
    daily = Schedule("d", "30 2 * * *", "report", timezone=BERLIN)
    # Spring forward (2024-03-31, 02:00 -> 03:00): 02:30 does not exist; it runs at the jump.
    assert daily.next_tick(utc("2024-03-30T12:00:00+01:00")) == utc("2024-03-31T03:00:00+02:00")
    assert daily.next_tick(utc("2024-03-31T03:00:00+02:00")) == utc("2024-04-01T02:30:00+02:00")
    # Fall back (2024-10-27, 03:00 -> 02:00): 02:30 happens twice; it runs once.
    first = daily.next_tick(utc("2024-10-26T12:00:00+02:00"))
    assert first == utc("2024-10-27T02:30:00+02:00")
    assert daily.next_tick(first) == utc("2024-10-28T02:30:00+01:00")
    # A job with `*` in the hour follows the real clock: the repeated hour runs twice.
    half_hourly = Schedule("h", "*/30 * * * *", "report", timezone=BERLIN)
    ticks, _ = half_hourly.ticks_between(
        utc("2024-10-27T01:45:00+02:00"), utc("2024-10-27T03:00:00+01:00"), 10
    )
    assert [t.isoformat() for t in ticks] == [
        "2024-10-27T00:00:00+00:00",  # 02:00 CEST
        "2024-10-27T00:30:00+00:00",  # 02:30 CEST
        "2024-10-27T01:00:00+00:00",  # 02:00 CET
        "2024-10-27T01:30:00+00:00",  # 02:30 CET
        "2024-10-27T02:00:00+00:00",  # 03:00 CET
    ]
    # The same expression in UTC is plain.
    assert Schedule("u", "30 2 * * *", "report").next_tick(utc("2024-03-31T00:00:00+00:00")) == utc(
        "2024-03-31T02:30:00+00:00"
    )


def test_ticks_between_walks_back_from_the_latest() -> None:
    minutely = Schedule("m", "* * * * *", "report")
    since, until = utc("2024-01-01T00:00:30+00:00"), utc("2024-01-01T00:10:00+00:00")
    ticks, older = minutely.ticks_between(since, until, 100)
    assert len(ticks) == 10 and ticks[0] == utc("2024-01-01T00:01:00+00:00") and not older
    assert ticks[-1] == until  # `until` itself is included
    latest, older = minutely.ticks_between(since, until, 3)
    assert latest == ticks[-3:] and older
    # A year of missed seconds costs `limit` steps, not thirty million.
    started = time.monotonic()
    ticks, older = Schedule("s", "* * * * * *", "report").ticks_between(
        until - timedelta(days=365), until, 1
    )
    assert ticks == [until] and older and time.monotonic() - started < 1


# --- schedulers against the database --------------------------------------------------------------


def _fired(sql: Cursor) -> list[tuple[datetime, datetime]]:
    """(scheduled_at, inserted_at) of every task a schedule made, in tick order."""
    sql.execute("SELECT scheduled_at, inserted_at FROM tasks ORDER BY scheduled_at")
    return list(sql.fetchall())


def _assert_one_per_tick(fired: list[tuple[datetime, datetime]]) -> None:
    ticks = [tick for tick, _ in fired]
    assert len(set(ticks)) == len(ticks), "a tick made two tasks"
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks))
    lags = sorted((inserted - tick).total_seconds() * 1000 for tick, inserted in fired)
    print(
        f"{len(ticks)} ticks; enqueued after the tick: median {lags[len(lags) // 2]:.1f} ms,"
        f" max {lags[-1]:.1f} ms"
    )


async def _schedulers(config: Config, n: int) -> list[Scheduler]:
    url = str(config.database.url)
    return [Scheduler(QueryConnection(url, 5.0), config.schedules, f"s{i}") for i in range(n)]


async def test_two_schedulers_make_one_task_per_tick(database_url: str, sql: Cursor) -> None:
    config = make_config(database_url, schedules=[EVERY_SECOND])
    schedulers = await _schedulers(config, 2)
    runs = [asyncio.create_task(s.run()) for s in schedulers]
    try:
        await asyncio.sleep(4.5)
    finally:
        for run in runs:
            run.cancel()
        await asyncio.wait(runs)
        for scheduler in schedulers:
            scheduler.conn.close()
    fired = _fired(sql)
    assert len(fired) >= 3
    _assert_one_per_tick(fired)
    sql.execute("SELECT last_task_id = (SELECT max(id) FROM tasks) FROM schedule_state")
    assert sql.fetchone() == (True,)


async def test_racing_statements_make_one_task(database_url: str, sql: Cursor) -> None:
    schedule = make_config(database_url, schedules=[EVERY_SECOND]).schedules[0]
    conns = [await connect(database_url) for _ in range(8)]
    try:
        await periodic.register_schedules(conns[0], [schedule.name])
        sql.execute("UPDATE schedule_state SET last_tick_at = now() - interval '1 minute'")
        tick = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        done = await asyncio.gather(*(periodic.fire_schedule(c, schedule, [tick]) for c in conns))
    finally:
        for conn in conns:
            conn.close()
    assert sum(f.moved_to is not None for f in done) == 1
    assert [t for t, _ in _fired(sql)] == [tick]


@pytest.mark.parametrize(("catch_up", "expected"), [(False, 1), (True, 10), (3, 3)])
async def test_missed_ticks_run_by_catch_up(
    database_url: str, sql: Cursor, catch_up: bool | int, expected: int
) -> None:
    minutely = {**EVERY_SECOND, "cron": "* * * * *", "catch_up": catch_up}
    config = make_config(database_url, schedules=[minutely])
    (scheduler,) = await _schedulers(config, 1)
    try:
        await scheduler.join()  # first seen: no back-fill
        assert await scheduler.fire_due() == 0
        # Every scheduler was down for ten minutes.
        sql.execute("UPDATE schedule_state SET last_tick_at = last_tick_at - interval '10 minutes'")
        await scheduler.join()
        await scheduler.fire_due()
        await scheduler.fire_due()  # nothing twice
    finally:
        scheduler.conn.close()
    missed = [tick for tick, _ in _fired(sql) if tick <= scheduler.since]
    assert len(missed) == expected
    assert missed[-1] > scheduler.since - timedelta(minutes=1)  # the latest ones


async def test_a_clock_ahead_makes_nothing_early(database_url: str, sql: Cursor) -> None:
    config = make_config(database_url, schedules=[EVERY_SECOND])
    (scheduler,) = await _schedulers(config, 1)
    try:
        await scheduler.join()
        scheduler.offset += 5  # this host's clock runs 5 s ahead of the database's
        await scheduler.fire_due()
        assert abs(scheduler.offset) < 1  # the database's answer put it right
    finally:
        scheduler.conn.close()
    assert all(tick <= inserted for tick, inserted in _fired(sql))


def test_three_supervisors_make_one_task_per_tick(database_url: str, sql: Cursor) -> None:
    config = make_config(
        database_url,
        priority_queues={"high": 1, "normal": 0, "low": 0},
        schedules=[EVERY_SECOND],
    )
    with procs.supervisor(config, sql), procs.supervisor(config), procs.supervisor(config):
        wait_until(lambda: procs.listening(sql) >= 3)
        first = len(_fired(sql))
        wait_until(lambda: len(_fired(sql)) >= first + 4)
    fired = _fired(sql)
    _assert_one_per_tick(fired)
    wait_until(lambda: procs.count(sql, "state = 'completed'") >= len(fired) - 1)


async def test_the_api_lists_schedules_with_next_and_last_run(
    aiohttp_client: Any, database_url: str, sql: Cursor
) -> None:
    nightly = {"name": "nightly", "cron": "0 3 * * *", "type": "report", "timezone": BERLIN}
    config = make_config(database_url, schedules=[nightly, EVERY_SECOND])
    client: TestClient = await aiohttp_client(create_app(config))
    answer = await (await client.get("/api/schedules")).json()
    first, second = answer["schedules"]
    assert first["name"] == "nightly" and first["last_run_at"] is None
    assert first["cron"] == "0 3 * * *" and first["timezone"] == BERLIN and first["catch_up"] == 1
    next_run = datetime.fromisoformat(first["next_run_at"])
    local = next_run.astimezone(ZoneInfo(BERLIN))
    assert next_run > datetime.now(UTC) and (local.hour, local.minute) == (3, 0)
    assert second["priority"] == "high" and second["data"] == {}
    sql.execute("INSERT INTO tasks (type) VALUES ('report') RETURNING id")
    task_id = sql.fetchone()[0]  # type: ignore[index]
    sql.execute(
        "INSERT INTO schedule_state (name, last_tick_at, last_task_id)"
        " VALUES ('nightly', '2024-05-01T01:00:00Z', %s)",
        (task_id,),
    )
    first = (await (await client.get("/api/schedules")).json())["schedules"][0]
    assert first["last_run_at"] == "2024-05-01T01:00:00+00:00" and first["last_task_id"] == task_id
