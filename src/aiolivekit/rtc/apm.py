"""``livekit.rtc.apm`` names: AudioProcessingModule, from aiolivekit's implementation."""

from __future__ import annotations

from ..media.apm import AudioProcessingModule

__all__ = [
    "AudioProcessingModule",
]
