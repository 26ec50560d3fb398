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
