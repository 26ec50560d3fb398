"""Load and validate asynctask's configuration once, into frozen dataclasses.

Layering: built-in defaults < config.yaml < environment (`DATABASE_URL`, `ASYNCTASK_*`).
Every error names the key (and the environment variable, when that is where the value came from),
the value, and what is allowed, in one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from asynctask.core.errors import ConfigError

PRIORITIES: tuple[str, ...] = ("high", "normal", "low")
RETRY_BACKOFFS: tuple[str, ...] = ("fixed", "exponential")
LOG_FORMATS: tuple[str, ...] = ("text", "json")
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_INT32 = 2_147_483_647
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TYPE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


@dataclass(frozen=True)
class DatabaseConfig:
    """Where tasks live; `url` None means the embedded server under `.asynctask/`."""

    url: str | None = None
    pool_size: int = 10
    connect_timeout_seconds: float = 5.0


@dataclass(frozen=True)
class ApiConfig:
    """The HTTP API's listener and request limits."""

    host: str = "127.0.0.1"
    port: int = 4000
    max_body_bytes: int = 1024 * 1024
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class HandlerConfig:
    """One task type: the `module:function` that runs it and its own attempt timeout."""

    target: str
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class RetentionConfig:
    """How long finished tasks are kept, in days (fractions allowed); 0 keeps them forever."""

    completed_days: float = 7
    failed_days: float = 30


@dataclass(frozen=True)
class Config:
    """The whole configuration, validated; pass it down, never re-read it."""

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    priority_queues: Mapping[str, int] = field(
        default_factory=lambda: {"high": 4, "normal": 2, "low": 1}
    )
    max_attempts: int = 5
    timeout_milliseconds: int = 1000
    handlers: Mapping[str, HandlerConfig] = field(default_factory=dict)
    retry_backoff: str = "fixed"
    retry_backoff_max_milliseconds: int = 300_000
    task_timeout_seconds: float = 300.0
    shutdown_timeout_seconds: float = 30.0
    lease_seconds: float = 30.0
    prefetch: int = 100
    ack_flush_milliseconds: int = 5
    worker_max_memory_mb: int | None = None
    metrics_port: int | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    @property
    def task_types(self) -> tuple[str, ...]:
        """The accepted task types, sorted, for messages and the OpenAPI enum."""
        return tuple(sorted(self.handlers))

    def timeout_for(self, task_type: str) -> float:
        """Attempt timeout of one type: its own if set, else the global one."""
        handler = self.handlers.get(task_type)
        if handler is not None and handler.timeout_seconds is not None:
            return handler.timeout_seconds
        return self.task_timeout_seconds


# --- value checkers: each returns the converted value or raises ConfigError naming the key ---


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}: {value!r} is not allowed ({allowed})")


def _int(low: int, high: int = MAX_INT32, what: str = "") -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _fail(key, value, what or f"an integer from {low} to {high}")
        return value

    return check


def _number(low: float, high: float = 10**9) -> Callable[[str, Any], float]:
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
            raise _fail(key, value, f"a number greater than {low:g} and at most {high:g}")
        return float(value)

    return check


def _days(key: str, value: Any) -> float:
    # Fractions of a day let a test or a soak see rows pruned within minutes (0.0035 = ~5 min).
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 36_500:
        raise _fail(key, value, "days from 0 to 36500, fractions allowed; 0 keeps them forever")
    return float(value)


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda key, value: None if value is None else check(key, value)


def _choice(options: tuple[str, ...], upper: bool = False) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        text = value.upper() if upper and isinstance(value, str) else value
        if text not in options:
            raise _fail(key, value, "one of " + ", ".join(options))
        return str(text)

    return check


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(key, value, "a non-empty string")
    return value


