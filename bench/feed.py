"""Clients that create tasks over HTTP, fail over between APIs, and retry until answered 201."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

DOWN_SECONDS = 5.0  # after a failure, send elsewhere for this long before trying that API again


@dataclass
class FeedStats:
    """What a feeder saw, for the account (shared by the feeders of one run)."""

    requests: int = 0
    failures: int = 0  # attempts not answered 201: refused, 503, timed out
    failovers: int = 0  # requests answered by another API than the feeder's own
    first_failure: dict[str, float] = field(default_factory=dict)  # API -> wall-clock time
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)  # give up now

    def failed(self, base: str) -> None:
        with self.lock:
            self.failures += 1
            self.first_failure.setdefault(base, time.time())


def post_tasks(
    bases: list[str],
    tasks: list[dict[str, Any]],
    *,
    batch: int,
    interval: float = 0.0,
    timeout: float = 30.0,
    stats: FeedStats | None = None,
) -> None:
    """POST `tasks`, `batch` per request (1: the single create), one request every `interval` s.

    Each goes to bases[0] (the feeder's own API) unless it failed in the last DOWN_SECONDS, else
    to the next one; a request is repeated until some API answers 201. A request that was not
    answered may still have inserted its tasks: the account counts those double inserts.
    Returns early once `stats.stop` is set.
    """
    stats = stats or FeedStats()
    down: dict[str, float] = {}
    due = time.monotonic()
    for first in range(0, len(tasks), batch):
        if stats.stop.is_set():
            return
        due += interval
        chunk = tasks[first : first + batch]
        path, body = (
            ("/api/tasks", chunk[0]) if batch == 1 else ("/api/tasks/batch", {"tasks": chunk})
        )
        payload = json.dumps(body).encode()
        while not stats.stop.is_set():
            now = time.monotonic()
            base = next((b for b in bases if down.get(b, 0.0) <= now), bases[0])
            if _post(base + path, payload, timeout):
                with stats.lock:
                    stats.requests += 1
                    stats.failovers += base != bases[0]
                break
            stats.failed(base)
            down[base] = time.monotonic() + DOWN_SECONDS
            time.sleep(0.2)
        time.sleep(max(0.0, due - time.monotonic()))


def _post(url: str, payload: bytes, timeout: float) -> bool:
    request = urllib.request.Request(url, payload, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bool(response.status == 201)
    except (urllib.error.URLError, OSError):
        return False  # 503 while the database is away, refused, reset, or timed out
