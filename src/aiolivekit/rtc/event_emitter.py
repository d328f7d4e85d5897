"""``livekit.rtc.event_emitter`` names: EventEmitter, from aiolivekit's implementation."""

from __future__ import annotations

from ..events import EventEmitter

__all__ = [
    "EventEmitter",
]
