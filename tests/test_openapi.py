"""The OpenAPI 3 document and Swagger UI: every route, every answer, every rule; no CDN."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from marshmallow import ValidationError

from asynctask.core.config import Config
from asynctask.core.models import STATES
from asynctask.service.app import create_app
from asynctask.service.rules import TaskRules
from asynctask.service.schemas import TaskCreateSchema
from tests.conftest import make_config

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
ROUTES = {
    ("get", "/health"), ("get", "/ready"), ("get", "/api/openapi"), ("get", "/api/docs"),
    ("post", "/api/tasks"), ("get", "/api/tasks"), ("post", "/api/tasks/batch"),
    ("get", "/api/tasks/{id}"), ("post", "/api/tasks/{id}/cancel"),
    ("post", "/api/tasks/{id}/retry"), ("get", "/metrics"), ("get", "/api/stats"),
    ("get", "/api/queues"), ("post", "/api/queues/{priority}/pause"),
    ("post", "/api/queues/{priority}/resume"), ("get", "/api/workers"),
    ("post", "/api/tasks/bulk/cancel"), ("post", "/api/tasks/bulk/retry"), ("get", "/api/events"),
    ("get", "/api/session"), ("post", "/api/session"), ("delete", "/api/session"),
}  # fmt: skip


@pytest.fixture
async def document(aiohttp_client: MakeClient, config: Config) -> dict[str, Any]:
    client = await aiohttp_client(create_app(config))
    response = await client.get("/api/openapi")
    assert response.status == 200 and response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    return body


def test_it_is_openapi_3(document: dict[str, Any]) -> None:
    assert re.match(r"^3\.0\.\d+$", document["openapi"])
    assert document["info"]["title"] == "asynctask"
    for operations in document["paths"].values():
        for operation in operations.values():
            assert "produces" not in operation  # a Swagger 2 key


def test_it_lists_every_route_the_app_serves(document: dict[str, Any], config: Config) -> None:
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert documented == ROUTES
    served = set()
    for route in create_app(config).router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method != "HEAD" and "/static" not in path:
            path = path.replace("{id:[0-9]+}", "{id}")
            served.add(
                (route.method.lower(), path.replace("{priority:high|normal|low}", "{priority}"))
            )
    assert served == ROUTES


def test_every_answer_is_documented(document: dict[str, Any]) -> None:
    paths = document["paths"]

    def codes(method: str, path: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert codes("post", "/api/tasks") == {"201", "400", "403", "413", "422", "500", "503"}
    assert codes("post", "/api/tasks/batch") == {"201", "400", "403", "413", "422", "500", "503"}
    assert codes("get", "/api/tasks") == {"200", "422", "500", "503"}
    assert codes("get", "/api/tasks/{id}") == {"200", "404", "500", "503"}
    assert codes("post", "/api/tasks/{id}/cancel") == {"200", "403", "404", "409", "500", "503"}
    assert codes("post", "/api/tasks/{id}/retry") == {"200", "403", "404", "409", "500", "503"}
    assert codes("get", "/api/queues") == {"200", "500", "503"}
    for action in ("pause", "resume"):
        assert codes("post", f"/api/queues/{{priority}}/{action}") == {
            "200", "403", "404", "500", "503"
        }  # fmt: skip
    assert codes("get", "/api/workers") == {"200", "500", "503"}
    for action in ("cancel", "retry"):
        assert codes("post", f"/api/tasks/bulk/{action}") == {
            "200", "400", "403", "413", "422", "500", "503"
        }  # fmt: skip
    assert codes("get", "/api/events") == {"200", "500"}
    assert set(paths["/api/events"]["get"]["responses"]["200"]["content"]) == {"text/event-stream"}
    assert codes("get", "/api/session") == {"200", "500"}
    assert codes("post", "/api/session") == {"200", "400", "401", "403", "413", "422", "500"}
    assert codes("delete", "/api/session") == {"200", "403", "500"}
    assert codes("get", "/ready") == {"200", "500", "503"}
    assert codes("get", "/api/stats") == {"200", "500", "503"}
    assert codes("get", "/metrics") == {"200", "500"}
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    created = paths["/api/tasks"]["post"]["responses"]["201"]
    assert "Location" in created["headers"]
    error = {"$ref": "#/components/schemas/Error"}
    assert paths["/api/tasks"]["post"]["responses"]["422"]["content"]["application/json"] == {
        "schema": error
    }


def test_the_create_schema_carries_every_rule(document: dict[str, Any], config: Config) -> None:
    schema = document["components"]["schemas"]["TaskCreate"]
    assert schema["required"] == ["type"] and schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["type"]["enum"] == list(config.task_types)
    assert props["priority"]["enum"] == ["high", "normal", "low"]
    assert props["priority"]["default"] == "normal"
    assert props["max_attempts"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 2147483647,
        "default": config.max_attempts,
        "description": "Default: the server's max_attempts setting.",
    }
    assert props["data"]["type"] == "object"
    batch = document["components"]["schemas"]["TaskBatch"]["properties"]["tasks"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 10_000)
    assert batch["items"] == {"$ref": "#/components/schemas/TaskCreate"}


def test_the_list_query_and_path_id_are_typed(document: dict[str, Any]) -> None:
    params = {p["name"]: p for p in document["paths"]["/api/tasks"]["get"]["parameters"]}
    assert set(params) == {"state", "priority", "type", "limit", "cursor"}
    assert params["limit"]["schema"] == {
        "type": "integer", "default": 100, "minimum": 1, "maximum": 1000
    }  # fmt: skip
    assert params["state"]["schema"]["enum"] == [
        "available", "running", "retrying", "completed", "failed", "cancelled"
    ]  # fmt: skip
    (task_id,) = document["paths"]["/api/tasks/{id}"]["get"]["parameters"]
    assert task_id["in"] == "path" and task_id["schema"]["type"] == "integer"
    task = document["components"]["schemas"]["Task"]
    assert set(task["required"]) == set(task["properties"])
    assert task["properties"]["started_at"] == {
        "type": "string", "format": "date-time", "nullable": True
    }  # fmt: skip


def test_the_type_enum_follows_the_configuration(database_url: str) -> None:
    config = make_config(database_url, handlers={"only": "tests.handlers:ok"})
    app = create_app(config)
    props = app["swagger_dict"]["components"]["schemas"]["TaskCreate"]["properties"]
    assert props["type"]["enum"] == ["only"]


def test_tokens_are_documented_when_configured(database_url: str) -> None:
    """Swagger UI shows its Authorize button for the scheme, and sends the token per operation."""
    app = create_app(make_config(database_url, api__tokens=["t"]))
    document = app["swagger_dict"]
    assert document["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer"},
        "session": {"type": "apiKey", "in": "cookie", "name": "asynctask_session"},
    }
    guarded = {
        (method, path)
        for path, operations in document["paths"].items()
        for method, spec in operations.items()
        if spec.get("security") == [{"bearer": []}, {"session": []}] and "401" in spec["responses"]
    }
    open_routes = {
        ("get", p) for p in ("/health", "/ready", "/metrics", "/api/openapi", "/api/docs")
    }
    session = {(m, "/api/session") for m in ("get", "post", "delete")}
    assert guarded == ROUTES - open_routes - session


def test_no_security_scheme_without_tokens(document: dict[str, Any]) -> None:
    assert "securitySchemes" not in document.get("components", {})
    for path, operations in document["paths"].items():
        for spec in operations.values():
            assert "security" not in spec
            assert "401" not in spec["responses"] or path == "/api/session"


def test_the_stats_schema_requires_every_priority_and_state(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert set(schemas["Stats"]["required"]) == {
        "counts", "queue_lag_seconds", "last_minute", "per_minute", "last_hour", "paused",
        "workers", "types", "generated_at",
    }  # fmt: skip
    assert set(schemas["PriorityCounts"]["required"]) == {"high", "normal", "low"}
    assert set(schemas["StateCounts"]["required"]) == set(STATES)
    assert schemas["QueueLag"]["properties"]["high"]["type"] == "number"
    assert set(schemas["LastMinute"]["required"]) == {"completed", "failed"}


@pytest.mark.parametrize(
    "body",
    [
        {"type": "ok"},
        {"type": "ok", "priority": "low", "max_attempts": 3, "data": {"a": [1]}},
        {},
        {"type": "nope"},
        {"type": "ok", "priority": "urgent"},
        {"type": "ok", "max_attempts": 0},
        {"type": "ok", "max_attempts": 2**31},
        {"type": "ok", "max_attempts": "3"},
        {"type": "ok", "max_attempts": True},
        {"type": "ok", "max_attempts": 1.5},
        {"type": "ok", "data": []},
        {"type": "ok", "extra": 1},
    ],
)
def test_the_fast_validator_agrees_with_the_documented_schema(body: dict[str, Any]) -> None:
    """The hand-written rules and the marshmallow schema reject the same fields."""
    types = ("ok", "report")
    schema = TaskCreateSchema()
    try:
        schema.load(body)
        documented: set[str] = set()
    except ValidationError as exc:
        documented = set(exc.messages_dict)
    if body.get("type") not in (None, *types):
        documented.add("type")  # the enum is added to the document per app, not to the class
    _, errors = TaskRules(types, 5).task(body)
    assert set(errors) == documented


async def test_swagger_ui_loads_from_local_files_only(
    aiohttp_client: MakeClient, config: Config
) -> None:
    client = await aiohttp_client(create_app(config))
    response = await client.get("/api/docs")
    assert response.status == 200 and response.content_type == "text/html"
    html = await response.text()
    assert "SwaggerUIBundle" in html and 'url: "/api/openapi"' in html
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) >= 4
    for asset in assets:
        assert asset.startswith("/api/docs/static/")
        assert (await client.get(asset)).status == 200
    missing = await client.get("/api/docs/static/nope.js")
    assert missing.status == 404 and missing.content_type == "application/json"
