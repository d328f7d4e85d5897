"""``livekit.rtc.version`` names: the version, from aiolivekit's implementation."""

from __future__ import annotations

from ..version import __version__

__all__ = [
    "__version__",
]
