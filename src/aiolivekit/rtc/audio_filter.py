"""``livekit.rtc.audio_filter`` names: AudioFilter (raises: no native plugins), from aiolivekit's implementation."""

from __future__ import annotations

from ..media.frame_processor import AudioFilter

__all__ = [
    "AudioFilter",
]
