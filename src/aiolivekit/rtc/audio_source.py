"""``livekit.rtc.audio_source`` names: AudioSource, from aiolivekit's implementation."""

from __future__ import annotations

from ..media.audio_source import AudioSource

__all__ = [
    "AudioSource",
]
