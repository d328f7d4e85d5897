"""``livekit.rtc.platform_audio`` names: platform audio devices (raise), from aiolivekit's implementation."""

from __future__ import annotations

from ..media.platform_audio import (
    AudioDeviceInfo,
    PlatformAudio,
    PlatformAudioError,
    PlatformAudioOptions,
    PlatformAudioSource,
)

__all__ = [
    "AudioDeviceInfo",
    "PlatformAudio",
    "PlatformAudioError",
    "PlatformAudioOptions",
    "PlatformAudioSource",
]
