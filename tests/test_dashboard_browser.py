"""The dashboard in a real Chromium: every page, live updates, actions, login, roles, escaping."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psycopg2.extensions
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, expect

from asynctask.core.config import Config
from asynctask.service.dashboard_pages import CSP
from tests.conftest import make_config
from tests.dashboard_browser import chromium, serving

Cursor = psycopg2.extensions.cursor
XSS = "<script>window.pwned=1</script><img src=x onerror=window.pwned=1>"
TOKENS = ["admin-s3cret", {"token": "look-only", "role": "read"}]
# Records CSP violations in the page itself (init scripts are not subject to the page's CSP).
WATCH_CSP = (
    "window.__csp = [];"
    "document.addEventListener('securitypolicyviolation',"
    " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def base(config: Config) -> AsyncIterator[str]:
    async with serving(config) as url:
        yield url


async def open_page(browser: Browser, url: str, **context: Any) -> tuple[Page, list[str]]:
    """A page at `url` and the list its console errors, page errors and CSP reports go to."""
    page = await (await browser.new_context(**context)).new_page()
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    await page.add_init_script(WATCH_CSP)
    await page.goto(url)
    return page, problems


async def post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.post(url + path, json=body) as response:
        assert response.status in (200, 201), await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


def insert(sql: Cursor, *rows: tuple[str, int, str, dict[str, Any]]) -> list[int]:
    """Tasks (type, priority 1-3, state, data) straight into the table; their ids."""
    ids = []
    for kind, priority, state, data in rows:
        finished = "now()" if state in ("completed", "failed", "cancelled") else "NULL"
        sql.execute(
            "INSERT INTO tasks (type, priority, state, attempts, data, finished_at, last_error)"
            f" VALUES (%s, %s, %s, %s, %s, {finished}, %s) RETURNING id",
            (
                kind,
                priority,
                state,
                5 if state == "failed" else 0,
                json.dumps(data),
                "ValueError: no\nTraceback (most recent call last):\n  ..."
                if state == "failed"
                else None,
            ),
        )
        ids.append(sql.fetchone()[0])
    return ids


def state_of(sql: Cursor, task_id: int) -> str:
    sql.execute("SELECT state FROM tasks WHERE id = %s", (task_id,))
    return str(sql.fetchone()[0])


async def test_every_page_loads_without_console_errors_or_csp_violations(
    browser: Browser, base: str, sql: Cursor
) -> None:
    failed, done = insert(sql, ("boom", 1, "failed", {"n": 1}), ("ok", 2, "completed", {"n": 2}))
    sql.execute(
        "INSERT INTO workers (host, supervisor_pid, slot, priority, pid, locked_by, status,"
        " task_id) VALUES ('web-1', 100, 'high_1', 1, 101, 'web-1:101', 'busy', %s),"
        " ('web-1', 100, 'normal_1', 2, 102, 'web-1:102', 'idle', NULL)",
        (done,),
    )
    sql.execute(  # a host that stopped beating a minute ago
        "INSERT INTO workers (host, supervisor_pid, slot, priority, pid, locked_by, status,"
        " heartbeat_at) VALUES ('web-2', 200, 'high_1', 1, 201, 'web-2:201', 'idle',"
        " now() - interval '1 minute')"
    )
    page, problems = await open_page(browser, base + "/")  # redirects to /dashboard
    assert page.url == base + "/dashboard"
    await expect(page.locator("#counts td[data-state=completed]").nth(1)).to_have_text("1")
    await expect(page.locator("#chart svg polyline")).to_have_count(2)
    await expect(page.locator("#updated")).to_contain_text("Live")
    await expect(page.locator("#supervisors")).to_have_text("1 / 1")  # alive / dead
    await page.click("nav >> text=Tasks")
    await expect(page.locator("#tasks tbody tr")).to_have_count(2)
    await page.click(f"#tasks a:text-is('{failed}')")
    await expect(page.locator("#task-error")).to_contain_text("Traceback (most recent call last)")
    await expect(page.locator("#task-data")).to_contain_text('"n": 1')
    await page.click("nav >> text=Workers")
    await expect(page.locator("section.host h2")).to_have_text(["host web-1", "host web-2"])
    web1, web2 = page.locator("section.host").nth(0), page.locator("section.host").nth(1)
    await expect(web1.locator("tbody tr")).to_have_count(2)
    await expect(web1.locator(".supervisor > p .badge")).to_have_text("alive")
    await expect(web2.locator(".supervisor > p .badge")).to_have_text("dead")
    await expect(page.locator(f"section.host a:text-is('{done}')")).to_be_visible()
    assert await page.evaluate("window.__csp") == []
    assert problems == []


async def test_dashboard_headers_are_strict(browser: Browser, base: str) -> None:
    page, _ = await open_page(browser, base + "/dashboard")
    for path in ("/dashboard", "/dashboard/app.js", "/dashboard/style.css"):
        response = await page.request.get(base + path)
        assert response.status == 200
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"


async def test_a_new_task_shows_on_the_overview_and_in_the_list_within_2_s(
    browser: Browser, base: str
) -> None:
    page, problems = await open_page(browser, base + "/dashboard#/overview")
    high_available = page.locator("#counts tbody tr").nth(0).locator("td[data-state=available]")
    await expect(high_available).to_have_text("0")
    started = time.monotonic()
    await post(base, "/api/tasks", {"type": "ok", "priority": "high"})
    await expect(high_available).to_have_text("1", timeout=2000)
    overview_seconds = time.monotonic() - started

    await page.goto(base + "/dashboard#/tasks")
    await expect(page.locator("#list-note")).to_have_text("")
    await expect(page.locator("#tasks tbody tr")).to_have_count(1)
    started = time.monotonic()
    task = await post(base, "/api/tasks", {"type": "ok", "priority": "low"})
    await expect(page.locator(f"#tasks tr[data-id='{task['id']}']")).to_be_visible(timeout=2000)
    list_seconds = time.monotonic() - started
    print(f"new task seen: overview {overview_seconds:.2f} s, list {list_seconds:.2f} s")
    assert problems == []


async def test_cancel_and_retry_from_the_task_page(
    browser: Browser, base: str, sql: Cursor
) -> None:
    (task_id,) = insert(sql, ("ok", 2, "available", {}))
    page, _ = await open_page(browser, f"{base}/dashboard#/tasks/{task_id}")
    await expect(page.locator("#task-retry")).to_have_count(0)  # not while it is available
    await page.click("#task-cancel")
    await expect(page.locator("dl.fields .badge")).to_have_text("cancelled")
    assert state_of(sql, task_id) == "cancelled"
    await expect(page.locator("#task-cancel")).to_have_count(0)
    await expect(page.locator("#task-retry")).to_be_focused()  # the keyboard stays on the actions
    await page.keyboard.press("Enter")  # a real button: Enter presses it
    await expect(page.locator("dl.fields .badge")).to_have_text("available")
    assert state_of(sql, task_id) == "available"


async def test_bulk_retry_confirms_the_count_then_retries(
    browser: Browser, base: str, sql: Cursor
) -> None:
    failed = insert(sql, *[("boom", 3, "failed", {"i": i}) for i in range(3)])
    (cancelled,) = insert(sql, ("boom", 3, "cancelled", {}))
    page, _ = await open_page(browser, base + "/dashboard#/tasks")
    await expect(page.locator("#tasks tbody tr")).to_have_count(4)
    await page.select_option("#filter-state", "failed")
    await expect(page.locator("#tasks tbody tr")).to_have_count(3)
    await page.click("#bulk-retry")
    await expect(page.locator("#confirm-text")).to_have_text("Retry 3 tasks? (state failed)")
    await page.keyboard.press("Escape")  # declining changes nothing
    await expect(page.locator("#bulk-retry")).to_be_focused()  # and gives the focus back
    assert {state_of(sql, i) for i in failed} == {"failed"}
    await page.click("#bulk-retry")
    await expect(page.locator("#confirm-text")).to_contain_text("Retry 3 tasks?")
    await page.click("#confirm-ok")
    await expect(page.locator("#banner")).to_have_text("Retried 3 tasks.")
    assert {state_of(sql, i) for i in failed} == {"available"}
    assert state_of(sql, cancelled) == "cancelled"  # outside the filter
    await expect(page.locator("#tasks tbody tr")).to_have_count(0)


async def test_pause_and_resume_from_the_overview(browser: Browser, base: str, sql: Cursor) -> None:
    page, _ = await open_page(browser, base + "/dashboard")
    high = page.locator("#counts tbody tr").nth(0)
    await page.click("button[aria-label='Pause high']")
    await expect(high.locator(".badge")).to_have_text("paused")
    sql.execute("SELECT paused FROM queues WHERE priority = 1")
    assert sql.fetchone() == (True,)
    await page.wait_for_timeout(1500)  # a live event or two later it still says paused
    await expect(high.locator(".badge")).to_have_text("paused")
    await page.click("button[aria-label='Resume high']")
    await expect(high.locator(".badge")).to_have_text("running")
    sql.execute("SELECT paused FROM queues WHERE priority = 1")
    assert sql.fetchone() == (False,)


@pytest.fixture
async def guarded(database_url: str) -> AsyncIterator[str]:
    async with serving(make_config(database_url, api__tokens=TOKENS)) as url:
        yield url


async def test_the_login_gate(browser: Browser, guarded: str) -> None:
    page, _ = await open_page(browser, guarded + "/dashboard")
    await expect(page.locator("#login-form")).to_be_visible()
    await expect(page.locator("#nav")).to_be_hidden()
    await page.fill("#token", "not-it")
    await page.click("#login-form button")
    await expect(page.locator("#login-error")).to_have_text("Wrong token.")
    await page.fill("#token", "admin-s3cret")
    await page.keyboard.press("Enter")
    await expect(page.locator("#nav")).to_be_visible()
    await expect(page.locator("#who")).to_have_text("admin")
    await expect(page.locator("button[aria-label='Pause high']")).to_be_visible()
    cookies = await page.context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
        ("asynctask_session", True, "Strict")
    ]
    assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
    await page.click("#logout")
    await expect(page.locator("#login-form")).to_be_visible()


async def test_the_read_only_role_sees_no_actions_and_cannot_force_one(
    browser: Browser, guarded: str, database_url: str
) -> None:
    sql_conn = psycopg2.connect(database_url)
    sql_conn.autocommit = True
    with sql_conn.cursor() as sql:
        failed, waiting = insert(sql, ("boom", 1, "failed", {}), ("ok", 1, "available", {}))
    sql_conn.close()
    page, _ = await open_page(browser, guarded + "/dashboard")
    await page.fill("#token", "look-only")
    await page.keyboard.press("Enter")
    await expect(page.locator("#who")).to_have_text("read-only")
    await expect(page.locator("#counts td[data-state=failed]").nth(0)).to_have_text("1")
    await expect(page.locator("main button")).to_have_count(0)
    await page.goto(guarded + "/dashboard#/tasks")
    await expect(page.locator("#tasks tbody tr")).to_have_count(2)
    await expect(page.locator("#bulk-retry, #bulk-cancel")).to_have_count(0)
    for task_id in (failed, waiting):
        await page.goto(f"{guarded}/dashboard#/tasks/{task_id}")
        await expect(page.locator("#task-data")).to_be_visible()
        await expect(page.locator("#task-cancel, #task-retry")).to_have_count(0)
    status = await page.evaluate(
        "fetch('/api/queues/high/pause', {method: 'POST'}).then(r => r.status)"
    )
    assert status == 403


async def test_task_data_renders_as_text(browser: Browser, base: str, sql: Cursor) -> None:
    (task_id,) = insert(sql, ("ok", 2, "failed", {"note": XSS}))
    sql.execute("UPDATE tasks SET last_error = %s WHERE id = %s", (XSS, task_id))
    page, problems = await open_page(browser, f"{base}/dashboard#/tasks/{task_id}")
    await expect(page.locator("#task-data")).to_contain_text(XSS)
    await expect(page.locator("#task-error")).to_have_text(XSS)
    assert await page.locator("main img, main script").count() == 0
    assert await page.evaluate("typeof window.pwned") == "undefined"
    assert problems == []


async def test_readable_at_phone_width(browser: Browser, base: str, sql: Cursor) -> None:
    (task_id,) = insert(sql, ("ok", 1, "failed", {"long": "x" * 300}))
    page, _ = await open_page(browser, base + "/dashboard", viewport={"width": 390, "height": 844})
    await expect(page.locator("#chart svg")).to_be_visible()
    for route, ready in [
        ("#/overview", "#chart svg"),
        ("#/tasks", "#tasks tbody tr"),
        (f"#/tasks/{task_id}", "#task-error"),
        ("#/workers", "#no-workers"),
    ]:
        await page.goto(f"{base}/dashboard{route}")
        await expect(page.locator(ready)).to_be_visible()
        # Wide tables scroll inside their own box; the page itself never scrolls sideways.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390, route


async def test_tasks_filters_search_and_older_pages(
    browser: Browser, base: str, sql: Cursor
) -> None:
    ids = insert(sql, *[("ok", 2, "completed", {"i": i}) for i in range(55)])
    (boom,) = insert(sql, ("boom", 1, "failed", {}))
    page, problems = await open_page(browser, base + "/dashboard#/tasks")
    rows = page.locator("#tasks tbody tr")
    await expect(rows).to_have_count(50)  # one page
    await expect(rows.first).to_have_attribute("data-id", str(boom))  # newest first
    await page.click("#older")
    await expect(rows).to_have_count(56)
    await expect(rows.last).to_have_attribute("data-id", str(ids[0]))
    await expect(page.locator("#older")).to_be_hidden()
    await page.select_option("#filter-type", "boom")
    await expect(rows).to_have_count(1)
    await page.select_option("#filter-type", "")
    await page.select_option("#filter-priority", "high")
    await expect(rows).to_have_count(1)
    await page.fill("#search", str(ids[7]))
    await page.keyboard.press("Enter")
    await expect(page.locator("main h1")).to_have_text(f"Task {ids[7]}")
    await expect(page.locator("#task-data")).to_contain_text('"i": 7')
    assert problems == []
