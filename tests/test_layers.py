"""The layers of the package, as its imports show them: core <- api, workers, client <- command
line; a handler-only `import asynctask` loads neither the client's httpx nor the server side.

And the tests stand apart from the benchmarks: they run a benchmark as a script, never import it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
PACKAGE = TESTS.parent / "asynctask"
# What each layer may import of asynctask (besides itself).
ALLOWED = {
    "asynctask.core": set(),
    "asynctask.service": {"asynctask.core"},
    "asynctask.workers": {"asynctask.core"},
    "asynctask.embedded": {"asynctask.core"},
    "asynctask.client": {"asynctask.core"},
    "asynctask.cli": {
        "asynctask.core",
        "asynctask.service",
        "asynctask.workers",
        "asynctask.embedded",
        "asynctask.client",
    },
}


def _modules() -> list[tuple[str, Path]]:
    found = []
    # os.walk, not rglob: asynctask/service and asynctask/workers are symlinks to follow.
    paths = [Path(root, f) for root, _, files in os.walk(PACKAGE, followlinks=True) for f in files]
    for path in sorted(p for p in paths if p.suffix == ".py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def _imports(path: Path, roots: tuple[str, ...] = ("asynctask", "aiohttp", "httpx")) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in roots}


def _layer(module: str) -> str | None:
    return next(
        (layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")), None
    )


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda value: str(value))
def test_imports_only_run_downwards(module: str, path: Path) -> None:
    layer = _layer(module)
    if layer is None:
        return  # the package's own __init__: the public names, taken from the core
    for imported in _imports(path):
        target = _layer(imported)
        if imported.startswith("aiohttp"):
            assert layer in ("asynctask.service", "asynctask.cli"), f"{module} imports {imported}"
        elif imported.startswith("httpx"):
            assert layer == "asynctask.client", f"{module} imports {imported}"
        elif target is not None and target != layer:
            assert target in ALLOWED[layer], f"{module} ({layer}) imports {imported}"


def test_the_layers_are_all_there() -> None:
    found = {_layer(module) for module, _ in _modules()}
    assert set(ALLOWED) <= found


def test_the_tests_import_nothing_from_the_benchmarks() -> None:
    # A benchmark's internals may change at will: tests run it (tests/processes.py run_bench).
    found = {path.name: _imports(path, ("bench",)) for path in sorted(TESTS.glob("*.py"))}
    assert {name: imported for name, imported in found.items() if imported} == {}


def test_a_handler_only_import_loads_no_client_and_no_server() -> None:
    code = (
        "import sys; from asynctask import Task; import asynctask;"
        "heavy = {'httpx', 'aiohttp', 'aiopg', 'psycopg2', 'yaml', 'asynctask.client',"
        " 'asynctask.service', 'asynctask.workers'};"
        "print(sorted(heavy & set(sys.modules)));"
        "client = asynctask.Client; print(client.__module__, 'httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "asynctask.client.sync True"]
