"""The scaler talks to the town only over HTTP: ``tinytown.scaler`` (and ``scaler.py``, its front
door) import the standard library, ``requests`` (and its ``urllib3``), ``docker`` and ``tinytown.core`` — never Redis,
Flask or the rest of ``tinytown`` — and its modules import each other without a circle.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import tinytown.scaler

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tinytown" / "scaler"
SERVER_SIDE = ("redis", "flask", "werkzeug", "gunicorn")
THIRD_PARTY_ALLOWED = ("requests", "urllib3", "docker")  # (urllib3: requests' transport)
TINYTOWN_ALLOWED = ("tinytown.core", "tinytown.scaler")
MAX_LINES = 400  # one idea per file (STYLE.md)


def scaler_modules() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(tinytown.scaler.__path__, "tinytown.scaler.")
    )


def imported_names(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_importing_the_scaler_loads_no_redis_flask_or_server_code():
    code = (
        "import importlib, json, sys\n"
        f"for name in {scaler_modules()!r} + ['scaler']:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert {m.split(".")[0] for m in loaded} & set(SERVER_SIDE) == set()
    tinytown = {m for m in loaded if m.startswith("tinytown.")}
    assert {m for m in tinytown if not m.startswith(TINYTOWN_ALLOWED)} == set()


def test_every_scaler_file_imports_only_the_standard_library_requests_docker_and_the_core():
    for path in [*PACKAGE.glob("*.py"), ROOT / "scaler.py"]:
        for name in imported_names(path):
            top = name.split(".")[0]
            allowed = (
                top in sys.stdlib_module_names
                or top in THIRD_PARTY_ALLOWED
                or name.startswith(TINYTOWN_ALLOWED)
                or (top == "tinytown" and name in ("tinytown", *TINYTOWN_ALLOWED))
            )
            assert allowed, f"{path.relative_to(ROOT)} imports {name}"


def test_the_scaler_modules_import_each_other_without_a_circle():
    graph = {
        module: {
            n
            for n in imported_names(PACKAGE / (module.rsplit(".", 1)[1] + ".py"))
            if n in scaler_modules()
        }
        for module in scaler_modules()
    }
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import circle: " + " -> ".join((*path, module))
        if module not in done:
            for imported in graph[module]:
                visit(imported, (*path, module))
            done.add(module)

    for module in graph:
        visit(module, ())


def test_no_scaler_file_reaches_400_lines_and_the_front_door_stays_a_few():
    long = {
        p.name: n
        for p in PACKAGE.glob("*.py")
        if (n := len(p.read_text().splitlines())) >= MAX_LINES
    }
    assert long == {}
    assert len((ROOT / "scaler.py").read_text().splitlines()) < 20  # a front door
