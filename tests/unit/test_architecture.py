"""The layering of the package, read from the source (AST): every ``import`` counts, also
those under ``if TYPE_CHECKING:`` and inside functions.

base (``_compat``, ``webrtc``, ``errors``, ``_tasks``, ``version``)
  -> two wings: the client (room, participants, tracks, media, data, engine, types,
     events, the public ``__init__`` / ``rtc``) and the server (``server/``)
  -> tools on top (``cli``, ``demo``, ``testing``, ``record``).

Also: other libraries' private names appear only under ``_compat/``, and no module in
``src/`` is over 800 lines.
"""

from __future__ import annotations

import ast
import collections
import re
from pathlib import Path

import pytest

import aiolivekit

ROOT = Path(aiolivekit.__file__).resolve().parent
BASE = ("aiolivekit._compat", "aiolivekit.webrtc", "aiolivekit.errors", "aiolivekit._tasks",
        "aiolivekit.version")
CLIENT = ("aiolivekit.room", "aiolivekit.room_events", "aiolivekit.participant",
          "aiolivekit.track", "aiolivekit.track_publication", "aiolivekit.types",
          "aiolivekit.events", "aiolivekit.media", "aiolivekit.data", "aiolivekit.engine",
          "aiolivekit.rtc",
          # the rest of livekit.rtc 1.2.1's surface (issue 15)
          "aiolivekit.types_ext", "aiolivekit.e2ee", "aiolivekit.data_track",
          "aiolivekit.rpc_interceptor", "aiolivekit.compat")
# what the server wing must not import (the list of the client wing)
CLIENT_FOR_SERVER = ("aiolivekit.room", "aiolivekit.room_events", "aiolivekit.participant",
                     "aiolivekit.track", "aiolivekit.track_publication", "aiolivekit.media",
                     "aiolivekit.data", "aiolivekit.engine")
SERVER = ("aiolivekit.server",)
# aiortc's name-mangled attributes, asyncio's selector transport, pylibsrtp's cffi binding,
# aioice's connection state, and class swaps (aioice's public ``remote_nominated`` is fine)
FOREIGN_PRIVATE = re.compile(
    r"_RTC\w+__\w+|_sock_fd|_read_ready|\b_binding\b|(?<!\w)_nominated|(?<!\w)_check_list"
    r"|__class__\s*="
)
MAX_LINES = 800


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _modules() -> dict[str, tuple[Path, list[str]]]:
    out: dict[str, tuple[Path, list[str]]] = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            package = parts
        else:
            package = parts[:-1]
        out[".".join(parts)] = (path, package)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the aiolivekit modules it imports (anywhere in its source)."""
    modules = _modules()
    edges: dict[str, set[str]] = collections.defaultdict(set)
    for name, (path, package) in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                subs = [f"{module}.{a.name}" for a in node.names
                        if f"{module}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [module, *subs]
            elif (isinstance(node, ast.Call) and node.args
                  and isinstance(node.args[0], ast.Constant)
                  and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"):
                targets = [str(node.args[0].value)]
            for target in targets:
                if target in modules and target != name:
                    edges[name].add(target)
    return edges


def _violations(src: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    """Imports from a module of ``src`` (``"aiolivekit"`` stands for the package's
    ``__init__`` alone) to one of ``forbidden``."""
    def in_src(module: str) -> bool:
        return module in src or _in(module, tuple(p for p in src if p != "aiolivekit"))

    return sorted(f"{a} -> {b}" for a, targets in import_graph().items() if in_src(a)
                  for b in targets if _in(b, forbidden))


def test_graph_sees_type_checking_and_lazy_imports() -> None:
    graph = import_graph()
    assert "aiolivekit.track" in graph["aiolivekit.engine.publishing"]  # TYPE_CHECKING
    assert "aiolivekit.media.rtc_local" in graph["aiolivekit.track"]  # inside a method
    assert "aiolivekit.data.manager" in graph["aiolivekit.room"]


def test_client_wing_never_imports_the_server() -> None:
    assert _violations((*CLIENT, "aiolivekit"), SERVER) == []


def test_server_wing_never_imports_the_client() -> None:
    assert _violations(SERVER, CLIENT_FOR_SERVER) == []


def test_base_imports_neither_wing() -> None:
    tools = ("aiolivekit.testing", "aiolivekit.cli", "aiolivekit.demo", "aiolivekit.record")
    assert _violations(BASE, CLIENT + SERVER + tools) == []


def test_client_wing_never_imports_the_recorder() -> None:
    """``record`` is a tool on top of the client (a Room that writes files)."""
    assert _violations((*CLIENT, "aiolivekit"), ("aiolivekit.record", "aiolivekit.cli",
                                                  "aiolivekit.demo")) == []


def test_recorder_stays_off_the_server_wing() -> None:
    assert _violations(("aiolivekit.record",), SERVER) == []


def test_no_import_cycle() -> None:
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    assert cycles == []


def test_foreign_private_names_only_in_compat() -> None:
    found = []
    for name, (path, _package) in sorted(_modules().items()):
        if _in(name, ("aiolivekit._compat",)):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if FOREIGN_PRIVATE.search(code):
                found.append(f"{name}:{number}: {line.strip()}")
    assert found == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_size(name: str) -> None:
    lines = len(_modules()[name][0].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES})"
