"""The OpenAPI 3 document and Swagger UI: every route, every answer, every rule; no CDN."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp_apigami.constants import SWAGGER_DICT
from marshmallow import ValidationError

from asynctask.core.config import ApiConfig, Config
from asynctask.core.models import STATES
from asynctask.service import error_examples
from asynctask.service.app import create_app
from asynctask.service.create_schemas import TaskCreateSchema
from asynctask.service.dashboard_pages import is_page
from asynctask.service.rules import TaskRules
from asynctask.service.task_examples import TASK_ID
from tests.conftest import make_config

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
ROUTES = {
    ("get", "/health"), ("get", "/ready"), ("get", "/api/openapi"), ("get", "/api/docs"),
    ("post", "/api/tasks"), ("get", "/api/tasks"), ("post", "/api/tasks/batch"),
    ("get", "/api/tasks/{id}"), ("post", "/api/tasks/{id}/cancel"),
    ("post", "/api/tasks/{id}/retry"), ("get", "/metrics"), ("get", "/api/stats"),
    ("get", "/api/schedules"),
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
        # Swagger UI's files and the dashboard's pages are not API routes: not in the document.
        if route.method != "HEAD" and "/static" not in path and not is_page(path):
            path = path.replace("{id:[0-9]{1,19}}", "{id}")
            served.add(
                (route.method.lower(), path.replace("{priority:high|normal|low}", "{priority}"))
            )
    assert served == ROUTES
    assert not any(is_page(path) for path in document["paths"])


def test_every_answer_is_documented(document: dict[str, Any]) -> None:
    paths = document["paths"]

    def codes(method: str, path: str) -> set[str]:
        return set(paths[path][method]["responses"])

    # Without tokens (this config): every route but the public ones may answer 421 (a foreign
    # Host), and every change 403 (cross-site). With tokens the 401s are checked below.
    local = {"421"}
    creates = {"200", "201", "400", "403", "408", "409", "413", "415", "422", "500", "503", *local}
    assert codes("post", "/api/tasks") == codes("post", "/api/tasks/batch") == creates
    assert codes("get", "/api/tasks") == {"200", "422", "500", "503", *local}
    assert codes("get", "/api/tasks/{id}") == {"200", "404", "422", "500", "503", *local}
    assert codes("post", "/api/tasks/{id}/cancel") == {
        "200", "202", "403", "404", "409", "500", "503", *local
    }  # fmt: skip
    assert codes("post", "/api/tasks/{id}/retry") == {
        "200", "403", "404", "409", "500", "503", *local
    }  # fmt: skip
    bulk = {"200", "400", "403", "408", "413", "415", "422", "500", "503", *local}
    assert codes("post", "/api/tasks/bulk/cancel") == bulk
    assert codes("post", "/api/tasks/bulk/retry") == {*bulk, "409"}
    for action in ("pause", "resume"):
        assert codes("post", f"/api/queues/{{priority}}/{action}") == {
            "200", "403", "404", "500", "503", *local
        }  # fmt: skip
    for path in ("/api/schedules", "/api/queues", "/api/workers", "/api/stats"):
        assert codes("get", path) == {"200", "500", "503", *local}
    assert codes("get", "/api/events") == {"200", "500", *local}
    assert set(paths["/api/events"]["get"]["responses"]["200"]["content"]) == {"text/event-stream"}
    # The session routes are public (a page must reach them to log in), but still cross-site
    # checked.
    assert codes("get", "/api/session") == {"200", "500"}
    assert codes("post", "/api/session") == {
        "200", "400", "401", "403", "408", "413", "415", "422", "500"
    }  # fmt: skip
    assert codes("delete", "/api/session") == {"200", "403", "500"}
    assert codes("get", "/health") == {"200", "500"}
    assert codes("get", "/ready") == {"200", "500", "503"}
    assert codes("get", "/metrics") == {"200", "500", *local}
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    created = paths["/api/tasks"]["post"]["responses"]["201"]
    assert "Location" in created["headers"]
    error = {"$ref": "#/components/schemas/Error"}
    invalid = paths["/api/tasks"]["post"]["responses"]["422"]["content"]["application/json"]
    assert invalid["schema"] == error and set(invalid["example"]["fields"]) >= {"type"}


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
    assert f"At most {config.api.max_data_bytes} bytes as JSON." in props["data"]["description"]
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
        "scheduled", "available", "running", "retrying", "completed", "failed", "cancelled"
    ]  # fmt: skip
    task_id, wait = document["paths"]["/api/tasks/{id}"]["get"]["parameters"]
    assert task_id["in"] == "path" and task_id["schema"]["type"] == "integer"
    assert wait["in"] == "query" and wait["name"] == "wait_seconds" and not wait["required"]
    assert wait["schema"] == {"type": "number", "minimum": 0, "maximum": 60}
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
    open_routes = {("get", p) for p in ("/health", "/ready", "/api/openapi", "/api/docs")}
    session = {(m, "/api/session") for m in ("get", "post", "delete")}
    assert guarded == ROUTES - open_routes - session  # /metrics too, unless api.public_metrics
    assert not any(
        "421" in spec["responses"] for ops in document["paths"].values() for spec in ops.values()
    )
    public = create_app(make_config(database_url, api__tokens=["t"], api__public_metrics=True))
    assert "security" not in public["swagger_dict"]["paths"]["/metrics"]["get"]


def test_no_security_scheme_without_tokens(document: dict[str, Any]) -> None:
    assert "securitySchemes" not in document.get("components", {})
    for path, operations in document["paths"].items():
        for spec in operations.values():
            assert "security" not in spec
            assert "401" not in spec["responses"] or path == "/api/session"


def test_last_error_is_documented_as_the_last_failure(document: dict[str, Any]) -> None:
    # tests/test_worker.py::test_polls_retries_and_fails: a task completed on its third attempt
    # keeps the second's error. The document, its example and README say the same.
    task = document["components"]["schemas"]["Task"]
    assert (
        "completes after a failed attempt keeps it"
        in task["properties"]["last_error"]["description"]
    )
    assert task["example"]["state"] == "completed" and task["example"]["last_error"]
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert "A completed task keeps the `last_error` of its last failed attempt" in readme


def test_the_stats_schema_requires_every_priority_and_state(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert set(schemas["Stats"]["required"]) == {
        "counts", "queue_lag_seconds", "last_minute", "workers", "due_without_workers",
        "per_minute", "last_hour", "paused", "supervisors", "types", "generated_at",
    }  # fmt: skip
    assert set(schemas["PriorityCounts"]["required"]) == {"high", "normal", "low"}
    assert set(schemas["StateCounts"]["required"]) == set(STATES)
    assert schemas["QueueLag"]["properties"]["high"]["type"] == "number"
    assert set(schemas["LastMinute"]["required"]) == {"completed", "failed"}
    assert set(schemas["LiveWorkers"]["required"]) == {"high", "normal", "low"}
    due = schemas["Stats"]["properties"]["due_without_workers"]
    assert due["type"] == "array" and set(due["items"]["enum"]) == {"high", "normal", "low"}


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
        {"type": "ok", "scheduled_at": "2030-01-01T00:00:00Z", "unique_key": "k"},
        {"type": "ok", "scheduled_at": "2030-01-01T00:00:00"},
        {"type": "ok", "scheduled_at": 5},
        {"type": "ok", "delay_seconds": 1.5},
        {"type": "ok", "delay_seconds": -1},
        {"type": "ok", "delay_seconds": 315_576_001},
        {"type": "ok", "delay_seconds": "3"},
        {"type": "ok", "delay_seconds": True},
        {"type": "ok", "delay_seconds": 1, "scheduled_at": "2030-01-01T00:00:00Z"},
        {"type": "ok", "delay_seconds": None, "scheduled_at": "2030-01-01T00:00:00Z"},
        {"type": "ok", "unique_key": ""},
        {"type": "ok", "unique_key": 5},
        {"type": "ok", "unique_key": None, "scheduled_at": None},
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
    _, errors = TaskRules(types, 5, ApiConfig().max_data_bytes).task(body)
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


def _plain(node: Any, components: dict[str, Any]) -> Any:
    """An OpenAPI 3.0 schema as plain JSON Schema: $refs inlined, `nullable` as a null type."""
    if isinstance(node, list):
        return [_plain(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _plain(components[node["$ref"].rsplit("/", 1)[1]], components)
    plain = {k: _plain(v, components) for k, v in node.items() if k not in ("nullable", "example")}
    return {"anyOf": [plain, {"type": "null"}]} if node.get("nullable") else plain


_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    # What the API writes: ISO 8601 with an offset (rfc3339-validator is not a dependency).
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


def _check(example: Any, schema: dict[str, Any], components: dict[str, Any], where: str) -> None:
    validator = jsonschema.Draft7Validator(_plain(schema, components), format_checker=_FORMATS)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(example)]
    assert not errors, (where, errors)


@pytest.mark.parametrize("tokens", [[], ["secret-token"]], ids=["open", "tokens"])
def test_every_schema_and_answer_has_an_example_that_fits_it(
    database_url: str, tokens: list[str]
) -> None:
    document = create_app(make_config(database_url, api__tokens=tokens))[SWAGGER_DICT]
    components = document["components"]["schemas"]
    for name, schema in components.items():
        assert "example" in schema, name
        _check(schema["example"], schema, components, name)
    media_types = []
    for path, operations in document["paths"].items():
        for method, spec in operations.items():
            bodies = {"request": spec.get("requestBody", {})} | spec["responses"]
            for code, answer in bodies.items():
                for kind, media in answer.get("content", {}).items():
                    media_types.append(kind)
                    where = f"{method} {path} {code} {kind}"
                    schema = media["schema"]
                    if "example" in media:
                        _check(media["example"], schema, components, where)
                    else:  # the schema's own example is shown
                        assert "$ref" in schema, where
    assert {"application/json", "text/plain", "text/html", "text/event-stream"} == set(media_types)


async def test_the_examples_are_what_the_api_answers(
    aiohttp_client: MakeClient, database_url: str, sql: Any
) -> None:
    config = make_config(database_url, api__max_body_bytes=1024)
    client = await aiohttp_client(create_app(config))
    document = await (await client.get("/api/openapi")).json()
    paths, schemas = document["paths"], document["components"]["schemas"]

    def example(path: str, method: str, code: str) -> Any:
        return paths[path][method]["responses"][code]["content"]["application/json"]["example"]

    async def answer(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        response = await client.request(method, path, **kwargs)
        return response.status, await response.json()

    create = "/api/tasks"
    json_body = {"Content-Type": "application/json"}
    assert await answer("POST", create, data=error_examples.MALFORMED_BODY, headers=json_body) == (
        400, example(create, "post", "400")
    )  # fmt: skip
    assert await answer("POST", create, json=error_examples.INVALID_TASK) == (
        422, example(create, "post", "422")
    )  # fmt: skip
    batch = error_examples.invalid_batch(config)
    assert await answer("POST", "/api/tasks/batch", json=batch) == (
        422, example("/api/tasks/batch", "post", "422")
    )  # fmt: skip
    assert await answer("GET", create, params=error_examples.INVALID_QUERY) == (
        422, example(create, "get", "422")
    )  # fmt: skip
    assert await answer("POST", create, data=b"{" + b" " * 2048 + b"}", headers=json_body) == (
        413, example(create, "post", "413")
    )  # fmt: skip
    one = f"/api/tasks/{TASK_ID}"
    assert await answer("GET", one) == (404, example("/api/tasks/{id}", "get", "404"))
    sql.execute("INSERT INTO tasks (id, type, state) VALUES (%s, 'report', 'completed')", (42,))
    assert await answer("POST", one + "/cancel") == (
        409, example("/api/tasks/{id}/cancel", "post", "409")
    )  # fmt: skip
    sql.execute("UPDATE tasks SET state = 'running'")
    assert await answer("POST", one + "/retry") == (
        409, example("/api/tasks/{id}/retry", "post", "409")
    )  # fmt: skip
    # The request examples are accepted, and the created task has the example's fields.
    status, created = await answer("POST", create, json=schemas["TaskCreate"]["example"])
    assert status == 201 and set(created) == set(example(create, "post", "201"))
    status, ids = await answer("POST", "/api/tasks/batch", json=schemas["TaskBatch"]["example"])
    assert status == 201 and len(ids["ids"]) == len(schemas["BatchCreated"]["example"]["ids"])


async def test_the_401_example_is_what_the_api_answers(
    aiohttp_client: MakeClient, database_url: str
) -> None:
    client = await aiohttp_client(create_app(make_config(database_url, api__tokens=["t"])))
    document = await (await client.get("/api/openapi")).json()
    documented = document["paths"]["/api/tasks"]["get"]["responses"]["401"]["content"]
    response = await client.get("/api/tasks")
    assert response.status == 401
    assert await response.json() == documented["application/json"]["example"]
