"""The `asynctask` command: migrate (twice, and into a missing database), bad config, api, stats."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
import yaml

from asynctask.cli import main
from asynctask.cli.main import build_parser, version
from asynctask.cli.start import autovacuum_warning, warn_without_autovacuum
from tests.conftest import ADMIN_DSN, TEST_HANDLERS, make_config
from tests.processes import free_port
from tests.waiting import wait_until

Cursor = psycopg2.extensions.cursor


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() installs its own root handler on the (captured) stderr; put pytest's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _restore_sys_path() -> Iterator[None]:
    """main() puts the working directory and the config file's directory on sys.path."""
    saved = sys.path[:]
    yield
    sys.path[:] = saved


def _write_config(path: Path, url: str, **extra: object) -> Path:
    raw = {"database": {"url": url}, "handlers": TEST_HANDLERS, **extra}
    path.write_text(yaml.safe_dump(raw))
    return path


def _api_command(config: Path, port: int) -> list[str]:
    """`asynctask --config CONFIG api --port PORT`, run from this checkout."""
    return [
        sys.executable,
        "-m",
        "asynctask.cli",
        "--config",
        str(config),
        "api",
        "--port",
        str(port),
    ]


def _schema_fingerprint(sql: Cursor) -> list[tuple[object, ...]]:
    sql.execute(
        "SELECT c.relname, c.relkind, c.reloptions::text, pg_get_indexdef(i.indexrelid)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_index i ON i.indexrelid = c.oid"
        " WHERE n.nspname = 'public' ORDER BY c.relname"
    )
    return list(sql.fetchall())


def test_migrate_twice_succeeds_and_the_second_run_changes_nothing(
    tmp_path: Path, database_url: str, sql: Cursor
) -> None:
    config = _write_config(tmp_path / "config.yaml", database_url)
    assert main(["--config", str(config), "migrate"]) == 0
    sql.execute("INSERT INTO tasks (type) VALUES ('ok')")
    before = _schema_fingerprint(sql)
    assert main(["--config", str(config), "migrate"]) == 0
    assert _schema_fingerprint(sql) == before
    sql.execute("SELECT count(*) FROM tasks")
    assert sql.fetchone() == (1,)


@pytest.fixture
def missing_database() -> Iterator[str]:
    """A URL naming a database that does not exist yet; dropped afterwards."""
    name = f"asynctask_cli_{uuid.uuid4().hex[:12]}"
    yield psycopg2.extensions.make_dsn(ADMIN_DSN, dbname=name)
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def test_migrate_creates_a_missing_database(tmp_path: Path, missing_database: str) -> None:
    config = _write_config(tmp_path / "config.yaml", missing_database)
    assert main(["--config", str(config), "migrate"]) == 0
    conn = psycopg2.connect(missing_database)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.tasks') IS NOT NULL")
        assert cur.fetchone() == (True,)
    conn.close()


def test_a_bad_config_value_exits_2_with_one_line(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_config(tmp_path / "config.yaml", database_url, api={"port": 0})
    assert main(["--config", str(config), "migrate"]) == 2
    err = capsys.readouterr().err
    assert err == "asynctask: api.port: 0 is not allowed (a TCP port from 1 to 65535)\n"


def test_an_invalid_port_is_refused(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_write_config(tmp_path / "config.yaml", database_url))
    assert main(["--config", config, "api", "--port", "70000"]) == 1
    assert "--port: 70000 is not allowed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["--config", config, "api", "--port", "http"])
    assert exited.value.code == 2
    assert "invalid int value: 'http'" in capsys.readouterr().err


# Ctrl-C under `asynctask run` reaches the API twice: the terminal's SIGINT to the process group and
# the supervisor's SIGTERM. The second lands during the graceful shutdown the first began.
@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM,), (signal.SIGINT, signal.SIGTERM)],
    ids=["sigterm", "sigint+sigterm"],
)
def test_api_serves_logs_its_url_and_stops_on_sigterm(
    tmp_path: Path, database_url: str, signals: tuple[signal.Signals, ...]
) -> None:
    config = _write_config(tmp_path / "config.yaml", database_url)
    port = free_port()
    log_path = tmp_path / "api.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            _api_command(config, port),
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, log_path.read_text()
                time.sleep(0.1)
        for n, signum in enumerate(signals):
            time.sleep(0.002 if n else 0)  # the second lands after the first began the shutdown
            process.send_signal(signum)
        assert process.wait(timeout=15) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    logged = log_path.read_text()
    assert "Traceback" not in logged, logged
    assert f"asynctask api on http://127.0.0.1:{port} (docs at /api/docs)" in logged
    # The test server runs with autovacuum = off, as these machines' server does.
    warned = [line for line in logged.splitlines() if "autovacuum = off" in line]
    assert len(warned) == 1 and "WARNING" in warned[0], logged


