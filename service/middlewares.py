"""Request metrics, request ids, and the rule that every error is JSON (access: service/auth.py)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from asynctask.core.errors import (
    ChangedMeanwhile,
    DatabaseUnavailable,
    InvalidTransition,
    TaskNotFound,
    UniqueKeyTaken,
)
from asynctask.service import keys
from asynctask.service.bodies import BodyTimeout, UnsupportedMediaType
from asynctask.service.inflight import KeyInFlight
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


# nginx's code for a request whose client left before the answer; metrics count it, nobody sees it.
CLIENT_GONE = 499
SHOWN_PATH = 100


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
        status = CLIENT_GONE
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
    except (InvalidTransition, UniqueKeyTaken, ChangedMeanwhile) as exc:
        return error_response(409, str(exc))
    except UnsupportedMediaType as exc:
        return error_response(415, str(exc))
    except BodyTimeout as exc:
        response = error_response(408, str(exc))
        response.force_close()  # the rest of the body may still trickle in: stop reading it
        return response
    except ConnectionResetError:
        # The client went away mid-body (aiohttp raises this from request.read()): nobody is
        # left to answer, and nothing failed here.
        log.debug(
            "request %s: the client closed the connection before its body arrived", request_id
        )
        return error_response(CLIENT_GONE, "The client closed the connection.")
    except KeyInFlight as exc:
        return error_response(409, str(exc), headers={"Retry-After": "1"})
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
    path = shown(request.path)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"Method {request.method} is not allowed on {path} (allowed: {allowed})."
    elif isinstance(exc, web.HTTPNotFound):
        message = f"Not found: {path}."
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[keys.CONFIG].api.max_body_bytes
        message = f"Request body is larger than the limit of {limit} bytes."
    else:
        message = exc.reason
    return error_response(exc.status, message, headers=headers)


def shown(text: str) -> str:
    """A request-given value bounded for messages: a path or header can be 8 KiB long."""
    return text if len(text) <= SHOWN_PATH else f"{text[:SHOWN_PATH]}... ({len(text)} characters)"
