"""``livekit.rtc.audio_frame`` names: AudioFrame, from aiolivekit's implementation."""

from __future__ import annotations

from ..media.audio_frame import AudioFrame

__all__ = [
    "AudioFrame",
]
