"""The OpenAPI 3 document: how handlers declare their answers, and its setup on the app.

aiohttp-apigami builds the document from the routes' decorators; the few things it cannot know
(the configured task types, the optional bearer tokens) are filled in per app afterwards.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp_apigami import AiohttpApiSpec, OpenApiVersion, docs, querystring_schema, request_schema
from aiohttp_apigami.constants import SWAGGER_DICT
from marshmallow import Schema

from asynctask.core.config import Config
from asynctask.service.common_schemas import ErrorSchema
from asynctask.service.create_schemas import DATA_DESCRIPTION
from asynctask.service.dashboard_pages import is_page
from asynctask.service.examples import add_examples
from asynctask.service.rules import MAX_BIGINT, one_of

OPENAPI_PATH = "/api/openapi"
DOCS_PATH = "/api/docs"
METRICS_PATH = "/metrics"
# Paths anyone may read even when tokens are configured: probes and documentation (exact paths,
# plus Swagger UI's files), the dashboard's pages (they hold no data and show the login form), and
# /metrics when api.public_metrics says so.
PUBLIC_PATHS = frozenset({"/health", "/ready", OPENAPI_PATH, DOCS_PATH})
# Open whatever the tokens: where the dashboard logs in (service/auth.py).
SESSION_PATH = "/api/session"
SESSION_COOKIE = "asynctask_session"
_CHANGES = frozenset({"post", "put", "patch", "delete"})
STATIC_PREFIX = DOCS_PATH + "/static/"


def is_public(path: str, public_metrics: bool) -> bool:
    """True for the paths that need no token (and no Host check) even when tokens are set."""
    if path in PUBLIC_PATHS or path.startswith(STATIC_PREFIX) or is_page(path):
        return True
    return public_metrics and path == METRICS_PATH


Handler = TypeVar("Handler", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])
_ERRORS = {
    400: "The body is not valid JSON.",
    403: "Refused: a cross-site request (Origin or Sec-Fetch-Site), or a read-only token.",
    404: "No task has this id.",
    408: "The body did not arrive within api.body_timeout_seconds; the connection is closed.",
    409: "The task's state does not allow this change.",
    413: "The body is larger than api.max_body_bytes.",
    415: "The body is not declared as JSON (Content-Type: application/json).",
    421: "Without tokens: the Host header is not this machine nor one of api.allowed_hosts.",
    422: "A field breaks a rule; `fields` names each one.",
    401: "Missing or wrong bearer token (or session cookie).",
    500: "Unexpected error, logged with the X-Request-Id; nothing internal is shown.",
    503: "The database is unavailable; retry later (Retry-After).",
}
BODY_ERRORS = (400, 408, 413, 415, 422, 503)
CREATE_ERRORS = (400, 408, 409, 413, 415, 422, 503)
LOCATION = {"Location": {"description": "/api/tasks/{id}", "schema": {"type": "string"}}}
_TRUE = {"type": "string", "enum": ["true"]}
REPLAY_HEADERS = {
    "X-Asynctask-Duplicate": {
        "description": "`true` when the answer is an existing task holding the unique_key.",
        "schema": _TRUE,
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the"
        " same Idempotency-Key.",
        "schema": _TRUE,
    },
}
CREATED_HEADERS = {**LOCATION, **REPLAY_HEADERS}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}
DUPLICATE_ANSWER = (
    "An unfinished task of this type holds the unique_key: that task (nothing was inserted)."
)
BATCH_DUPLICATES = "Every item's unique_key was held: nothing was inserted."
RETRY_CONFLICT = (
    "The task is not failed or cancelled, or an unfinished task of its type holds its unique_key."
)
CREATE_DESCRIPTIONS = {
    409: "A request with the same Idempotency-Key is still in flight: retry after Retry-After.",
    422: "A field breaks a rule (`fields` names each one), or the Idempotency-Key was used with"
    " another request.",
}
# What service/idempotency.py accepts: a bare token or an RFC 8941 string (\" and \\ escaped).
KEY_PATTERN = r'^([!#-~][!-~]*|"([ !#-\[\]-~]|\\["\\])+")$'
IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "description": "Makes retrying this POST safe: the same key with the same body within 24 h"
    " gets the first answer again (`Idempotent-Replayed: true`), inserting nothing; with another"
    " body it is a 422. 1 to 255 printable ASCII characters, bare or quoted (a UUID is best);"
    " per API token.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": KEY_PATTERN},
}
_ID = {
    "in": "path",
    "name": "id",
    "required": True,
    "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_BIGINT},
}
_ERROR_REF = "#/components/schemas/Error"
# GET /api/tasks/{id}?wait_seconds=N (api.max_wait_seconds may shorten the wait, not the range).
WAIT_MAX_SECONDS = 60
WAIT_SECONDS: dict[str, Any] = {
    "in": "query",
    "name": "wait_seconds",
    "required": False,
    "description": "Wait up to this many seconds for the task to reach a final state (completed,"
    " failed or cancelled): the answer comes as soon as it does, or after that long with the"
    " task as it is then (or sooner if the server's api.max_wait_seconds is lower). 0 or absent:"
    " answer at once.",
    "schema": {"type": "number", "minimum": 0, "maximum": WAIT_MAX_SECONDS},
}


def operation(
    summary: str,
    ok: tuple[int, type[Schema], str],
    errors: tuple[int, ...],
    path_id: bool = False,
    tags: tuple[str, ...] = ("tasks",),
    headers: dict[str, Any] | None = None,
    unavailable: type[Schema] = ErrorSchema,
    also: tuple[tuple[int, type[Schema], str, dict[str, Any]], ...] = (),
    parameters: tuple[dict[str, Any], ...] = (),
    descriptions: dict[int, str] | None = None,
) -> Callable[[Handler], Handler]:
    """Declare a handler's operation: its success answers and every error it can give (+500).

    `also` adds success answers (code, schema, description, headers); `descriptions` replaces
    the general wording of an error for this operation.
    """
    responses: dict[int, dict[str, Any]] = {}
    for code, schema, description, with_headers in ((*ok, headers), *also):
        responses[code] = {"schema": schema, "description": description}
        if with_headers:
            responses[code]["headers"] = with_headers
    for error in (*errors, 500):
        schema = unavailable if error == 503 else ErrorSchema
        wording = (descriptions or {}).get(error, _ERRORS[error])
        responses[error] = {"schema": schema, "description": wording}
        if error == 503 or (error == 409 and parameters):
            responses[error]["headers"] = _RETRY_AFTER
    return docs(
        tags=list(tags),
        summary=summary,
        responses=responses,
        parameters=[*([_ID] if path_id else []), *parameters],
    )


def text_operation(
    summary: str,
    description: str,
    tags: tuple[str, ...],
    media_type: str = "text/plain",
    schema: dict[str, Any] | None = None,
) -> Callable[[Handler], Handler]:
    """Declare a handler that answers text (200), or a JSON 500 like every route.

    For text/event-stream, `schema` is one event's (OpenAPI 3.0 has no itemSchema).
    """
    body = schema or {"type": "string"}
    responses: dict[int, dict[str, Any]] = {
        200: {"description": description, "content": {media_type: {"schema": body}}}
    }
    responses[500] = {"schema": ErrorSchema, "description": _ERRORS[500]}
    return docs(tags=list(tags), summary=summary, responses=responses)


def body(schema: type[Schema]) -> Callable[[Handler], Handler]:
    """Declare the JSON body a handler reads (it validates it itself: see rules.TaskRules)."""
    return request_schema(schema, required=True)


def query(schema: type[Schema]) -> Callable[[Handler], Handler]:
    """Declare the query string a handler reads."""
    return querystring_schema(schema)


@docs(
    tags=["docs"],
    summary="This OpenAPI 3 document",
    responses={
        200: {
            "description": "The document.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def _openapi_stub(request: web.Request) -> web.Response:
    """Documents a route aiohttp-apigami serves itself; never called."""
    raise NotImplementedError


@docs(
    tags=["docs"],
    summary="Swagger UI, served from local files",
    produces=["text/html"],
    responses={
        200: {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}
    },
)
async def _docs_stub(request: web.Request) -> web.Response:
    """Documents a route aiohttp-apigami serves itself; never called."""
    raise NotImplementedError


def setup_openapi(app: web.Application, config: Config, version: str) -> None:
    """Serve the OpenAPI 3 document at /api/openapi and Swagger UI (local files) at /api/docs."""
    api_spec = AiohttpApiSpec(
        url=OPENAPI_PATH,
        swagger_path=DOCS_PATH,
        static_path=DOCS_PATH + "/static",
        openapi_version=OpenApiVersion.V303,
        title="asynctask",
        version=version,
        info={"description": "A PostgreSQL-backed task queue. Errors: {error, fields}."},
    )
    # The two routes aiohttp-apigami adds itself carry no docs of their own.
    api_spec.spec.path(path=OPENAPI_PATH, method="get", handler=_openapi_stub)
    api_spec.spec.path(path=DOCS_PATH, method="get", handler=_docs_stub)
    with warnings.catch_warnings():
        # apigami 0.9 stores the document under a str key ("make it web.AppKey in 1.x").
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        api_spec.register(app, in_place=True)
    document: dict[str, Any] = app[SWAGGER_DICT]
    for operations in document["paths"].values():
        for spec in operations.values():
            spec.pop("produces", None)  # apigami's docs() adds this Swagger 2 key everywhere
    # The accepted types are the configuration's handlers, so the enum is known per app only.
    create = document["components"]["schemas"]["TaskCreate"]["properties"]
    create["type"]["enum"] = list(config.task_types)
    create["type"]["description"] = one_of(config.task_types)
    create["max_attempts"]["default"] = config.max_attempts
    # service/rules.py refuses both at once; marshmallow cannot say so in the document.
    document["components"]["schemas"]["TaskCreate"]["not"] = {
        "required": ["scheduled_at", "delay_seconds"],
        "description": "scheduled_at and delay_seconds are not both given.",
    }
    limit = config.api.max_data_bytes
    create["data"]["description"] = f"{DATA_DESCRIPTION} At most {limit} bytes as JSON."
    _document_access(document, config)


def _document_access(document: dict[str, Any], config: Config) -> None:
    # With tokens, the guarded routes answer 401 without one; without, 421 for a foreign Host
    # and 403 for a foreign Origin. Then every answer gets its example.
    if config.api.tokens:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            # What POST /api/session sets for the dashboard: either one will do.
            "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
        }
    for path, operations in document["paths"].items():
        if is_public(path, config.api.public_metrics) or path == SESSION_PATH:
            continue
        for method, spec in operations.items():
            if method in _CHANGES:  # service/auth.py refuses cross-site changes everywhere
                spec["responses"]["403"] = _error(_ERRORS[403])
            if config.api.tokens:
                spec["security"] = [{"bearer": []}, {"session": []}]
                spec["responses"]["401"] = _error(_ERRORS[401])
            else:
                spec["responses"]["421"] = _error(_ERRORS[421])
    add_examples(document, config)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _ERROR_REF}}},
    }
