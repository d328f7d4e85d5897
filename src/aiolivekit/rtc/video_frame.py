"""``livekit.rtc.video_frame`` names: VideoFrame, from aiolivekit's implementation."""

from __future__ import annotations

from ..media.video_frame import VideoFrame

__all__ = [
    "VideoFrame",
]
