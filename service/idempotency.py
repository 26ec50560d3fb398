"""The Idempotency-Key request header (IETF httpapi draft): retrying a create is safe.

The first request with a key stores its answer (status, task ids) in the same statement or
transaction as its tasks (asynctask/core/creates.py). A later request with the same key and the
same body gets that answer again, with the task as it is now and `Idempotent-Replayed: true`,
and inserts nothing; with another body it is refused (422). A twin that arrives while the first
is still being answered by this process gets 409 with Retry-After; one sent to another API
process waits on the key's row in the database, then replays. Answers are kept 24 hours (the
workers' pruner deletes them after). Keys are scoped per API token: with `api.tokens` set, two
clients with different tokens never share a key (the scope is a hash of the token).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from aiohttp import hdrs, web

from asynctask.core import creates, task_rows
from asynctask.core.connections import acquire
from asynctask.core.creates import RequestKey
from asynctask.core.errors import DatabaseUnavailable, IdempotencyKeyTaken
from asynctask.service import keys
from asynctask.service.openapi import KEY_PATTERN
from asynctask.service.render import json_text, task_text
from asynctask.service.rules import ValidationFailed

HEADER: Final = "Idempotency-Key"
REPLAYED: Final = "Idempotent-Replayed"
DUPLICATE: Final = "X-Asynctask-Duplicate"
MAX_KEY: Final = 255
_KEY = re.compile(KEY_PATTERN)
BAD_KEY: Final = (
    f"Must be 1 to {MAX_KEY} printable ASCII characters, a bare token or a quoted string"
    ' (e.g. "8e03978e-40d5-43e8-bc93-6894a57f9324").'
)
REUSED: Final = (
    "This key was used with a different request in the last 24 hours; use a new key for a new"
    " request."
)
T = TypeVar("T")


def request_key(request: web.Request, body: bytes) -> RequestKey | None:
    """The request's Idempotency-Key with its scope and fingerprint; None without the header."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if len(raw) > MAX_KEY or not _KEY.fullmatch(raw):
        raise ValidationFailed({HEADER: [BAD_KEY]})
    # A quoted string stands for its content: "abc" and abc are the same key.
    value = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
    route = request.match_info.route.resource
    path = route.canonical if route is not None else request.path
    fingerprint = hashlib.sha256(f"{request.method} {path}\n".encode() + body).hexdigest()
    return RequestKey(_scope(request), value, fingerprint)


def _scope(request: web.Request) -> str:
    if not request.app[keys.CONFIG].api.tokens:
        return ""
    # token_middleware has let only a configured token through.
    _, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:32]


async def first_answer(
    request: web.Request,
    key: RequestKey | None,
    attempt: Callable[[], Awaitable[T]],
    single: bool,
) -> T | web.Response:
    """Run `attempt` (a create); if the key already has an answer, that answer instead.

    An answer past its 24 hours is dropped and the create is tried once more.
    """
    with request.app[keys.IN_FLIGHT].hold(key):
        for _ in range(2):
            try:
                return await attempt()
            except IdempotencyKeyTaken:
                assert key is not None
                replayed = await _replay(request, key, single)
                if replayed is not None:
                    return replayed
    raise DatabaseUnavailable(f"the {HEADER} answer changed while it was read; try again")


async def _replay(request: web.Request, key: RequestKey, single: bool) -> web.Response | None:
    timeout = request.app[keys.CONFIG].database.connect_timeout_seconds
    async with acquire(request.app[keys.POOL], timeout) as conn:
        answer = await creates.remembered(conn, key)
        if answer is None or not answer.live:
            if answer is not None:
                await creates.forget_expired(conn, key)
            return None
        if answer.fingerprint != key.fingerprint:
            raise ValidationFailed({HEADER: [REUSED]})
        headers = {REPLAYED: "true"}
        if not single:
            if answer.status == 200:
                headers[DUPLICATE] = "true"
            body = {"ids": answer.task_ids, "duplicates": answer.duplicates}
            return web.json_response(body, status=answer.status, headers=headers)
        row = await task_rows.get_task(conn, answer.task_ids[0])
    return task_answer(row, None, duplicate=answer.status == 200, headers=headers)


def task_answer(
    row: dict[str, object],
    data_json: str | None,
    duplicate: bool,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A create's answer: 201 and the new task, or 200 and the task that holds its unique_key."""
    headers = {**(headers or {}), "Location": f"/api/tasks/{row['id']}"}
    if duplicate:
        headers[DUPLICATE] = "true"
    return json_text(task_text(row, data_json), status=200 if duplicate else 201, headers=headers)
