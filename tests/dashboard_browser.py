"""A real API on a free loopback port and Debian's Chromium, for the dashboard's browser tests
and bench/screenshots.py (Playwright drives the system browser; it never downloads its own)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from asynctask.core.config import Config
from asynctask.service.app import create_app


@asynccontextmanager
async def serving(config: Config) -> AsyncIterator[str]:
    """The API of `config` on 127.0.0.1 (a free port) in this loop; yields its base URL."""
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def chromium_path() -> str:
    """Debian's chromium; a test run without it skips locally and fails in CI (.ci/run has it)."""
    path = shutil.which("chromium")
    if path is None:
        message = "no chromium on PATH (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium for the duration of the block."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            await browser.close()
