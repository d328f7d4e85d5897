"""``livekit.rtc.track_publication`` names: publications, from aiolivekit's implementation."""

from __future__ import annotations

from ..track_publication import (
    LocalTrackPublication,
    RemoteTrackPublication,
    TrackPublication,
)
from ..types import VideoQuality

__all__ = [
    "LocalTrackPublication",
    "RemoteTrackPublication",
    "TrackPublication",
    "VideoQuality",
]
