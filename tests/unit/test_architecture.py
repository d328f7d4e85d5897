"""The house rules of docs/architecture.md, checked on the source tree.

* The shared base (``webrtc``, ``_compat`` and the small shared modules) imports neither wing.
* The client wing never imports the server wing, and the server wing never the client wing.
* No import cycle between modules, ``TYPE_CHECKING`` imports included.
* Other libraries' private names appear only under ``_compat/``.
* No module over 800 lines.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "aiolivekit"

BASE = ("webrtc", "_compat", "errors", "events", "_tasks", "version", "_deferred_imports")
SERVER = ("server",)
# modules that may use both wings: the command line, the demo and the test helpers
BOTH = ("cli", "demo", "testing", "__main__")

FOREIGN_PRIVATE = re.compile(
    r"_RTC\w+__\w+|_sock_fd|_read_ready|\b_binding\b|(?<!\w)_nominated|(?<!\w)_check_list|__class__\s*="
)
MAX_LINES = 800


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every aiolivekit module ``name`` imports (anywhere in the file, TYPE_CHECKING too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # "from . import x" names a submodule when one exists
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target.startswith("aiolivekit"):
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                if target in known and target != name:
                    yield target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: set(_imports(name, path, known)) for name, path in modules.items()}


def _wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "rtc":
        return "api"  # the package and its `rtc` alias: the public API over the client wing
    top = parts[1]
    if top in BASE:
        return "base"
    if top in SERVER:
        return "server"
    if top in BOTH:
        return "both"
    return "client"


def test_base_imports_no_wing_and_wings_do_not_import_each_other() -> None:
    allowed = {
        "base": {"base"},
        "client": {"base", "client"},
        "api": {"base", "client", "api"},
        "server": {"base", "server"},
        "both": {"base", "client", "api", "server", "both"},
    }
    wrong = sorted(
        f"{src} ({_wing(src)}) -> {dst} ({_wing(dst)})"
        for src, targets in _graph().items()
        for dst in targets
        if _wing(dst) not in allowed[_wing(src)]
    )
    assert wrong == []


def test_no_import_cycle() -> None:
    graph = _graph()
    # the package's own __init__ re-exports lazily (PEP 562): it is the public API, so an
    # import of "aiolivekit" from inside the package is an edge into the API, not a cycle
    # we can break; the rule above forbids it outside "both"
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_foreign_private_names_only_in_compat() -> None:
    found = []
    for name, path in _modules().items():
        if name.startswith("aiolivekit._compat"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if FOREIGN_PRIVATE.search(code):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert found == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_size(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES})"
