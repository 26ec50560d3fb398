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
from asynctask.service.rules import MAX_BIGINT, one_of
from asynctask.service.schemas import ErrorSchema

OPENAPI_PATH = "/api/openapi"
DOCS_PATH = "/api/docs"
METRICS_PATH = "/metrics"
# Paths anyone may read even when tokens are configured: probes, metrics and documentation.
PUBLIC_PREFIXES = ("/health", "/ready", METRICS_PATH, OPENAPI_PATH, DOCS_PATH)
# Open whatever the tokens: where the dashboard logs in (service/auth.py).
SESSION_PATH = "/api/session"
SESSION_COOKIE = "asynctask_session"
_CHANGES = frozenset({"post", "put", "patch", "delete"})
Handler = TypeVar("Handler", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])
_ERRORS = {
    400: "The body is not valid JSON.",
    403: "Refused: a cross-site request (Origin or Sec-Fetch-Site), or a read-only token.",
    404: "No task has this id.",
    409: "The task's state does not allow this change.",
    413: "The body is larger than api.max_body_bytes.",
    422: "A field breaks a rule; `fields` names each one.",
    401: "Missing or wrong bearer token (or session cookie).",
    500: "Unexpected error, logged with the X-Request-Id; nothing internal is shown.",
    503: "The database is unavailable; retry later (Retry-After).",
}
BODY_ERRORS = (400, 413, 422, 503)
LOCATION = {"Location": {"description": "/api/tasks/{id}", "schema": {"type": "string"}}}
_ID = {
    "in": "path",
    "name": "id",
    "required": True,
    "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_BIGINT},
}
_ERROR_REF = "#/components/schemas/Error"


def operation(
    summary: str,
    ok: tuple[int, type[Schema], str],
    errors: tuple[int, ...],
    path_id: bool = False,
    tags: tuple[str, ...] = ("tasks",),
    headers: dict[str, Any] | None = None,
    unavailable: type[Schema] = ErrorSchema,
    parameters: tuple[dict[str, Any], ...] = (),
    notes: dict[int, str] | None = None,
) -> Callable[[Handler], Handler]:
    """Declare a handler's operation: its success answer and every error it can give (+500).

    `notes` replaces the generic description of an error code for this operation.
    """
    code, schema, description = ok
    responses: dict[int, dict[str, Any]] = {
        code: {
            "schema": schema,
            "description": description,
            **({"headers": headers} if headers else {}),
        }
    }
    for error in (*errors, 500):
        schema = unavailable if error == 503 else ErrorSchema
        text = (notes or {}).get(error, _ERRORS[error])
        responses[error] = {"schema": schema, "description": text}
    params = [_ID, *parameters] if path_id else list(parameters)
    return docs(tags=list(tags), summary=summary, responses=responses, parameters=params)


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
    """Declare the JSON body a handler reads (it validates it itself: see schemas.TaskRules)."""
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
        for method, spec in operations.items():
            spec.pop("produces", None)  # apigami's docs() adds this Swagger 2 key everywhere
            if method in _CHANGES:  # service/auth.py refuses cross-site changes everywhere
                spec["responses"]["403"] = _error_answer(403)
    # The accepted types are the configuration's handlers, so the enum is known per app only.
    create = document["components"]["schemas"]["TaskCreate"]["properties"]
    create["type"]["enum"] = list(config.task_types)
    create["type"]["description"] = one_of(config.task_types)
    create["max_attempts"]["default"] = config.max_attempts
    if config.api.tokens:
        _document_tokens(document)


def _error_answer(code: int) -> dict[str, Any]:
    return {
        "description": _ERRORS[code],
        "content": {"application/json": {"schema": {"$ref": _ERROR_REF}}},
    }


def _document_tokens(document: dict[str, Any]) -> None:
    document["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        # What POST /api/session sets for the dashboard: either one will do.
        "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
    }
    for path, operations in document["paths"].items():
        if not path.startswith(PUBLIC_PREFIXES) and path != SESSION_PATH:
            for spec in operations.values():
                spec["security"] = [{"bearer": []}, {"session": []}]
                spec["responses"]["401"] = _error_answer(401)
