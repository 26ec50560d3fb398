"""The event loop of the workers and of the API: uvloop where it exists.

It costs the workers less CPU per task and lets the API answer more creates per second than
asyncio's own loop (the interleaved measurements are in bench/README.md).
"""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop, else asyncio's own."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop has no Windows build
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
