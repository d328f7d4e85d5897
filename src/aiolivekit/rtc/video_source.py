"""``livekit.rtc.video_source`` names: VideoSource, from aiolivekit's implementation."""

from __future__ import annotations

from ..media.video_source import VideoSource

__all__ = [
    "VideoSource",
]
