"""The installed package: one import name, `asynctask`, and no clash with a project's own
`service` and `workers` packages (issue 15's scenario, with the wheel in a fresh venv).

The wheel is built once for the module. The fresh venv gets only that wheel; its dependencies
come from this test run's own site-packages through a path line in a .pth file (a path line adds
the directory only: the editable install's finder there is not run), so nothing is downloaded
and only the wheel's copy of asynctask can be imported.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2.extensions
import pytest
import yaml

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", "__pycache__", "*.egg-info", "build", "dist", ".asynctask", ".*_cache", ".coverage*"
)
HANDLERS = """\
from service.foo import VALUE
from workers.bar import OTHER


def report(task):
    with open(f"done-{task.id}", "w") as out:
        out.write(f"{VALUE} {OTHER} {task.data['n']}")
"""


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    script: Path


def _run(*command: str | Path, **kwargs: object) -> str:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
    return str(done.stdout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The wheel, built once from a copy of the source tree, installed alone into a fresh venv."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_NOT_SOURCE)
    pip = (sys.executable, "-m", "pip")
    _run(*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", base / "dist", source)
    (wheel,) = (base / "dist").glob("asynctask-*.whl")
    venv = base / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(*pip, "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
    purelib = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )
    (purelib / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    yield Installed(wheel, python, venv / "bin" / "asynctask")


def test_the_wheel_adds_one_top_level_name(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert wheel.read(top_level).decode().split() == ["asynctask"]
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        paths = [line.split(",")[0] for line in wheel.read(record).decode().splitlines()]
    tops = {path.split("/")[0] for path in paths if ".dist-info/" not in path}
    assert tops == {"asynctask"}
    # The API and the workers are in the wheel, as real files under the package.
    assert "asynctask/service/app.py" in paths and "asynctask/workers/worker.py" in paths
    assert "asynctask/client/py.typed" not in paths and "asynctask/py.typed" in paths


def test_the_installed_copy_is_the_one_imported(installed: Installed, tmp_path: Path) -> None:
    code = "import asynctask.service.app, asynctask.workers.worker; print(asynctask.__file__)"
    location = _run(installed.python, "-c", code, cwd=tmp_path).strip()
    assert location.startswith(str(installed.python.parent.parent))


def test_a_project_with_its_own_service_and_workers_packages_runs_its_handler(
    installed: Installed, tmp_path: Path, database_url: str, sql: psycopg2.extensions.cursor
) -> None:
    project = tmp_path / "project"
    for package, module, text in (
        ("service", "foo", "VALUE = 'mine'"),
        ("workers", "bar", "OTHER = 'too'"),
    ):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("")
        (project / package / f"{module}.py").write_text(text + "\n")
    (project / "myhandlers.py").write_text(HANDLERS)
    (project / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "database": {"url": database_url},
                "handlers": {"report": "myhandlers:report"},
                "priority_queues": {"high": 1, "normal": 0, "low": 0},
                "timeout_milliseconds": 200,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASYNCTASK_", "PYTHON"))}
    env.pop("DATABASE_URL", None)
    log = (tmp_path / "workers.log").open("w")
    process = subprocess.Popen(
        [installed.script, "workers"], cwd=project, env=env, stdout=log, stderr=log
    )
    try:
        sql.execute("INSERT INTO tasks (type, priority, data) VALUES ('report', 1, '{\"n\": 7}')")
        done = wait_until(lambda: list(project.glob("done-*")) or process.poll() is not None)
        assert process.poll() is None, (tmp_path / "workers.log").read_text()
        assert done[0].read_text() == "mine too 7"
        sql.execute("SELECT state FROM tasks")
        wait_until(
            lambda: sql.execute("SELECT state FROM tasks") or sql.fetchone() == ("completed",)
        )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        log.close()
