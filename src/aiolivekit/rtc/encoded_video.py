"""``livekit.rtc.encoded_video`` names: pre-encoded video (the source raises), from aiolivekit's implementation."""

from __future__ import annotations

from ..media.encoded_video import (
    EncodedRateControl,
    EncodedVideoFrame,
    EncodedVideoSource,
    EncodedVideoSourceFeedback,
)

__all__ = [
    "EncodedRateControl",
    "EncodedVideoFrame",
    "EncodedVideoSource",
    "EncodedVideoSourceFeedback",
]