def test_api_exits_1_when_the_database_is_unreachable(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    config = _write_config(tmp_path / "config.yaml", url)
    result = subprocess.run(
        _api_command(config, free_port()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "is unavailable" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["workers", "run"])
def test_workers_and_run_warn_once_when_the_server_has_autovacuum_off(
    tmp_path: Path, database_url: str, command: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # A handler that cannot be imported stops both commands right after the start-up checks.
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"database": {"url": database_url}, "handlers": {"x": "no_such_mod:f"}})
    )
    assert main(["--config", str(config), command]) == 1
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "autovacuum = off" in warnings[0], err
    assert "handlers.x" in err


def test_the_autovacuum_warning_names_what_is_off() -> None:
    assert autovacuum_warning({"autovacuum": "on", "track_counts": "on"}) is None
    assert autovacuum_warning({}) is None  # unreadable settings: no false alarm
    only = autovacuum_warning({"autovacuum": "off", "track_counts": "on"})
    assert only is not None and "with autovacuum = off:" in only and "bloats" in only
    both = autovacuum_warning({"autovacuum": "off", "track_counts": "off"})
    assert both is not None and "autovacuum = off and track_counts = off" in both
    counts = autovacuum_warning({"autovacuum": "on", "track_counts": "off"})
    assert counts is not None and "with track_counts = off:" in counts


def test_the_autovacuum_check_stays_quiet_when_the_server_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    with caplog.at_level(logging.DEBUG, logger="asynctask"):
        warn_without_autovacuum(make_config(url))
    assert caplog.records == []  # the command itself reports the outage


def _fill(sql: Cursor) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, state, finished_at, scheduled_at) VALUES"
        " ('ok', 1, 'available', NULL, now() - interval '42 seconds'),"
        " ('ok', 1, 'available', NULL, now()),"
        " ('ok', 2, 'completed', now(), now()),"
        " ('ok', 3, 'failed', now(), now()),"
        " ('ok', 3, 'cancelled', now(), now())"
    )