def _tokens(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(key, value, "a list of non-empty strings")
    return tuple(value)


# Every scalar key: dotted path -> checker. The environment variable of a key is ASYNCTASK_ plus the
# path upper-cased with dots as underscores (api.port -> ASYNCTASK_API_PORT).
_SCALARS: dict[str, Callable[[str, Any], Any]] = {
    "database.url": _optional(_text),
    "database.pool_size": _int(1, 1000),
    "database.connect_timeout_seconds": _number(0, 600),
    "api.host": _text,
    "api.port": _int(1, 65535, "a TCP port from 1 to 65535"),
    "api.max_body_bytes": _int(1024, 1024**3),
    "api.tokens": _tokens,
    "max_attempts": _int(1),
    "timeout_milliseconds": _int(1, 86_400_000),
    "retry_backoff": _choice(RETRY_BACKOFFS),
    "retry_backoff_max_milliseconds": _int(1, 2_592_000_000 // 1000 * 1000),
    "task_timeout_seconds": _number(0, 604_800),
    "shutdown_timeout_seconds": _number(0, 86_400),
    "lease_seconds": _number(1, 86_400),
    "prefetch": _int(1, 1000),
    "ack_flush_milliseconds": _int(0, 10_000),
    "worker_max_memory_mb": _optional(_int(16, 1_048_576)),
    "metrics_port": _optional(_int(1, 65535, "a TCP port from 1 to 65535")),
    "log_level": _choice(LOG_LEVELS, upper=True),
    "log_format": _choice(LOG_FORMATS),
    "retention.completed_days": _days,
    "retention.failed_days": _days,
}
for _priority in PRIORITIES:
    _SCALARS[f"priority_queues.{_priority}"] = _int(0, 256, "0 or more workers, at most 256")
_SECTIONS = {"database", "api", "priority_queues", "retention"}


def env_name(key: str) -> str:
    """The environment variable that overrides a dotted config key."""
    return "ASYNCTASK_" + key.replace(".", "_").upper()


def default_config_path(environ: Mapping[str, str]) -> Path:
    """`$ASYNCTASK_CONFIG`, else `./config.yaml`."""
    return Path(environ.get("ASYNCTASK_CONFIG", "config.yaml"))


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (if any), apply the environment, validate, and freeze."""
    environ = os.environ if environ is None else environ
    path = default_config_path(environ) if path is None else path
    raw = _read_yaml(path) if path.exists() else _packaged_default(path, environ)
    return parse_config(raw, environ)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML ({exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {loaded!r}")
    return loaded


def _packaged_default(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    # An explicitly named file that does not exist is an error; the implicit ./config.yaml falls
    # back to the copy shipped inside the package, so an installed wheel runs anywhere.
    if "ASYNCTASK_CONFIG" in environ or path != Path("config.yaml"):
        raise ConfigError(f"config file {path} does not exist")
    return _read_yaml(Path(__file__).with_name("default_config.yaml"))


def parse_config(raw: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """Validate a raw mapping (file contents) plus environment overrides into a Config."""
    flat = _flatten(raw)
    handlers = _parse_handlers(raw.get("handlers") or {})
    for key in _SCALARS:
        name = env_name(key)
        if name in environ:
            flat[key] = (name, _env_value(key, environ[name]))
    if "DATABASE_URL" in environ:
        flat["database.url"] = ("DATABASE_URL", environ["DATABASE_URL"] or None)
    values = {}
    for key, (source, value) in flat.items():
        label = key if source == key else f"{source} ({key})"
        values[key] = _SCALARS[key](label, value)
    return _build(values, handlers)


def _flatten(raw: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    flat: dict[str, tuple[str, Any]] = {}
    for key, value in raw.items():
        if key == "handlers":
            continue
        if key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise _fail(key, value, "a mapping of keys")
            for sub, sub_value in value.items():
                _known(f"{key}.{sub}")
                flat[f"{key}.{sub}"] = (f"{key}.{sub}", sub_value)
        else:
            _known(str(key))
            flat[key] = (key, value)
    return flat


def _known(key: str) -> None:
    if key not in _SCALARS:
        prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
        siblings = sorted(k[len(prefix) :] for k in _SCALARS if k.startswith(prefix))
        siblings = [k for k in siblings if "." not in k] + (["handlers"] if not prefix else [])
        raise ConfigError(f"{key}: unknown key (allowed here: {', '.join(sorted(siblings))})")


def _env_value(key: str, text: str) -> Any:
    if key in ("api.tokens", "database.url", "api.host"):
        return text
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def _parse_handlers(raw: Any) -> dict[str, HandlerConfig]:
    if not isinstance(raw, dict):
        raise _fail("handlers", raw, "a mapping of task type to 'module:function'")
    handlers = {}
    for task_type, spec in raw.items():
        key = f"handlers.{task_type}"
        if not isinstance(task_type, str) or not _TYPE_NAME.match(task_type):
            raise _fail(key, task_type, "a type name of letters, digits, '_', '-' or '.'")
        timeout = None
        if isinstance(spec, dict):
            unknown = set(spec) - {"function", "timeout_seconds"}
            if unknown:
                raise ConfigError(
                    f"{key}.{sorted(unknown)[0]}: unknown key (allowed: function, timeout_seconds)"
                )
            timeout = _optional(_number(0, 604_800))(
                f"{key}.timeout_seconds", spec.get("timeout_seconds")
            )
            spec = spec.get("function")
        if not isinstance(spec, str) or not _TARGET.match(spec):
            raise _fail(key, spec, "'module:function', e.g. asynctask.workers.handlers:report")
        handlers[task_type] = HandlerConfig(target=spec, timeout_seconds=timeout)
    return handlers


def _build(values: dict[str, Any], handlers: dict[str, HandlerConfig]) -> Config:
    def section(prefix: str) -> dict[str, Any]:
        return {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(prefix + ".")}

    top = {k: v for k, v in values.items() if "." not in k}
    queues = {**Config().priority_queues, **section("priority_queues")}
    return Config(
        database=DatabaseConfig(**section("database")),
        api=ApiConfig(**section("api")),
        priority_queues=queues,
        handlers=handlers,
        retention=RetentionConfig(**section("retention")),
        **top,
    )
