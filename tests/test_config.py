"""Config loading: defaults, file, environment, and one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from asynctask.core.config import Config
from asynctask.core.config_loader import _SCALARS, env_name, load_config, parse_config
from asynctask.core.errors import ConfigError


def test_repository_config_yaml_loads_with_the_originals_shape() -> None:
    config = load_config(Path("config.yaml"), environ={})
    assert dict(config.priority_queues) == {"high": 4, "normal": 2, "low": 1}
    assert config.max_attempts == 5
    assert config.timeout_milliseconds == 1000
    assert config.database.url is None
    assert config.api.port == 4000
    assert config.task_types == ("finances", "report")
    assert config.handlers["report"].target == "asynctask.workers.handlers:report"


def test_missing_default_file_falls_back_to_the_packaged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert config.task_types == ("finances", "report")


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(None, environ={"ASYNCTASK_CONFIG": str(tmp_path / "nope.yaml")})


def test_unreadable_yaml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: cannot be read as YAML"):
        load_config(bad, environ={})
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad, environ={})
    bad.write_text("")
    assert load_config(bad, environ={}) == Config()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"priority_queues": {"high": -1}},
            "priority_queues.high: -1 is not allowed (0 or more workers, at most 256)",
        ),
        ({"priority_queues": {"urgent": 1}}, "priority_queues.urgent: unknown key"),
        ({"max_attempts": 0}, "max_attempts: 0 is not allowed"),
        ({"max_attempts": "5"}, "max_attempts: '5' is not allowed"),
        ({"max_attempts": True}, "max_attempts: True is not allowed"),
        ({"timeout_milliseconds": 0}, "timeout_milliseconds: 0 is not allowed"),
        ({"api": {"port": 70000}}, "api.port: 70000 is not allowed (a TCP port"),
        ({"api": "x"}, "api: 'x' is not allowed (a mapping of keys)"),
        ({"api": {"tokens": [1]}}, "api.tokens: [int] is not allowed"),
        ({"retry_backoff": "linear"}, "retry_backoff: 'linear' is not allowed (one of fixed"),
        ({"log_format": "xml"}, "log_format: 'xml' is not allowed"),
        ({"task_timeout_seconds": 0}, "task_timeout_seconds: 0 is not allowed"),
        ({"bogus": 1}, "bogus: unknown key (allowed here:"),
        ({"api": {"tokenz": ["t"]}}, "api.tokenz: unknown key; did you mean tokens? (allowed"),
        ({"handlers": ["report"]}, "handlers: ['report'] is not allowed"),
        ({"handlers": {"report": "no-colon"}}, "handlers.report: 'no-colon' is not allowed"),
        ({"handlers": {"bad type!": "a:b"}}, "handlers.bad type!: 'bad type!' is not allowed"),
        ({"handlers": {"r": {"function": "a:b", "retries": 1}}}, "handlers.r.retries: unknown key"),
        (
            {"handlers": {"r": {"function": "a:b", "timeout_seconds": -1}}},
            "handlers.r.timeout_seconds: -1 is not allowed",
        ),
        ({"database": {"url": ""}}, "database.url: '' is not allowed"),
        (
            {"database": {"prepared_statements": "no"}},
            "database.prepared_statements: 'no' is not allowed (true or false)",
        ),
        ({"retention": {"completed_days": -1}}, "retention.completed_days: -1 is not allowed (day"),
        ({"retention": {"failed_days": "7d"}}, "retention.failed_days: '7d' is not allowed"),
        ({"retention": {"failed_days": True}}, "retention.failed_days: True is not allowed"),
        ({"retention": {"completed_days": 36_501}}, "retention.completed_days: 36501 is not"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(
    raw: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_environment_overrides_the_file() -> None:
    raw = {"api": {"port": 4000}, "database": {"url": "postgresql://file/db"}}
    environ = {
        "DATABASE_URL": "postgresql://env/db",
        "ASYNCTASK_API_PORT": "5000",
        "ASYNCTASK_PRIORITY_QUEUES_HIGH": "8",
        "ASYNCTASK_API_TOKENS": "one, two",
        "ASYNCTASK_LOG_LEVEL": "debug",
        "ASYNCTASK_METRICS_PORT": "",
        "ASYNCTASK_DATABASE_PREPARED_STATEMENTS": "false",
    }
    config = parse_config(raw, environ)
    assert config.database.url == "postgresql://env/db"
    assert config.api.port == 5000
    assert config.priority_queues["high"] == 8
    assert config.api.tokens == ("one", "two")
    assert config.log_level == "DEBUG"
    assert config.metrics_port is None
    assert config.database.prepared_statements is False
    assert parse_config(raw, {}).database.prepared_statements is True


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"ASYNCTASK_API_PORT \(api.port\): 'abc' is not allowed"):
        parse_config({}, {"ASYNCTASK_API_PORT": "abc"})


def test_env_name_maps_dotted_keys() -> None:
    assert env_name("api.port") == "ASYNCTASK_API_PORT"
    assert env_name("timeout_milliseconds") == "ASYNCTASK_TIMEOUT_MILLISECONDS"


def test_per_handler_timeout_overrides_the_global_one() -> None:
    config = parse_config(
        {
            "task_timeout_seconds": 60,
            "handlers": {"slow": {"function": "m:f", "timeout_seconds": 600}, "fast": "m:g"},
        },
        environ={},
    )
    assert config.timeout_for("slow") == 600
    assert config.timeout_for("fast") == 60
    assert config.timeout_for("unknown") == 60


def test_retention_takes_fractions_of_a_day() -> None:
    config = parse_config(
        {"retention": {"completed_days": 0.0035, "failed_days": 0}},
        environ={"ASYNCTASK_RETENTION_FAILED_DAYS": "0.5"},
    )
    assert config.retention.completed_days == 0.0035  # about 5 minutes
    assert config.retention.failed_days == 0.5
    assert parse_config({}, environ={}).retention.completed_days == 7


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.max_attempts = 3  # type: ignore[misc]


def test_a_misspelled_key_lists_every_allowed_key_and_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"priority_queue": {"high": 1}}, environ={})
    message = str(info.value)
    assert message.startswith("priority_queue: unknown key; did you mean priority_queues? (")
    listed = message.split("(allowed here: ", 1)[1].rstrip(")").split(", ")
    top_level = {key.split(".")[0] for key in _SCALARS} | {"handlers", "schedules"}
    assert set(listed) == top_level and listed == sorted(listed)
    assert {"api", "database", "priority_queues", "retention", "handlers"} <= set(listed)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mysql://app:secret@db/app", "the scheme mysql:// is not postgresql:// or postgres://"),
        ("postgresql+psycopg2://app:secret@db/app", "SQLAlchemy's form: drop the +psycopg2"),
        ("not a url", "it is neither a URL nor libpq's key=value settings"),
        ("postgresql://app:secret@db:54x2/app", "port '54x2' is not a TCP port from 1 to 65535"),
        ("postgresql://app:secret@db/app?sslmod=require", 'invalid URI query parameter: "sslmod"'),
        ("host=db password=secret port=0", "port '0' is not a TCP port"),
    ],
)
def test_a_malformed_database_url_is_one_line_naming_the_setting(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({}, {"DATABASE_URL": url})
    message = str(info.value)
    assert message.startswith("DATABASE_URL (database.url): '")
    assert "postgresql://user:password@host:5432/dbname" in message and why in message
    assert "secret" not in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"^database\.url: "):
        parse_config({"database": {"url": url}}, environ={})


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:secret@db:5432/app",
        "postgres://db/app",
        "postgresql:///app?host=/var/run/postgresql",
        "postgresql://db1:5432,db2:5433/app?target_session_attrs=read-write",
        "host=db dbname=app user=app",
    ],
)
def test_a_postgresql_url_or_libpq_settings_are_accepted(url: str) -> None:
    assert parse_config({}, {"DATABASE_URL": url}).database.url == url


def test_tokens_have_roles_and_plain_strings_stay_admin() -> None:
    raw = {"api": {"tokens": ["adm1n", {"token": "v1ew", "role": "read"}, {"token": "b0ss"}]}}
    config = parse_config(raw, environ={})
    assert config.api.tokens == ("adm1n", "v1ew", "b0ss")
    assert config.api.read_tokens == ("v1ew",)
    environ = {"ASYNCTASK_API_TOKENS": "[one, {token: two, role: read}]"}
    assert parse_config({}, environ).api.read_tokens == ("two",)
    assert parse_config({}, {"ASYNCTASK_API_TOKENS": "one,two"}).api.read_tokens == ()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"token": "s3cret", "role": "god"},
            "api.tokens.0.role: 'god' is not allowed (one of admin",
        ),
        ({"tokn": "s3cret"}, "api.tokens.0.token: missing or empty"),
        ({"token": "s3cret", "scope": "x"}, "api.tokens.0.scope: unknown key"),
    ],
)
def test_a_bad_token_entry_is_named_without_its_secret(entry: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"api": {"tokens": [entry]}}, environ={})
    assert message in str(info.value) and "s3cret" not in str(info.value)


def test_a_broken_yaml_token_list_is_named_without_its_secrets() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({}, {"ASYNCTASK_API_TOKENS": "[s3cret, {token: x"})
    message = str(info.value)
    assert (
        message.startswith("ASYNCTASK_API_TOKENS (api.tokens): not a YAML list")
        and "s3cret" not in message
    )
