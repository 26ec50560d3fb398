"""Request metrics, request ids, and the rule that every error is JSON (auth: service/auth.py)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from asynctask.core.errors import DatabaseUnavailable, InvalidTransition, TaskNotFound
from asynctask.service import keys
from asynctask.service.metrics import method_label, route_label
from asynctask.service.rules import MalformedRequest, ValidationFailed

log = logging.getLogger("asynctask.api")


def error_response(
    status: int,
    message: str,
    fields: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The one error shape: {"error": message} plus {"fields": ...} for 422."""
    body: dict[str, Any] = {"error": message}
    if fields is not None:
        body["fields"] = fields
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer (errors included) by route template, method and status, and time it."""
    started = time.perf_counter()
    status = 500  # what aiohttp answers for an exception no inner middleware turned into a response
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects; error_middleware answers the rest
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away before the answer (nginx's code for it)
        raise
    finally:
        request.app[keys.METRICS].observe(
            await route_label(request),
            method_label(request.method),
            status,
            time.perf_counter() - started,
        )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request an id (X-Request-Id) and map every failure to a JSON answer.

    An unexpected exception is logged with the request id and answered 500 without details.
    """
    request_id = uuid.uuid4().hex
    response = await _answer(request, handler, request_id)
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response


async def _answer(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
    try:
        _static_file_exists(request)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except ValidationFailed as exc:
        return error_response(422, str(exc), exc.fields)
    except MalformedRequest as exc:
        return error_response(400, str(exc))
    except TaskNotFound as exc:
        return error_response(404, str(exc))
    except InvalidTransition as exc:
        return error_response(409, str(exc))
    except DatabaseUnavailable as exc:
        log.warning("request %s: %s", request_id, exc)
        return error_response(
            503, "The database is unavailable; try again.", headers={"Retry-After": "1"}
        )
    except Exception:
        log.exception("request %s: %s %s failed", request_id, request.method, request.path)
        return error_response(500, f"Internal server error (request id {request_id}).")


def _static_file_exists(request: web.Request) -> None:
    # A static route answers a missing file with an empty 404 *while sending* (FileResponse
    # checks at prepare), too late for JSON; so check first (Swagger UI's assets are the only ones).
    resource = request.match_info.route.resource
    if isinstance(resource, web.StaticResource):
        directory = Path(resource.get_info()["directory"])
        if not directory.joinpath(request.match_info["filename"]).is_file():
            raise web.HTTPNotFound()


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers = {
        k: v for k, v in exc.headers.items() if k not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH)
    }
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"Method {request.method} is not allowed on {request.path} (allowed: {allowed})."
    elif isinstance(exc, web.HTTPNotFound):
        message = f"Not found: {request.path}."
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[keys.CONFIG].api.max_body_bytes
        message = f"Request body is larger than the limit of {limit} bytes."
    else:
        message = exc.reason
    return error_response(exc.status, message, headers=headers)
