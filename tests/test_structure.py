"""The house's rules, read from the code itself: imports flow one way (docs/architecture.md), no
circles, one door to Redis, a pure core, and rooms small enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = ("townhall.py", "agent_worker.py", "scaler.py")
MAX_LINES = 500

# What each room may import from the project (besides itself). Entry points may import anything.
ALLOWED = {
    "tinytown.core": set(),
    "tinytown.config": {"tinytown.core"},
    "tinytown.connection": {"tinytown.core", "tinytown.config"},
    "tinytown.store": {"tinytown.core", "tinytown.config", "tinytown.connection"},
    "tinytown.recovery": {"tinytown.core", "tinytown.config", "tinytown.store"},
    "tinytown.keeper": {"tinytown.core", "tinytown.config", "tinytown.store", "tinytown.recovery"},
    "tinytown.worker": {"tinytown.core", "tinytown.config", "tinytown.store", "tinytown.recovery"},
    "tinytown.missions": {
        "tinytown.core",
        "tinytown.config",
        "tinytown.store",
        "tinytown.recovery",
    },
    "tinytown.ops": {
        "tinytown.core",
        "tinytown.config",
        "tinytown.connection",
        "tinytown.store",
        "tinytown.recovery",
        "tinytown.missions",
    },
    "tinytown.mcp": {
        "tinytown.core",
        "tinytown.config",
        "tinytown.connection",
        "tinytown.store",
        "tinytown.ops",
    },
    "tinytown.a2a": {"tinytown.core", "tinytown.store", "tinytown.ops"},
    "tinytown.api": {
        "tinytown.a2a",
        "tinytown.ops",
        "tinytown.mcp",
        "tinytown.core",
        "tinytown.config",
        "tinytown.connection",
        "tinytown.store",
        "tinytown.recovery",
        "tinytown.keeper",
        "tinytown.missions",
        "tinytown.notify",
        "tinytown.sampler",
    },
    "tinytown.cli": {
        "tinytown.ops",
        "tinytown.mcp",
        "tinytown.core",
        "tinytown.config",
        "tinytown.connection",
        "tinytown.store",
        "tinytown.recovery",
        "tinytown.missions",
        "tinytown.notify",
    },
    "tinytown.gunicorn_conf": {
        "tinytown.core",
        "tinytown.config",
        "tinytown.connection",
        "tinytown.api",
    },
    "tinytown.scaler": {"tinytown.core"},
    "tinytown.notify": {"tinytown.core", "tinytown.config", "tinytown.store"},
    "tinytown.sampler": {"tinytown.core", "tinytown.config", "tinytown.store"},
}
# Third-party and standard modules a room must never import.
FORBIDDEN = {
    "tinytown.core": {
        "redis",
        "flask",
        "werkzeug",
        "gunicorn",
        "subprocess",
        "socket",
        "requests",
        "docker",
    },
    "tinytown.scaler": {"redis", "flask", "werkzeug", "gunicorn"},
    "tinytown.ops": {"flask", "werkzeug", "gunicorn"},
    "tinytown.mcp": {"flask", "werkzeug", "gunicorn"},
    "tinytown.a2a": {"flask", "werkzeug", "gunicorn"},
    "tinytown.store": {"flask", "werkzeug", "gunicorn"},
}
# Only these rooms talk to Redis; anywhere else these attributes mean a Redis command or client.
REDIS_ROOMS = ("tinytown.store", "tinytown.connection")
REDIS_ATTRIBUTES = {
    "redis",
    "pipeline",
    "register_script",
    "pubsub",
    "execute_command",
    "client_unblock",
    "connection_pool",
    "Redis",
    "StrictRedis",
    "ConnectionPool",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_files() -> list[Path]:
    return sorted((ROOT / "tinytown").rglob("*.py")) + [ROOT / p for p in ENTRY_POINTS]


def room_of(module: str) -> str:
    for room in sorted(ALLOWED, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    return module


def imports_of(path: Path) -> set[str]:
    """Every module this file imports, at any depth of the file (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


MODULES = {module_name(p): p for p in product_files()}


def project_imports(path: Path) -> set[str]:
    return {m for m in imports_of(path) if m in MODULES}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if room_of(m) in ALLOWED))
def test_imports_flow_one_way(module):
    room = room_of(module)
    wrong = {
        m
        for m in project_imports(MODULES[module])
        if m != "tinytown" and room_of(m) != room and room_of(m) not in ALLOWED[room]
    }
    assert wrong == set(), f"{module} ({room}) may import only {sorted(ALLOWED[room])}"


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_keep_out_what_they_must_not_import(room):
    for module, path in MODULES.items():
        if room_of(module) == room:
            roots = {m.split(".")[0] for m in imports_of(path)}
            assert roots & FORBIDDEN[room] == set(), module


def test_there_is_no_import_circle():
    graph = {m: project_imports(p) - {m} for m, p in MODULES.items()}
    # a package's __init__ importing its own modules is its face, not a circle
    for m in graph:
        graph[m] = {
            d for d in graph[m] if not (MODULES[m].name == "__init__.py" and d.startswith(m + "."))
        }
    seen, stack, circles = set(), [], []

    def visit(node):
        if node in stack:
            circles.append(stack[stack.index(node) :] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for dep in sorted(graph[node]):
            visit(dep)
        stack.pop()

    for module in sorted(graph):
        visit(module)
    assert circles == []


def test_only_the_store_and_the_connection_set_up_speak_to_redis():
    offenders = []
    for module, path in MODULES.items():
        if room_of(module) in REDIS_ROOMS or module.startswith(REDIS_ROOMS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in REDIS_ATTRIBUTES:
                offenders.append(f"{module}:{node.lineno} .{node.attr}")
    assert offenders == []


def test_no_product_file_is_longer_than_it_can_be_read():
    long = {
        str(p.relative_to(ROOT)): n
        for p in product_files()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_core_imports_nothing_with_input_or_output_in_a_fresh_interpreter():
    import subprocess
    import sys

    code = (
        "import sys, importlib, pkgutil, tinytown.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('tinytown.core.' + m.name)\n"
        "print(sorted(m for m in ('redis', 'flask', 'werkzeug', 'subprocess', 'socket', 'requests', 'docker')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
