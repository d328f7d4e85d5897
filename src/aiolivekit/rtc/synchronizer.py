"""``livekit.rtc.synchronizer`` names: AVSynchronizer, from aiolivekit's implementation."""

from __future__ import annotations

from ..media.synchronizer import AVSynchronizer

__all__ = [
    "AVSynchronizer",
]
