"""``livekit.rtc.media_devices`` names: MediaDevices (raises), from aiolivekit's implementation."""

from __future__ import annotations

from ..media.platform_audio import (
    BLOCKSIZE,
    DEFAULT_CHANNELS,
    DEFAULT_SAMPLE_RATE,
    FRAME_SAMPLES,
    InputCapture,
    MediaDevices,
    OutputPlayer,
)

__all__ = [
    "BLOCKSIZE",
    "DEFAULT_CHANNELS",
    "DEFAULT_SAMPLE_RATE",
    "FRAME_SAMPLES",
    "InputCapture",
    "MediaDevices",
    "OutputPlayer",
]
