"""The container recipe, checked without Docker: Dockerfile, docker-compose.yml, .dockerignore.

Docker cannot run on the CI machine; .ci/container-check runs the Dockerfile's install steps and
hadolint. These tests pin down what those cannot see: the compose wiring (services, healthchecks,
start order, DATABASE_URL), the image's contract (stages, user, PID 1, command, healthcheck) and
what the build context keeps out.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "api", "workers")


# --- parsing helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (ENTRYPOINT, CMD, HEALTHCHECK ... CMD)."""
        start = self.args.index("[")
        value = json.loads(self.args[start:])
        assert isinstance(value, list), self
        return value


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by stage (each group starts with its FROM)."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit inside a continued instruction too
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"instruction before the first FROM: {line}"
        stages[-1].append(instruction)
    return stages


def stage_name(stage: list[Instruction]) -> str | None:
    match = re.search(r"\bAS\s+(\S+)$", stage[0].args, re.IGNORECASE)
    return match.group(1) if match else None


def stage_image(stage: list[Instruction]) -> str:
    return stage[0].args.split()[0]


def resolve_image(stages: list[list[Instruction]], stage: list[Instruction]) -> str:
    """The registry image a stage finally builds on, following `FROM <earlier stage>`."""
    names = {stage_name(s): s for s in stages if stage_name(s)}
    image = stage_image(stage)
    while image in names:
        image = stage_image(names[image])
    return image


def instructions(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in stage if i.keyword == keyword]


def resolve_defaults(text: str) -> str:
    """Compose interpolation with no variables set: `${VAR:-default}` -> default."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", text)


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` and `?` stay within one path part, `**` spans any."""
    out = ""
    for token in re.split(r"(\*\*/|\*\*|\*|\?|\[[^\]]*\])", pattern.strip("/")):
        if token == "**/":
            out += "(?:.*/)?"
        elif token == "**":
            out += ".*"
        elif token == "*":
            out += "[^/]*"
        elif token == "?":
            out += "[^/]"
        elif token.startswith("[") and token.endswith("]"):
            out += token
        else:
            out += re.escape(token)
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out: a pattern that matches the path or one of its
    parent directories excludes it, `!pattern` takes it back, the last match wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _ignore_regex(raw[1:] if negate else raw)
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def seconds(duration: str) -> float:
    """A compose duration such as `45s`, `1m30s`."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runtime(stages: list[list[Instruction]]) -> list[Instruction]:
    return stages[-1]


@pytest.fixture(scope="module")
def builder(stages: list[list[Instruction]]) -> list[Instruction]:
    found = [s for s in stages if stage_name(s) == "builder"]
    assert len(found) == 1, "one stage named builder"
    return found[0]


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# --- docker-compose.yml ------------------------------------------------------------------------


def test_compose_has_the_four_services(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "migrate", "api", "workers"}


def test_postgres_is_pinned_with_volume_and_healthcheck(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:\d+(\.\d+)?(-[a-z0-9]+)?", postgres["image"])
    volume, _, target = postgres["volumes"][0].partition(":")
    assert target == "/var/lib/postgresql/data"
    assert volume in compose["volumes"], "a named volume, declared at the top level"
    test = postgres["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "pg_isready"
    assert "-U" in test and test[test.index("-U") + 1] == postgres["environment"]["POSTGRES_USER"]


def test_app_services_share_one_image_built_once(services: dict[str, Any]) -> None:
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, images
    assert all(services[name]["build"] == "." for name in APP_SERVICES)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_database_url_points_at_the_postgres_service(name: str, services: dict[str, Any]) -> None:
    postgres = services["postgres"]["environment"]
    url = urlsplit(resolve_defaults(services[name]["environment"]["DATABASE_URL"]))
    assert url.scheme in ("postgresql", "postgres")
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == resolve_defaults(postgres["POSTGRES_PASSWORD"])
    assert url.path == "/" + postgres["POSTGRES_DB"]


def test_database_url_is_the_same_everywhere(services: dict[str, Any]) -> None:
    urls = {services[name]["environment"]["DATABASE_URL"] for name in APP_SERVICES}
    assert len(urls) == 1, urls
    # The password in the URL follows the server's, also when POSTGRES_PASSWORD is overridden.
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password in urls.pop()


def test_migrate_is_one_shot_after_the_database_is_healthy(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}


@pytest.mark.parametrize("name", ["api", "workers"])
def test_api_and_workers_start_after_a_successful_migrate(
    name: str, services: dict[str, Any]
) -> None:
    service = services[name]
    assert service["command"] == [name]
    assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_api_publishes_port_4000(services: dict[str, Any]) -> None:
    ports = [resolve_defaults(str(p)) for p in services["api"]["ports"]]
    assert any(p.endswith(":4000") and p.split(":")[-2] == "4000" for p in ports), ports
    assert "healthcheck" not in services["api"], "the image's HEALTHCHECK on /health applies"


def test_roles_without_http_disable_the_image_healthcheck(services: dict[str, Any]) -> None:
    assert services["migrate"]["healthcheck"] == {"disable": True}
    # The workers have a check of their own instead of the image's GET /health.
    assert "/health" not in " ".join(services["workers"]["healthcheck"]["test"])


def run_workers_healthcheck(services: dict[str, Any], heartbeat: Path) -> int:
    """Run the workers' compose healthcheck against a heartbeat file; its exit status."""
    workers = services["workers"]
    command = workers["healthcheck"]["test"]
    assert command[:2] == ["CMD", "python"]
    # The file the supervisor touches is the one the check reads, named once in compose.
    assert workers["environment"]["ASYNCTASK_HEARTBEAT_FILE"].startswith("/tmp/")
    env = {**os.environ, "ASYNCTASK_HEARTBEAT_FILE": str(heartbeat)}
    result = subprocess.run(
        [sys.executable, *command[2:]], env=env, capture_output=True, timeout=30, check=False
    )
    return result.returncode


