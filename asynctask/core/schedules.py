"""Periodic tasks: the `schedules:` section of config.yaml, and each schedule's ticks.

A schedule's ticks come from its cron expression, read in its own time zone by cronsim (see
README, "Periodic tasks", for why cronsim): 5 fields, or 6 with seconds first. Daylight saving
follows Debian cron: a fixed-time job in a skipped hour runs at the jump, one in a repeated hour
runs once, and jobs with a `*` in the minute or hour field follow the real clock. Ticks are
handed out as UTC instants; who enqueues them is workers/scheduler.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from asynctask.core import checks
from asynctask.core.errors import ConfigError
from asynctask.core.models import DEFAULT_PRIORITY, PRIORITIES, TYPE_PATTERN, Priority

CATCH_UP_TRUE: Final = 100  # `catch_up: true`: at most this many missed ticks run on restart
CATCH_UP_MAX: Final = 10_000
_NAME = re.compile(TYPE_PATTERN)
_KEYS: Final = (
    "name", "cron", "type", "priority", "data", "max_attempts", "timezone", "catch_up"
)  # fmt: skip
_CRON_FORM = "a cron expression of 5 fields, or 6 with seconds first"


@dataclass(frozen=True)
class Schedule:
    """One periodic task: what to enqueue, and when (its cron expression in its time zone)."""

    name: str
    cron: str
    type: str
    priority: Priority = DEFAULT_PRIORITY
    data_json: str = "{}"
    max_attempts: int = 5
    timezone: str = "UTC"
    # After every scheduler was down across ticks, at most this many of the missed ticks run
    # (the latest ones): 1 is `catch_up: false`, only the latest.
    catch_up: int = 1

    @property
    def zone(self) -> tzinfo:
        """The time zone the expression is read in."""
        return UTC if self.timezone == "UTC" else ZoneInfo(self.timezone)

    def next_tick(self, after: datetime) -> datetime | None:
        """The first tick strictly after `after` (UTC), or None if there is none for 50 years."""
        try:
            return next(CronSim(self.cron, after.astimezone(self.zone))).astimezone(UTC)
        except StopIteration:
            return None

    def ticks_between(
        self, since: datetime, until: datetime, limit: int
    ) -> tuple[list[datetime], bool]:
        """The latest `limit` ticks in (since, until], oldest first; and whether older ones exist.

        Walks backwards from `until`, so a long outage costs `limit` steps, not one per tick.
        """
        # cronsim's reverse walk includes its starting second only when it has a fraction.
        start = (until + timedelta(microseconds=1)).astimezone(self.zone)
        found: list[datetime] = []
        for tick in CronSim(self.cron, start, reverse=True):
            instant = tick.astimezone(UTC)
            if instant <= since:
                return found[::-1], False
            if len(found) == limit:
                return found[::-1], True
            found.append(instant)
        return found[::-1], False


def parse_schedules(
    raw: Any, task_types: Sequence[str], default_max_attempts: int
) -> tuple[Schedule, ...]:
    """Validate the `schedules:` list; every error names `schedules[N].<key>`."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise checks.fail("schedules", raw, "a list of schedules, each a mapping")
    schedules = [
        _one(f"schedules[{n}]", item, task_types, default_max_attempts)
        for n, item in enumerate(raw)
    ]
    seen: set[str] = set()
    for n, schedule in enumerate(schedules):
        if schedule.name in seen:
            raise ConfigError(
                f"schedules[{n}].name: {schedule.name!r} is used twice (names must be unique)"
            )
        seen.add(schedule.name)
    return tuple(schedules)


def _one(where: str, item: Any, task_types: Sequence[str], default_max_attempts: int) -> Schedule:
    if not isinstance(item, dict):
        raise checks.fail(where, item, "a mapping with name, cron and type")
    for key in item:
        if key not in _KEYS:
            raise ConfigError(f"{where}.{key}: unknown key (allowed: {', '.join(_KEYS)})")
    for key in ("name", "cron", "type"):
        if key not in item:
            raise ConfigError(f"{where}.{key}: missing (a schedule needs name, cron and type)")
    name = item["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise checks.fail(f"{where}.name", name, "1 to 100 letters, digits, '_', '-' or '.'")
    if item["type"] not in task_types:
        raise checks.fail(
            f"{where}.type", item["type"], "one of the handlers: " + ", ".join(task_types)
        )
    timezone = _timezone(f"{where}.timezone", item.get("timezone", "UTC"))
    return Schedule(
        name=name,
        cron=_cron(f"{where}.cron", item["cron"]),
        type=item["type"],
        priority=Priority(
            checks.choice(PRIORITIES)(f"{where}.priority", item.get("priority", DEFAULT_PRIORITY))
        ),
        data_json=_data(f"{where}.data", item.get("data", {})),
        max_attempts=checks.integer(1)(
            f"{where}.max_attempts", item.get("max_attempts", default_max_attempts)
        ),
        timezone=timezone,
        catch_up=_catch_up(f"{where}.catch_up", item.get("catch_up", False)),
    )


def _cron(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise checks.fail(key, value, _CRON_FORM)
    try:
        CronSim(value, datetime.now(UTC))
    except CronSimError as exc:
        raise checks.fail(key, value, f"{_CRON_FORM}: {exc}") from None
    except Exception as exc:  # cronsim's own checks miss some malformed input
        raise checks.fail(key, value, f"{_CRON_FORM}: {type(exc).__name__}: {exc}") from None
    return " ".join(value.split())


def _timezone(key: str, value: Any) -> str:
    if value == "UTC":
        return "UTC"
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise checks.fail(key, value, "an IANA time zone such as UTC or Europe/Berlin") from None
    return str(value)


def _data(key: str, value: Any) -> str:
    if not isinstance(value, dict):
        raise checks.fail(key, value, "a mapping (the task's data, a JSON object)")
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise checks.fail(key, value, f"JSON values only ({exc})") from None
    if "\\u0000" in text:
        raise checks.fail(key, value, "no \\u0000 in strings (jsonb cannot store it)")
    return text


def _catch_up(key: str, value: Any) -> int:
    if value is False:
        return 1
    if value is True:
        return CATCH_UP_TRUE
    return checks.integer(
        1,
        CATCH_UP_MAX,
        f"false, true (the last {CATCH_UP_TRUE}), or a number of ticks from 1 to {CATCH_UP_MAX}",
    )(key, value)
