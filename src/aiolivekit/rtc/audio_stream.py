"""``livekit.rtc.audio_stream`` names: AudioStream, from aiolivekit's implementation."""

from __future__ import annotations

from ..media.audio_stream import (
    AudioFrameEvent,
    AudioStream,
)
from ..media.frame_processor import NoiseCancellationOptions
from ..types import TrackSource

__all__ = [
    "AudioFrameEvent",
    "AudioStream",
    "NoiseCancellationOptions",
    "TrackSource",
]
