"""``livekit.rtc.frame_processor`` names: FrameProcessor, from aiolivekit's implementation."""

from __future__ import annotations

from ..media.frame_processor import FrameProcessor

__all__ = [
    "FrameProcessor",
]
