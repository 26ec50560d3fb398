"""The API and the workers run on uvloop (an install requirement on every platform we ship)."""

from __future__ import annotations

import uvloop

from asynctask.core import loops


def test_new_event_loop_is_uvloop() -> None:
    loop = loops.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(_answer()) == 42
    finally:
        loop.close()


async def _answer() -> int:
    return 42
