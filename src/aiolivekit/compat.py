"""The drop-in switch: ``livekit.rtc`` (and its submodules) resolve to ``aiolivekit.rtc``.

``install()`` puts a finder at the front of ``sys.meta_path``: from then on, in this process,
``import livekit.rtc``, ``from livekit import rtc`` and ``from livekit.rtc.room import Room``
give aiolivekit's modules (the very same module objects as ``aiolivekit.rtc.*``), so code
written for the official SDK (livekit-agents, for one) runs unchanged on aiolivekit. The
official ``livekit`` wheel may be installed beside it: none of its modules is imported and
its native library is never loaded. A submodule aiolivekit does not have (the official
SDK's internals: ``livekit.rtc._ffi_client``, ``livekit.rtc.jupyter``) is not found, as
any missing module.

``AIOLIVEKIT_AS_LIVEKIT_RTC=1`` does the same at interpreter start, through the
``aiolivekit_as_livekit_rtc.pth`` file installed with the package (it calls
:func:`startup_hook`); child processes that inherit the variable (a multiprocessing
forkserver, job processes) get it too. ``livekit.api`` and ``livekit.protocol`` are left
alone: aiolivekit uses them itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from .errors import AioLiveKitError

__all__ = ["ENV_VAR", "CompatInstallError", "install", "installed", "startup_hook", "uninstall"]

logger = logging.getLogger(__name__)

ENV_VAR = "AIOLIVEKIT_AS_LIVEKIT_RTC"
ALIAS = "livekit.rtc"
TARGET = "aiolivekit.rtc"


class CompatInstallError(AioLiveKitError, ImportError):
    """``livekit.rtc`` cannot be switched to aiolivekit (the official one is already loaded)."""


class _AliasLoader(importlib.abc.Loader):
    """Loads ``livekit.rtc.X`` as the already importable ``aiolivekit.rtc.X`` module."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: ``create_module`` returned a module that is already executed."""


class _RtcAliasFinder(importlib.abc.MetaPathFinder):
    """Answers for ``livekit.rtc`` and every ``livekit.rtc.*`` name, before any other finder."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        name = TARGET + fullname[len(ALIAS):]
        try:
            found = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            found = None
        if found is None:
            # not ours: no other finder may answer with the official module instead (it
            # would load the native library), so the import fails as a missing module
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: {ALIAS} is aiolivekit in this process "
                f"(aiolivekit.compat), which has no {name!r}",
                name=fullname,
            )
        is_package = found.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(
            fullname, _AliasLoader(name), origin=found.origin, is_package=is_package
        )


_finder: _RtcAliasFinder | None = None
_hook_ran = False


def _ours(module: ModuleType | None) -> bool:
    name = getattr(module, "__name__", "")
    return name == TARGET or name.startswith(TARGET + ".")


def installed() -> bool:
    """True when ``livekit.rtc`` resolves to aiolivekit in this process."""
    return _finder is not None and _finder in sys.meta_path


def install() -> None:
    """Make ``livekit.rtc`` and its submodules resolve to ``aiolivekit.rtc`` (idempotent).

    Raises :class:`CompatInstallError` when an official ``livekit.rtc`` module is already
    imported in this process: call it (or set ``AIOLIVEKIT_AS_LIVEKIT_RTC=1``) before the
    first ``import livekit.rtc`` (or any import of a library that imports it).
    """
    global _finder
    if installed():
        return
    loaded = sorted(
        name for name, module in list(sys.modules.items())
        if (name == ALIAS or name.startswith(ALIAS + ".")) and not _ours(module)
    )
    if loaded:
        raise CompatInstallError(
            f"aiolivekit.compat.install(): the official {ALIAS} is already imported in this "
            f"process ({', '.join(loaded[:5])}{' ...' if len(loaded) > 5 else ''}); call it "
            f"before anything imports {ALIAS}, or set {ENV_VAR}=1 in the environment"
        )
    _finder = _RtcAliasFinder()
    sys.meta_path.insert(0, _finder)
    logger.debug("%s now resolves to %s", ALIAS, TARGET)


def uninstall() -> None:
    """Undo :func:`install`: remove the finder and the ``livekit.rtc`` entries it made."""
    global _finder
    if _finder is not None and _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    _finder = None
    for name, module in list(sys.modules.items()):
        if (name == ALIAS or name.startswith(ALIAS + ".")) and _ours(module):
            del sys.modules[name]
    parent = sys.modules.get("livekit")
    if parent is not None and _ours(getattr(parent, "rtc", None)):
        delattr(parent, "rtc")


def startup_hook() -> None:
    """Called by the ``.pth`` file at interpreter start: install when ``AIOLIVEKIT_AS_LIVEKIT_RTC``
    is ``1``; nothing when it is unset, empty or ``0``; any other value is reported on stderr
    and ignored. Never raises (a failure is reported on stderr): a broken hook must not stop
    the interpreter."""
    global _hook_ran
    value = os.environ.get(ENV_VAR, "").strip()
    if value in ("", "0") or _hook_ran:
        return
    _hook_ran = True  # site may process a venv's site-packages twice: report once
    if value != "1":
        sys.stderr.write(f"aiolivekit: {ENV_VAR}={value!r} is not 1 or 0: livekit.rtc left alone\n")
        return
    try:
        install()
    except Exception as exc:  # noqa: BLE001  (reported, never fatal at interpreter start)
        sys.stderr.write(f"aiolivekit: {ENV_VAR}=1 could not be honoured: {exc}\n")
