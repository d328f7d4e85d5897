"""Dump the public surface of ``livekit.rtc`` or ``aiolivekit.rtc`` as JSON.

    python scripts/rtc_surface_dump.py livekit.rtc      # with the official SDK's python
    python scripts/rtc_surface_dump.py aiolivekit.rtc   # with ours

The same code runs in both interpreters (it needs nothing but the standard library), so
the two dumps can be compared key by key (tests/unit/test_rtc_surface.py does that;
docs/spec-surface-dump.json is the official dump, committed for review).

For each name of ``__all__``: what it is (class, enum, message, function, alias, module,
value); for a class every public member (and ``__init__`` and the async-iterator and
context-manager dunders) with its kind, ``inspect.signature`` (parameter names, kinds,
defaults as a normalised repr) and whether it is a coroutine / async generator function;
for an enum its names and integer (or string) values; for a protobuf message (or our
dataclass record standing for one) its field names. Then the submodules: which of the
official package's submodules import, and the names each defines.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import json
import pkgutil
import sys
import types
from typing import Any

DUNDERS = ("__init__", "__aiter__", "__anext__", "__aenter__", "__aexit__", "__iter__",
           "__next__", "__call__", "__len__")
# submodules of livekit.rtc that are implementation details (FFI plumbing, notebook display)
PRIVATE_SUBMODULES = ("_ffi_client", "_utils", "jupyter", "resources")


def _default(value: Any) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    if type(value).__name__ == "_HAS_DEFAULT_FACTORY_CLASS":  # a dataclass default_factory
        return "<factory>"
    if isinstance(value, enum.Enum):
        return repr(value.value)
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if isinstance(value, (list, tuple, dict)) and not value:
        return repr(value)
    return f"<{type(value).__name__}>"


def _signature(obj: Any) -> str | None:
    """``(self, a, /, b=1, *args, c=None, **kw)``: names, kinds and normalised defaults."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    parts: list[str] = []
    star = False
    params = list(sig.parameters.values())
    for i, p in enumerate(params):
        kind = p.kind
        if kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if kind is p.VAR_POSITIONAL:
            star = True
            text = "*" + p.name
        elif kind is p.VAR_KEYWORD:
            text = "**" + p.name
        else:
            default = _default(p.default)
            text = p.name if default is None else f"{p.name}={default}"
        parts.append(text)
        last_positional_only = kind is p.POSITIONAL_ONLY and (
            i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY)
        if last_positional_only:
            parts.append("/")
    return "(" + ", ".join(parts) + ")"


def _is_async(func: Any) -> bool:
    func = inspect.unwrap(func)
    return inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)


