"""``livekit.rtc.video_stream`` names: VideoStream, from aiolivekit's implementation."""

from __future__ import annotations

from ..media.video_stream import (
    VideoFrameEvent,
    VideoStream,
)
from ..types import TrackSource

__all__ = [
    "TrackSource",
    "VideoFrameEvent",
    "VideoStream",
]
