"""When and how soon the client sends a request again: the policy both clients share."""

from __future__ import annotations

import math
import random
from typing import Any

import httpx

from asynctask.client.calls import Call, Settings
from asynctask.client.errors import APIConnectionError, APITimeoutError

# Worth a retry: the server (or a proxy before it) says it could not serve the request now.
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
RETRY_AFTER_MAX = 60.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0


def retry_delay(
    call: Call[Any],
    attempt: int,
    settings: Settings,
    response: httpx.Response | None = None,
    error: httpx.TransportError | None = None,
) -> float | None:
    """Seconds to wait before sending `call` again after this attempt (from 0), or None."""
    if attempt >= settings.max_retries:
        return None
    if error is not None:
        # A connection that was never made cannot have reached the server.
        unsent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
        return backoff(attempt) if unsent or call.replay_safe else None
    assert response is not None
    status = response.status_code
    # A 409 for a keyed create: its twin (an earlier attempt) is still being written.
    twin = status == 409 and "Idempotency-Key" in call.headers
    if status not in RETRY_STATUSES and not twin:
        return None
    return _retry_after(response) if "Retry-After" in response.headers else backoff(attempt)


def backoff(attempt: int) -> float:
    """0.5 s, doubling per attempt up to 8 s, times a random factor in [0.75, 1]."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0**attempt) * random.uniform(0.75, 1.0)


def _retry_after(response: httpx.Response) -> float:
    try:
        seconds = float(response.headers["Retry-After"])
    except ValueError:
        return BACKOFF_FIRST  # an HTTP date: not worth parsing for our own server's seconds
    if not math.isfinite(seconds):
        return BACKOFF_FIRST
    return min(RETRY_AFTER_MAX, max(0.0, seconds))


def connection_error(error: httpx.TransportError, settings: Settings) -> APIConnectionError:
    """The client's error for a transport failure it gave up on."""
    kind = APITimeoutError if isinstance(error, httpx.TimeoutException) else APIConnectionError
    return kind(f"{settings.base_url}: {type(error).__name__}: {error}")
