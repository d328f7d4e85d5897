"""Import aiortc without loading PyAV (and aioice's mDNS/dnspython) until they are used.

``import aiortc`` imports every codec module, and those import PyAV (FFmpeg, ~20 MiB of
resident memory) and aioice's mDNS support imports dnspython (~8 MiB). A participant
that only joins a room and exchanges data never touches either. While the ``aiortc``
package executes for the first time, :class:`_DeferringFinder` hands out placeholder
modules for those names: an attribute imported from a placeholder (``from av import
AudioFrame``) is a :class:`_LazyAttribute` that imports the real module on first use,
and a placeholder module used after the import (``av.FFmpegError``) forwards to the real
module. The first time a placeholder resolves, every placeholder left in the modules
of aiortc and aioice is swapped for the real object, so nothing stays indirect.

Installed by ``import aiolivekit``; a no-op when aiortc or PyAV is already imported.
Set ``AIOLIVEKIT_EAGER_IMPORTS=1`` to turn it off.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["DEFERRED_MODULES", "install", "resolve"]

logger = logging.getLogger(__name__)

#: module names (and their submodules) that are deferred while aiortc is imported
DEFERRED_MODULES: tuple[str, ...] = ("av", "aioice.mdns")
#: packages whose module globals may hold placeholders
_PATCHED_PACKAGES: tuple[str, ...] = ("aiortc", "aioice")

_UNRESOLVED = object()
_lock = threading.RLock()
_state = {"window": False, "installed": False}
_resolved: set[str] = set()


def _root_of(fullname: str) -> str | None:
    """The entry of :data:`DEFERRED_MODULES` that ``fullname`` belongs to."""
    for name in DEFERRED_MODULES:
        if fullname == name or fullname.startswith(name + "."):
            return name
    return None


def _is_deferred_name(fullname: str) -> bool:
    return _root_of(fullname) is not None


class _LazyAttribute:
    """Stands for ``<module>.<name>`` until first use, then behaves as that object."""

    __slots__ = ("_lk_module", "_lk_name", "_lk_target")

    def __init__(self, module: str, name: str) -> None:
        self._lk_module = module
        self._lk_name = name
        self._lk_target: Any = _UNRESOLVED

    def _lk_resolve(self) -> Any:
        target = self._lk_target
        if target is _UNRESOLVED:
            target = getattr(importlib.import_module(self._lk_module), self._lk_name)
            self._lk_target = target
            resolve(self._lk_module)
        return target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._lk_resolve()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_lk_") or _state["window"]:
            # typing introspects annotations at import time: never load from there
            raise AttributeError(name)
        return getattr(self._lk_resolve(), name)

    def __instancecheck__(self, obj: object) -> bool:
        return isinstance(obj, self._lk_resolve())

    def __subclasscheck__(self, cls: type) -> bool:
        return issubclass(cls, self._lk_resolve())

    def __or__(self, other: Any) -> Any:
        return self._lk_resolve() | other

    def __ror__(self, other: Any) -> Any:
        return other | self._lk_resolve()

    def __repr__(self) -> str:
        return f"<deferred {self._lk_module}.{self._lk_name}>"


class _PlaceholderModule(types.ModuleType):
    """A deferred module: lazy attributes during aiortc's import, the real ones after."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        if _state["window"]:
            return _LazyAttribute(self.__name__, name)
        light = _LIGHT_ATTRIBUTES.get((self.__name__, name))
        if light is not None:
            return light
        real = importlib.import_module(self.__name__)
        resolve(self.__name__)
        return getattr(real, name)


def _is_mdns_hostname(name: str) -> bool:
    """aioice asks this of every remote candidate: only an ``x.local`` name needs dnspython."""
    if not name.endswith(".local"):
        return False
    real: bool = importlib.import_module("aioice.mdns").is_mdns_hostname(name)
    resolve("aioice.mdns")
    return real


#: attributes a placeholder answers without loading its module (checked before loading)
_LIGHT_ATTRIBUTES: dict[tuple[str, str], Any] = {
    ("aioice.mdns", "is_mdns_hostname"): _is_mdns_hostname,
}