def test_stats_prints_a_table(
    tmp_path: Path, database_url: str, sql: Cursor, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(sql)
    config = _write_config(tmp_path / "config.yaml", database_url)
    assert main(["--config", str(config), "stats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "priority", "scheduled", "available", "running", "retrying", "completed", "failed",
        "cancelled", "lag", "(s)", "workers",
    ]  # fmt: skip
    high, normal, low = (line.split() for line in lines[1:4])
    assert high[:8] == ["high", "0", "2", "0", "0", "0", "0", "0"] and 42 <= float(high[8]) < 60
    assert high[9] == "0"
    assert normal == ["normal", "0", "0", "0", "0", "1", "0", "0", "0.0", "0"]
    assert low == ["low", "0", "0", "0", "0", "0", "1", "1", "0.0", "0"]
    assert lines[4:] == [
        "",
        "last minute: completed 1, failed 1",
        "warning: high tasks are due and no live high worker serves this database; they"
        " wait until one does (priority_queues.high is 0 where workers run?)",
    ]
    assert len({len(line) for line in lines[:4]}) == 1  # the columns line up


def test_stats_counts_live_workers_and_drops_the_warning(
    tmp_path: Path, database_url: str, sql: Cursor, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(sql)
    config = _write_config(tmp_path / "config.yaml", database_url)
    # A worker that beat just now, in the registry every worker writes (workers/beat.py).
    sql.execute(
        "INSERT INTO workers (host, supervisor_pid, slot, priority, pid, locked_by, status)"
        " VALUES ('elsewhere', 1, 'high_1', 1, 2, 'elsewhere:2:high_1', 'idle')"
    )
    assert main(["--config", str(config), "stats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == "high" and lines[1].split()[-1] == "1"
    assert not any(line.startswith("warning") for line in lines)


def test_stats_json_is_the_api_answer(
    tmp_path: Path, database_url: str, sql: Cursor, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(sql)
    config = _write_config(tmp_path / "config.yaml", database_url)
    assert main(["--config", str(config), "stats", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert set(body) >= {
        "counts", "queue_lag_seconds", "last_minute", "workers", "due_without_workers",
        "per_minute", "paused",
    }  # fmt: skip
    assert body["due_without_workers"] == ["high"]
    assert body["counts"]["low"] == {
        "scheduled": 0, "available": 0, "running": 0, "retrying": 0, "completed": 0, "failed": 1,
        "cancelled": 1,
    }  # fmt: skip
    assert body["counts"]["high"]["available"] == 2 and body["queue_lag_seconds"]["high"] >= 42
    assert body["last_minute"] == {"completed": 1, "failed": 1}


def test_stats_exits_1_when_the_database_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    config = _write_config(tmp_path / "config.yaml", url)
    assert main(["--config", str(config), "stats"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "is unavailable" in captured.err


def test_console_script_runs_handlers_from_the_working_directory(
    tmp_path: Path, database_url: str, sql: Cursor
) -> None:
    # A user's handler module lives where they run `asynctask`, not in an installed package.
    (tmp_path / "myhandlers.py").write_text(
        "def go(task):\n    open(f'done-{task.id}', 'w').close()\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database": {"url": database_url},
                "handlers": {"mine": "myhandlers:go"},
                "priority_queues": {"high": 1, "normal": 0, "low": 0},
                "timeout_milliseconds": 100,
            }
        )
    )
    sql.execute("INSERT INTO tasks (type, priority) VALUES ('mine', 1)")
    script = Path(sys.executable).with_name("asynctask")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [str(script), "--config", str(config), "workers"], cwd=tmp_path, env=env
    )
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "done-1").exists():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    sql.execute("SELECT state FROM tasks WHERE id = 1")
    assert sql.fetchone() == ("completed",)


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "handlers-image"


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["migrate", "api", "workers", "run", "stats"])
def test_config_is_accepted_before_or_after_the_command(command: str) -> None:
    parser = build_parser()
    before = parser.parse_args(["--config", "x.yaml", command])
    after = parser.parse_args([command, "--config", "x.yaml"])
    assert before.command == after.command == command
    assert before.config == after.config == Path("x.yaml")
    assert not hasattr(parser.parse_args([command]), "config")  # then the search order applies


def test_config_after_the_command_is_the_file_used(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_config(tmp_path / "config.yaml", database_url, api={"port": 0})
    assert main(["migrate", "--config", str(config)]) == 2
    assert "api.port: 0 is not allowed" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"asynctask {version()}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", version())


def test_help_lists_every_command_and_the_config_search_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, command in _commands().items():
        assert f"{name} {command.description.split()[0]}" in text  # type: ignore[union-attr]
    order = "--config PATH (before or after the command), $ASYNCTASK_CONFIG, ./config.yaml"
    assert order in text and "the default shipped inside the package" in text
    assert "then from the config file's directory" in text


def test_readme_command_table_lists_every_command_and_option() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `asynctask")]
    documented = {re.match(r"\| `asynctask ([^` ]+)", row).group(1): row for row in rows}  # type: ignore[union-attr]
    assert set(documented) == {*_commands(), "--version"}
    for name, command in _commands().items():
        for action in command._actions:
            long = [o for o in action.option_strings if o.startswith("--")]
            if long and long[0] not in ("--help", "--config"):
                assert long[0] in documented[name], (name, long[0])
    assert "before or after the command" in section


def test_handlers_beside_the_config_file_are_found_from_its_parent_folder(
    tmp_path: Path, database_url: str, sql: Cursor
) -> None:
    # README's example application, run as README says: from the folder above myapp/.
    app = shutil.copytree(EXAMPLE, tmp_path / "example")
    sql.execute(
        """INSERT INTO tasks (type, priority, data) VALUES ('greet', 1, '{"name": "Ada"}')"""
    )
    script = Path(sys.executable).with_name("asynctask")
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("ASYNCTASK_")
    }
    env.update(
        DATABASE_URL=database_url,
        ASYNCTASK_PRIORITY_QUEUES_NORMAL="0",
        ASYNCTASK_PRIORITY_QUEUES_LOW="0",
        ASYNCTASK_PRIORITY_QUEUES_HIGH="1",
        ASYNCTASK_TIMEOUT_MILLISECONDS="100",
    )
    log_path = tmp_path / "workers.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(script), "workers", "--config", "myapp/config.yaml"],
            cwd=app,
            env=env,
            stderr=log,
        )
    try:

        def completed() -> bool:
            assert process.poll() is None, log_path.read_text()
            sql.execute("SELECT state FROM tasks WHERE id = 1")
            return sql.fetchone() == ("completed",)

        wait_until(completed, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert "hello, Ada (task 1, attempt 1 of 5)" in log_path.read_text()


@pytest.mark.parametrize("command", ["api", "workers", "run"])
def test_no_handlers_is_refused_at_start(
    command: str, tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"database: {{url: '{database_url}'}}\nhandlers: {{}}\n")
    assert main([command, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("asynctask: handlers: no task type is configured") and err.count("\n") == 1
    )
    assert main(["migrate", "--config", str(config)]) == 0  # a command that needs none runs


@pytest.mark.parametrize(
    "url", ["mysql://app:secret@db/app", "postgresql+psycopg2://app:secret@db/app", "not a url"]
)
def test_a_malformed_database_url_exits_2_with_one_line(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url}
    result = subprocess.run(
        [sys.executable, "-m", "asynctask.cli", "stats"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("asynctask: DATABASE_URL (database.url): ")
    assert result.stderr.count("\n") == 1 and "secret" not in result.stderr


def test_stats_on_a_database_without_the_schema_says_to_migrate(
    tmp_path: Path, missing_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {psycopg2.extensions.parse_dsn(missing_database)['dbname']}")
    admin.close()
    config = _write_config(tmp_path / "config.yaml", missing_database)
    assert main(["stats", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.endswith("has no tasks table; run asynctask migrate\n")
    assert "Traceback" not in captured.err