def test_workers_healthcheck_passes_on_a_fresh_heartbeat_only(
    services: dict[str, Any], tmp_path: Path
) -> None:
    heartbeat = tmp_path / "asynctask-supervisor.alive"
    assert run_workers_healthcheck(services, heartbeat) != 0  # no supervisor (yet, or any more)
    heartbeat.touch()
    assert run_workers_healthcheck(services, heartbeat) == 0
    stale = heartbeat.stat().st_mtime - 31
    os.utime(heartbeat, (stale, stale))
    assert run_workers_healthcheck(services, heartbeat) != 0
    check = services["workers"]["healthcheck"]
    assert seconds(check["interval"]) * check["retries"] >= 30  # no flapping on one slow beat
    # Every other setting of the workers (the database, logging) stays the shared one.
    api = services["api"]["environment"]
    shared = {k: v for k, v in api.items() if not k.startswith("ASYNCTASK_API_")}
    assert {k: v for k, v in services["workers"]["environment"].items() if k in shared} == shared


def test_env_example_lists_every_variable_compose_reads() -> None:
    compose_text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    read = dict(re.findall(r"\$\{(\w+):-([^}]*)\}", compose_text))
    # Passed through when set in the shell or .env, left out when not: shown commented out.
    passed = set(re.findall(r"^\s+(ASYNCTASK_\w+):\s*(?:#.*)?$", compose_text, re.M))
    example, commented = {}, set()
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            example[name] = value
        elif re.match(r"# ASYNCTASK_\w+=", line):
            commented.add(line[2:].partition("=")[0])
    assert set(example) == set(read)
    assert passed and commented == passed
    # Copied as it is, it keeps compose's defaults, except the password, which is to be changed.
    assert {k: v for k, v in example.items() if k != "POSTGRES_PASSWORD"} == {
        k: v for k, v in read.items() if k != "POSTGRES_PASSWORD"
    }
    assert example["POSTGRES_PASSWORD"] != read["POSTGRES_PASSWORD"]


def test_git_ignores_virtualenvs_and_env_files_but_not_the_example() -> None:
    patterns = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".venv/" in patterns and ".env" in patterns
    assert not any(p in (".env*", ".env.*", "*.example") for p in patterns)


def test_workers_can_scale_out(services: dict[str, Any]) -> None:
    # `docker compose up --scale workers=3` fails on a fixed container name or host port.
    workers = services["workers"]
    assert "container_name" not in workers
    assert "ports" not in workers


def test_workers_get_time_to_finish_their_tasks(services: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    grace = seconds(services["workers"]["stop_grace_period"])
    assert grace > config["shutdown_timeout_seconds"]


# --- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_builds_wheels_then_installs_them(
    stages: list[list[Instruction]], builder: list[Instruction], runtime: list[Instruction]
) -> None:
    assert len(stages) >= 2 and runtime is not builder
    assert any("pip wheel" in i.args for i in instructions(builder, "RUN"))
    runs = [i.args for i in instructions(runtime, "RUN")]
    installs = [args for args in runs if re.search(r"\bpip\b.* install\b", args)]
    assert len(installs) == 1
    assert "from=builder" in installs[0] and "--no-index" in installs[0]


def test_image_is_an_official_slim_python_pinned_by_tag(
    stages: list[list[Instruction]], runtime: list[Instruction]
) -> None:
    image = resolve_image(stages, runtime)
    assert re.fullmatch(r"python:3\.1[1-9](\.\d+)?-slim(-[a-z]+)?", image), image