class _PlaceholderLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _PlaceholderModule(spec.name)  # a package, so ``av.frame`` gets one too

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _PlaceholderFinder(importlib.abc.MetaPathFinder):
    """Active only inside the import window: deferred names get placeholders."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not _state["window"] or not _is_deferred_name(fullname):
            return None
        return importlib.machinery.ModuleSpec(fullname, _PlaceholderLoader(), is_package=True)


class _WrappingLoader(importlib.abc.Loader):
    """Runs a module's own loader differently once, then hands the module back to it."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._inner.create_module(spec)

    def _restore(self, module: types.ModuleType) -> None:
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        module.__loader__ = self._inner


class _WindowLoader(_WrappingLoader):
    """Wraps aiortc's own loader: runs it with the placeholders active."""

    def exec_module(self, module: types.ModuleType) -> None:
        with _placeholders():
            self._inner.exec_module(module)
        self._restore(module)


class _DeferringFinder(importlib.abc.MetaPathFinder):
    """Intercepts the first ``import aiortc`` and runs it inside the window."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "livekit.protocol":
            spec = self._inner_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _LazyPackageLoader(spec.loader)
            return spec
        if fullname != "aiortc" or _state["window"] or "av" in sys.modules:
            return None
        spec = self._inner_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _WindowLoader(spec.loader)
        return spec

    def _inner_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None
    ) -> importlib.machinery.ModuleSpec | None:
        spec = None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, _PlaceholderFinder):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        return spec


class _LazyPackageLoader(_WrappingLoader):
    """``livekit.protocol`` without its ``__init__``: submodules load on first access.

    The package's ``__init__`` imports every generated module (agents, egress, SIP, ...),
    ~2 MiB of descriptors a client never uses; attribute access imports them on demand,
    so ``livekit.protocol.egress`` and ``from livekit.protocol import egress`` still work.
    """

    def exec_module(self, module: types.ModuleType) -> None:
        package = module.__name__

        def __getattr__(name: str) -> Any:
            if name.startswith("__") and name != "__version__":
                raise AttributeError(name)
            try:
                submodule = importlib.import_module(f"{package}.{'version' if name == '__version__' else name}")
            except ModuleNotFoundError as exc:
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from exc
            return submodule.__version__ if name == "__version__" else submodule

        setattr(module, "__getattr__", __getattr__)  # noqa: B010 - PEP 562 hook
        self._restore(module)


_placeholder_finder = _PlaceholderFinder()


@contextmanager
def _placeholders() -> Iterator[None]:
    with _lock:
        if any(_is_deferred_name(name) for name in sys.modules):
            # somebody imported PyAV / aioice.mdns already: nothing to defer
            yield
            return
        _state["window"] = True
        sys.meta_path.insert(0, _placeholder_finder)
        try:
            yield
        finally:
            _state["window"] = False
            try:
                sys.meta_path.remove(_placeholder_finder)
            except ValueError:
                pass
            for name in [n for n, m in sys.modules.items() if isinstance(m, _PlaceholderModule)]:
                del sys.modules[name]
            logger.debug("aiortc imported with %s deferred", ", ".join(DEFERRED_MODULES))


def resolve(name: str) -> None:
    """Load the deferred module ``name`` (or a submodule's root) and swap its placeholders."""
    root = _root_of(name)
    with _lock:
        if root is None or root in _resolved or _state["window"]:
            return
        _resolved.add(root)
        for module_name, module in list(sys.modules.items()):
            if module is None or not module_name.startswith(_PATCHED_PACKAGES):
                continue
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for key, value in list(namespace.items()):
                if isinstance(value, _LazyAttribute) and _root_of(value._lk_module) == root:
                    namespace[key] = value._lk_resolve()
                elif isinstance(value, _PlaceholderModule) and _root_of(value.__name__) == root:
                    namespace[key] = importlib.import_module(value.__name__)


def install() -> None:
    """Defer PyAV and dnspython inside the first ``import aiortc`` (idempotent)."""
    if _state["installed"] or os.environ.get("AIOLIVEKIT_EAGER_IMPORTS"):
        return
    _state["installed"] = True
    if "aiortc" in sys.modules or "av" in sys.modules:
        _resolved.update(DEFERRED_MODULES)
        return
    sys.meta_path.insert(0, _DeferringFinder())
