"""``livekit.rtc.audio_resampler`` names: AudioResampler, from aiolivekit's implementation."""

from __future__ import annotations

from ..media.audio_resampler import (
    AudioResampler,
    AudioResamplerQuality,
)

__all__ = [
    "AudioResampler",
    "AudioResamplerQuality",
]