def _static(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return inspect.getattr_static(cls, name)


def _member(cls: type, name: str) -> dict[str, Any]:
    raw = _static(cls, name)
    if isinstance(raw, property):
        return {"kind": "property", "settable": raw.fset is not None}
    if isinstance(raw, staticmethod):
        return {"kind": "staticmethod", "signature": _signature(raw.__func__),
                "async": _is_async(raw.__func__)}
    if isinstance(raw, classmethod):
        return {"kind": "classmethod", "signature": _signature(getattr(cls, name)),
                "async": _is_async(raw.__func__)}
    if inspect.isfunction(raw):
        return {"kind": "method", "signature": _signature(raw), "async": _is_async(raw)}
    if inspect.isclass(raw):
        return {"kind": "class"}
    if callable(raw):
        return {"kind": "callable"}
    return {"kind": "attribute"}


def _enum_values(obj: Any) -> dict[str, Any] | None:
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        return {m.name: m.value if not isinstance(m.value, int) else int(m.value) for m in obj}
    if type(obj).__name__ == "EnumTypeWrapper":
        return {k: int(v) for k, v in obj.items()}
    return None


def _fields(obj: Any) -> list[str] | None:
    descriptor = getattr(obj, "DESCRIPTOR", None)
    if isinstance(obj, type) and descriptor is not None and hasattr(descriptor, "fields"):
        return [f.name for f in descriptor.fields]
    if isinstance(obj, type) and dataclasses.is_dataclass(obj):
        return [f.name for f in dataclasses.fields(obj)]
    return None


def _base_members(cls: type) -> set[str]:
    """Members every class of this kind has (object, Exception, Enum, int)."""
    common: set[str] = set(dir(object))
    if issubclass(cls, BaseException):
        common |= set(dir(Exception))
    if issubclass(cls, enum.Enum):
        common |= set(dir(enum.Enum)) | set(dir(int)) | set(dir(str))
    return common


def describe(obj: Any) -> dict[str, Any]:
    values = _enum_values(obj)
    if values is not None:
        return {"kind": "enum", "values": values}
    if isinstance(obj, types.ModuleType):
        return {"kind": "module"}
    fields = _fields(obj)
    if fields is not None and hasattr(obj, "DESCRIPTOR"):
        return {"kind": "message", "fields": fields}
    if inspect.isclass(obj):
        base = _base_members(obj)
        names = [n for n in dir(obj)
                 if (not n.startswith("_") or n in DUNDERS)
                 and (n not in base or n in DUNDERS) and hasattr(obj, n)]
        out: dict[str, Any] = {
            "kind": "class",
            "members": {n: _member(obj, n) for n in sorted(names)
                        if n != "__init__" or "__init__" in _declared(obj)},
        }
        if fields is not None:
            out["fields"] = fields
        if issubclass(obj, BaseException):
            out["exception"] = True
        return out
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return {"kind": "function", "signature": _signature(obj), "async": _is_async(obj)}
    if type(obj).__module__ == "typing" or isinstance(obj, types.UnionType):
        return {"kind": "alias"}
    return {"kind": "value", "type": type(obj).__name__}


def _declared(cls: type) -> set[str]:
    out: set[str] = set()
    for klass in cls.__mro__:
        if klass is object or klass.__module__ == "builtins":
            continue
        out |= set(vars(klass))
    return out


def _submodule_names(package: types.ModuleType) -> list[str]:
    out = []
    prefix = package.__name__ + "."
    for info in pkgutil.walk_packages(package.__path__, prefix=prefix):
        name = info.name[len(prefix):]
        top = name.split(".")[0]
        if top in PRIVATE_SUBMODULES or name.endswith("__main__"):
            continue
        out.append(name)
    return sorted(out)


def _defined_names(module: types.ModuleType) -> dict[str, Any]:
    """Public names a submodule defines (classes, functions, enums, constants) or lists
    in its ``__all__`` (how an alias module names what it re-exports)."""
    out: dict[str, Any] = {}
    exported = set(getattr(module, "__all__", ()))
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_"):
            continue
        owner = getattr(obj, "__module__", None)
        if name in exported:
            out[name] = describe(obj)
        elif _enum_values(obj) is not None and type(obj).__name__ == "EnumTypeWrapper":
            out[name] = describe(obj)
        elif owner == module.__name__ and (inspect.isclass(obj) or inspect.isfunction(obj)):
            out[name] = describe(obj)
        elif name.isupper() and isinstance(obj, (int, str, bytes)) and not isinstance(obj, bool):
            out[name] = {"kind": "value", "type": type(obj).__name__}
    return out


def dump(module_name: str) -> dict[str, Any]:
    module = importlib.import_module(module_name)
    names = sorted(module.__all__)
    surface = {n: describe(getattr(module, n)) for n in names}
    submodules: dict[str, Any] = {}
    if hasattr(module, "__path__"):
        for sub in _submodule_names(module):
            try:
                mod = importlib.import_module(f"{module_name}.{sub}")
            except ImportError as exc:
                submodules[sub] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            submodules[sub] = {"names": _defined_names(mod)}
    return {"module": module_name, "version": getattr(module, "__version__", None),
            "all": names, "names": surface, "submodules": submodules}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    json.dump(dump(argv[1]), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
