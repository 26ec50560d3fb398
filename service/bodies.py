"""Request bodies: JSON only, read within a time limit, and large ones parsed one at a time.

Parsing is where a body costs memory and time: a byte of JSON becomes 10 to 50 bytes of Python
objects, and a 1 MiB batch takes the event loop ~200 ms to parse and validate. So a body above
LARGE_BODY_BYTES is parsed and validated in a thread (the loop keeps answering; /health stays
fast) behind a gate of PARSERS at a time (sixteen at once cost sixteen times the memory and finish
no sooner: the GIL runs one at a time anyway). Reading is not gated: a slow client would hold the
gate; it is bounded by api.max_body_bytes and api.body_timeout_seconds instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Final, TypeVar

from aiohttp import web

from asynctask.core.errors import AsyncTaskError
from asynctask.service.rules import TOO_DEEP_TO_PARSE, MalformedRequest, ValidationFailed

LARGE_BODY_BYTES: Final = 64 * 1024
PARSERS: Final = 1
JSON_TYPE: Final = "application/json"
T = TypeVar("T")


class UnsupportedMediaType(AsyncTaskError):
    """A body that is not declared as JSON: answered 415 (a browser form cannot send JSON)."""


class BodyTimeout(AsyncTaskError):
    """The body did not arrive within api.body_timeout_seconds: answered 408, connection closed."""


class BodyReader:
    """Reads, parses and validates request bodies for one app (it owns the parse gate)."""

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._gate = asyncio.Semaphore(PARSERS)

    async def load(self, request: web.Request, validate: Callable[[Any], T]) -> T:
        """`validate(parsed body)`; 415 unless JSON, 408 if too slow, 413/400/422 from the body."""
        if request.content_type != JSON_TYPE:
            raise UnsupportedMediaType(
                f"Content-Type must be {JSON_TYPE} (got {request.content_type[:100]})."
            )
        try:
            async with asyncio.timeout(self.timeout_seconds):
                raw = await request.read()
        except TimeoutError:
            raise BodyTimeout(
                f"The request body did not arrive within {self.timeout_seconds:g} s"
                " (api.body_timeout_seconds)."
            ) from None
        if len(raw) < LARGE_BODY_BYTES:
            return validate(parse_json(raw))
        async with self._gate:
            return await asyncio.to_thread(lambda: validate(parse_json(raw)))


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which are not JSON and which jsonb refuses.
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """The body parsed as JSON; 400 if it is not JSON, 422 if nested too deep to parse."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise ValidationFailed({"_schema": [TOO_DEEP_TO_PARSE]}) from None
    except UnicodeDecodeError as exc:
        raise MalformedRequest(not_utf8(exc)) from None
    except ValueError as exc:
        reason = exc.args[0] if exc.args else "cannot be parsed"
        raise MalformedRequest(f"Request body is not valid JSON: {reason}") from None


def not_utf8(exc: UnicodeDecodeError) -> str:
    """The 400 message for a body that cannot be decoded as text, naming the first bad byte."""
    # json.loads guesses UTF-16 or UTF-32 from zero bytes at the start; anything else is UTF-8.
    bad = exc.object[exc.start : exc.start + 1].hex()
    return (
        f"Request body is not valid {exc.encoding.upper()} text: byte 0x{bad} at offset"
        f" {exc.start} cannot be decoded ({exc.reason}). Send JSON encoded as UTF-8."
    )