def test_runtime_stage_has_no_compilers(runtime: list[Instruction]) -> None:
    runs = " ".join(i.args for i in instructions(runtime, "RUN"))
    for compiler in ("build-essential", "gcc", "g++", "libpq-dev", "python3-dev"):
        assert compiler not in runs.split(), compiler


def test_builder_copies_every_file_the_package_build_reads(builder: list[Instruction]) -> None:
    copied = {
        word.rstrip("/") for i in instructions(builder, "COPY") for word in i.args.split()[:-1]
    }
    assert {"setup.py", "pyproject.toml", "README.md", "service", "workers"} <= copied
    # The package's data files are symlinks to top-level files: their targets must come along.
    for link in (ROOT / "service").iterdir():
        if link.is_symlink():
            target = link.resolve().relative_to(ROOT)
            assert str(target) in copied, f"{link.name} -> {target} is not copied"


def test_runs_as_a_non_root_user(runtime: list[Instruction]) -> None:
    users = instructions(runtime, "USER")
    assert users, "a USER in the runtime stage"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    created = " ".join(i.args for i in instructions(runtime, "RUN") if "useradd" in i.args)
    assert re.search(rf"(--uid|-u)\s+{re.escape(user)}\b", created) or user in created.split()


def test_tini_is_pid_1_and_api_the_default_command(runtime: list[Instruction]) -> None:
    runs = " ".join(i.args for i in instructions(runtime, "RUN"))
    assert re.search(r"apt-get install .*\btini\b", runs)
    assert instructions(runtime, "ENTRYPOINT")[-1].exec_form() == ["tini", "--", "asynctask"]
    assert instructions(runtime, "CMD")[-1].exec_form() == ["api"]


def test_api_listens_on_all_interfaces_on_port_4000(runtime: list[Instruction]) -> None:
    env = " ".join(i.args for i in instructions(runtime, "ENV"))
    assert re.search(r"\bASYNCTASK_API_HOST=0\.0\.0\.0\b", env)
    assert [i.args for i in instructions(runtime, "EXPOSE")] == ["4000"]


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_healthcheck(runtime: list[Instruction], port: int) -> int:
    """Run the image's HEALTHCHECK command against 127.0.0.1:`port`; its exit status."""
    (healthcheck,) = instructions(runtime, "HEALTHCHECK")
    command = healthcheck.exec_form()
    assert command[0] == "python" and "/health" in " ".join(command)
    env = {**os.environ, "ASYNCTASK_API_PORT": str(port)}
    result = subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    return result.returncode


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_probes_health(
    runtime: list[Instruction], health_server: HTTPServer, status: int, healthy: bool
) -> None:
    _Health.status = status
    code = run_healthcheck(runtime, health_server.server_address[1])
    assert (code == 0) is healthy


def test_healthcheck_fails_when_nothing_listens(runtime: list[Instruction]) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    server.server_close()  # a port that was just free: nothing listens there now
    assert run_healthcheck(runtime, port) != 0


# --- .dockerignore -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "tests",
        "tests/test_deploy.py",
        "bench",
        ".git",
        ".asynctask",
        ".asynctask/pgdata/PG_VERSION",
        "service/__pycache__/db.cpython-311.pyc",
        ".pytest_cache",
        ".venv",
        "asynctask.egg-info",
        ".env",
        "deploy/kubernetes/api.yaml",
    ],
)
def test_dockerignore_keeps_out(path: str, ignore_patterns: list[str]) -> None:
    assert dockerignored(path, ignore_patterns)


def test_dockerignore_keeps_what_the_builder_copies(
    builder: list[Instruction], ignore_patterns: list[str]
) -> None:
    copied = [w.rstrip("/") for i in instructions(builder, "COPY") for w in i.args.split()[:-1]]
    assert copied
    for path in copied:
        assert not dockerignored(path, ignore_patterns), path
    for path in ("service/app.py", "asynctask/core/queries.sql", "workers/handlers.py"):
        assert not dockerignored(path, ignore_patterns), path


def test_readme_shows_the_derived_image_that_container_check_builds() -> None:
    # README's three lines are the file .ci/container-check emulates, word for word.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```dockerfile\n(.*?)```", readme, re.S)
    recipe = ROOT / "deploy" / "handlers-image" / "Dockerfile"
    assert blocks == [recipe.read_text(encoding="utf-8")]
    lines = recipe.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and lines[0].startswith("FROM asynctask:")
    image_version = re.search(r'version="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)  # type: ignore[union-attr]
    assert lines[0] == f"FROM asynctask:{image_version}"
    assert "derived image" in (ROOT / ".ci" / "container-check").read_text(encoding="utf-8")
