"""The handler registry: import once, check, classify; errors name the config key."""

from __future__ import annotations

from pathlib import Path

import pytest

from asynctask.core.errors import HandlerImportError
from asynctask.workers import registry
from tests.conftest import make_config


def test_loads_sync_and_async_handlers_with_timeouts(database_url: str) -> None:
    config = make_config(
        database_url,
        task_timeout_seconds=60,
        handlers={
            "ok": "tests.handlers:ok",
            "boom": {"function": "tests.handlers:boom", "timeout_seconds": 2},
        },
    )
    handlers = registry.load_handlers(config)
    assert handlers["ok"].is_async and handlers["ok"].timeout_seconds == 60
    assert not handlers["boom"].is_async and handlers["boom"].timeout_seconds == 2
    assert registry.max_timeout(config) == 60


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("tests.no_such_module:fn", "cannot be imported: ModuleNotFoundError"),
        ("tests.handlers:no_such_fn", "has no attribute 'no_such_fn'"),
        ("asynctask.core.models:STATES", "is not callable (it is tuple)"),
        ("asynctask.cli:__name__", "is not callable (it is str)"),
    ],
)
def test_bad_targets_name_the_key_and_target(target: str, expected: str) -> None:
    with pytest.raises(HandlerImportError) as info:
        registry.import_target("mytype", target)
    message = str(info.value)
    assert message.startswith(f"handlers.mytype: {target!r}")
    assert expected in message


def test_import_time_errors_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "broken_handlers_mod.py"
    module.write_text("raise RuntimeError('bad import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(HandlerImportError, match="RuntimeError: bad import"):
        registry.import_target("x", "broken_handlers_mod:fn")


def _two(task: object, other: object) -> None: ...
def _none() -> None: ...
def _keyword_only(*, task: object) -> None: ...
def _with_default(task: object, retries: int = 3) -> None: ...
def _varargs(*args: object) -> None: ...


class _Callable:
    def __call__(self, task: object) -> None: ...


@pytest.mark.parametrize("function", [_two, _none, _keyword_only], ids=lambda f: f.__name__)
def test_a_handler_that_cannot_take_the_task_is_refused(function: object) -> None:
    with pytest.raises(HandlerImportError) as info:
        registry.check_signature("mytype", "mod:fn", function)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "handlers.mytype: 'mod:fn' must take one positional argument, the task"
    )
    assert f"(it is {function.__name__}(" in message  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "function",
    [_with_default, _varargs, _Callable(), print],
    ids=["default", "varargs", "call", "builtin"],
)
def test_a_handler_callable_with_the_task_alone_is_accepted(function: object) -> None:
    registry.check_signature("mytype", "mod:fn", function)  # type: ignore[arg-type]


def test_a_wrong_signature_stops_loading_the_handlers(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "two_argument_handlers.py").write_text("def go(task, extra):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = make_config(database_url, handlers={"go": "two_argument_handlers:go"})
    with pytest.raises(HandlerImportError, match=r"^handlers.go: .* \(it is go\(task, extra\)\)$"):
        registry.load_handlers(config)
