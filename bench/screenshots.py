"""Screenshots of every dashboard page for README: docs/screenshots/*.png.

Makes a scratch database with demo tasks (15 minutes of history for the chart, a backlog, failures
with tracebacks, a paused queue, one live and one dead host), serves the API on a free loopback
port in this process and photographs each page in Debian's Chromium at 1280 px, plus the overview
at phone width in dark mode. Run: python -m bench.screenshots [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import psycopg2
from playwright.async_api import expect

from asynctask.core.config_loader import parse_config
from bench.common import ROOT, scratch_database
from tests.dashboard_browser import chromium, serving

TYPES = ("report", "finances", "send_email", "resize_image")
ERROR = """ConnectionError: SMTP server smtp.example.com:587 refused the connection
Traceback (most recent call last):
  File "app/mail.py", line 41, in send_email
    with smtplib.SMTP(host, port, timeout=10) as smtp:
  File "/usr/lib/python3.11/smtplib.py", line 255, in __init__
    (code, msg) = self.connect(host, port)
ConnectionRefusedError: [Errno 111] Connection refused"""


def fill(url: str) -> int:
    """Demo tasks and workers; returns the id of a failed task for the task page."""
    rng = random.Random(14)  # the same pictures every run
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    rows: list[tuple[Any, ...]] = []
    for second in range(15 * 60, 0, -1):  # completed tasks: a wave of load over 15 minutes
        rate = 1.5 + 1.2 * math.sin(second / 140)
        for _ in range(int(rate + rng.random())):
            took = rng.randint(1, 20)
            kind = rng.choice(TYPES)
            rows.append((kind, rng.randint(1, 3), "completed", 1, second + took, second, None))
    for state, count in (("available", 48), ("running", 3), ("retrying", 2), ("failed", 7)):
        for _ in range(count):
            age = rng.randint(5, 400)
            finished = age - 3 if state == "failed" else None
            rows.append((rng.choice(TYPES), rng.randint(1, 3), state, 1, age, finished, None))
    rows.append(("send_email", 1, "failed", 5, 1800, 30, ERROR))
    rows.append(("report", 2, "cancelled", 0, 900, 600, None))
    for kind, priority, state, attempts, created_ago, finished_ago, error in rows:
        data = {"to": f"user{rng.randint(1, 999)}@example.com", "template": "welcome"}
        if kind != "send_email":
            data = {"account": rng.randint(1000, 9999), "month": "2026-11"}
        cur.execute(
            "INSERT INTO tasks (type, priority, state, attempts, data, inserted_at, updated_at,"
            " started_at, finished_at, last_error, scheduled_at)"
            " VALUES (%s, %s, %s, %s, %s, now() - make_interval(secs => %s),"
            " now() - make_interval(secs => coalesce(%s, 0)),"
            " CASE WHEN %s <> 'available' THEN now() - make_interval(secs => %s - 1) END,"
            " now() - make_interval(secs => %s), %s, now() - make_interval(secs => %s))",
            (kind, priority, state, attempts, json.dumps(data), created_ago, finished_ago,
             state, created_ago, finished_ago, error, created_ago),
        )  # fmt: skip
    # Results come from handlers that returned: completed tasks only (a failed one has none).
    cur.execute(
        "UPDATE tasks SET result = jsonb_build_object('sent', true, 'message_id', 'm-' || id)"
        " WHERE state = 'completed' AND type = 'send_email'"
    )
    cur.execute("SELECT max(id) FROM tasks WHERE last_error IS NOT NULL")
    failed: int = cur.fetchone()[0]  # type: ignore[index]
    cur.execute("SELECT id FROM tasks WHERE state = 'running' ORDER BY id")
    running = [r[0] for r in cur.fetchall()]
    cur.execute("UPDATE queues SET paused = true, changed_at = now() - interval '4 min'"
                " WHERE priority = 3")  # fmt: skip
    slots = [
        ("web-1", 4100, "high_1", 1, 4101, "busy", running[0], "2 min"),
        ("web-1", 4100, "high_2", 1, 4102, "busy", running[1], "2 min"),
        ("web-1", 4100, "normal_1", 2, 4103, "busy", running[2], "2 min"),
        ("web-1", 4100, "normal_2", 2, 4109, "idle", None, "50 s"),
        ("web-1", 4100, "low_1", 3, 4105, "paused", None, "2 min"),
        ("web-2", 3900, "high_1", 1, 3901, "busy", None, "40 s"),
        ("web-2", 3900, "normal_1", 2, 3902, "idle", None, "40 s"),
    ]
    for host, sup, slot, priority, pid, status, task, up in slots:
        dead = host == "web-2"
        cur.execute(
            "INSERT INTO workers (host, supervisor_pid, slot, priority, pid, locked_by, status,"
            " task_id, first_started_at, started_at, restarts, heartbeat_at, rescued_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() - interval '3 hours',"
            " now() - %s::interval, %s, now() - %s::interval, %s)",
            (host, sup, slot, priority, pid, f"{host}:{pid}", status, task, up,
             1 if slot == "normal_2" else 0, "40 s" if dead else "1 s", None),
        )  # fmt: skip
    cur.execute("UPDATE workers SET rescued_at = now() - interval '34 s' WHERE host = 'web-2'")
    conn.close()
    return failed


def beat(url: str) -> None:
    """A fresh heartbeat for the live host's slots."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    conn.cursor().execute("UPDATE workers SET heartbeat_at = now() WHERE host = 'web-1'")
    conn.close()


async def shoot(url: str, out: Path, failed: int) -> list[Path]:
    """Serve the API on `url`'s database and photograph each page into `out`."""
    handlers = dict.fromkeys(TYPES, "asynctask.workers.handlers:report")
    config = parse_config({"database": {"url": url}, "handlers": handlers}, environ={})
    shots = [
        ("overview", "#/overview", 1280, "light"),
        ("tasks", "#/tasks", 1280, "light"),
        ("task", f"#/tasks/{failed}", 1280, "light"),
        ("workers", "#/workers", 1280, "light"),
        ("overview-phone-dark", "#/overview", 390, "dark"),
    ]
    saved = []
    async with serving(config) as base, chromium() as browser:
        for name, route, width, scheme in shots:
            context = await browser.new_context(
                viewport={"width": width, "height": 800 if width > 400 else 844},
                color_scheme=scheme,  # type: ignore[arg-type]
                device_scale_factor=1,
            )
            beat(url)  # web-1 stays alive however long the run has taken so far
            page = await context.new_page()
            await page.goto(f"{base}/dashboard{route}")
            # Until the first answers arrive the page shows "…" and "Loading…".
            await expect(page.locator("main")).not_to_contain_text(re.compile("…|Loading"))
            await page.wait_for_timeout(300)
            path = out / f"{name}.png"
            # The task list is long: its first screenful says enough (and keeps the file small).
            await page.screenshot(path=str(path), full_page=name != "tasks")
            saved.append(path)
            await context.close()
    return saved


def main() -> None:
    """Make the screenshots; print each file and its size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        sys.exit("screenshots: needs Debian's chromium (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    with scratch_database() as url:
        failed = fill(url)
        for path in asyncio.run(shoot(url, args.out, failed)):
            print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
