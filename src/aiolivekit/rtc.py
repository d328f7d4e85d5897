"""``from aiolivekit import rtc``: the public names as one namespace, like ``livekit.rtc``."""

from __future__ import annotations

from typing import Any

import aiolivekit as _pkg

__all__ = [n for n in _pkg.__all__ if n != "rtc"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(_pkg, name)
    raise AttributeError(f"module 'aiolivekit.rtc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
