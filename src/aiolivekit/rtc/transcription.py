"""``livekit.rtc.transcription`` names: transcription records, from aiolivekit's implementation."""

from __future__ import annotations

from ..types import (
    Transcription,
    TranscriptionSegment,
)

__all__ = [
    "Transcription",
    "TranscriptionSegment",
]
