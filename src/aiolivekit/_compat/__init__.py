"""The one door to other libraries' private internals.

Every private attribute access, class swap, monkeypatch and thread start on an object of
aiortc, aioice, asyncio's selector transport or pylibsrtp lives in this package, one
module per library, behind named functions. Each module states the pinned version it was
written for; :func:`check` (run on first use) says exactly what moved when a dependency
changes, and the callers fall back to the public path or raise
:class:`~aiolivekit.errors.AiortcCompatibilityError`.
"""

from __future__ import annotations

from typing import Any

from ..errors import AiortcCompatibilityError

__all__ = ["PINNED", "hook_missing", "installed_version", "require_hooks"]

# the versions every module of this package was written and tested against
PINNED = {"aiortc": "1.16.0", "aioice": "0.13.0", "pylibsrtp": "1.0.0"}


def installed_version(library: str) -> str:
    """The installed version of ``library`` (``"?"`` when unknown)."""
    from importlib import metadata

    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return "?"


def require_hooks(library: str, obj: object, attrs: tuple[str, ...] = (),
                  methods: tuple[str, ...] = ()) -> None:
    """Raise :class:`AiortcCompatibilityError` naming every attribute of ``attrs`` missing on
    ``obj`` and every method of ``methods`` missing on its class."""
    missing = [a for a in attrs if not hasattr(obj, a)]
    missing += [m for m in methods if not callable(getattr(type(obj), m, None))]
    if missing:
        raise AiortcCompatibilityError(
            f"{library} {installed_version(library)} is not supported (aiolivekit was written "
            f"for {PINNED.get(library, '?')}): {type(obj).__name__} lacks " + ", ".join(missing)
        )


def hook_missing(obj: Any, attrs: tuple[str, ...]) -> list[str]:
    """The names of ``attrs`` that ``obj`` lacks (for callers that fall back instead)."""
    return [a for a in attrs if not hasattr(obj, a)]
