"""The handler registry: each `handlers:` entry imported once, checked, and classified."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asynctask.core.config import Config, HandlerConfig
from asynctask.core.errors import HandlerImportError


@dataclass(frozen=True, slots=True)
class Handler:
    """A loaded handler: the callable, whether it is a coroutine function, its attempt timeout."""

    function: Callable[..., Any]
    is_async: bool
    timeout_seconds: float


def import_target(task_type: str, target: str) -> Callable[..., Any]:
    """Import `module:function`; errors name the config key and the target."""
    module_name, _, attribute = target.partition(":")
    where = f"handlers.{task_type}: {target!r}"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code, not just ImportError
        raise HandlerImportError(
            f"{where} cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc
    function = getattr(module, attribute, None)
    if function is None:
        raise HandlerImportError(f"{where}: module {module_name} has no attribute {attribute!r}")
    if not callable(function):
        raise HandlerImportError(f"{where} is not callable (it is {type(function).__name__})")
    return function  # type: ignore[no-any-return]


def check_signature(task_type: str, target: str, function: Callable[..., Any]) -> None:
    """Refuse a handler that cannot be called with one positional argument, the task."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins have none to show: let the call decide
        return
    try:
        signature.bind(object())
    except TypeError:
        raise HandlerImportError(
            f"handlers.{task_type}: {target!r} must take one positional argument, the task"
            f" (it is {getattr(function, '__name__', target)}{signature})"
        ) from None


def load_handlers(config: Config) -> dict[str, Handler]:
    """Import every configured handler; raises HandlerImportError on the first bad one."""
    return {
        task_type: _load(task_type, spec, config) for task_type, spec in config.handlers.items()
    }


def _load(task_type: str, spec: HandlerConfig, config: Config) -> Handler:
    function = import_target(task_type, spec.target)
    check_signature(task_type, spec.target, function)
    return Handler(
        function=function,
        is_async=inspect.iscoroutinefunction(function),
        timeout_seconds=config.timeout_for(task_type),
    )


def max_timeout(config: Config) -> float:
    """The longest attempt timeout of any handler (or the global one), for the watchdog."""
    return max([config.task_timeout_seconds, *(config.timeout_for(t) for t in config.handlers)])
