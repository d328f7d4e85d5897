"""``livekit.rtc.audio_mixer`` names: AudioMixer, from aiolivekit's implementation."""

from __future__ import annotations

from ..media.audio_mixer import AudioMixer

__all__ = [
    "AudioMixer",
]
