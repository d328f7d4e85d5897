"""Events the engine reports to its listener (besides the signal session's events)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataReceived", "EngineClosed", "FullReconnectNeeded", "SignalLost"]


@dataclass
class DataReceived:
    """A DataPacket arrived on a subscriber data channel."""

    data: bytes
    reliable: bool


@dataclass
class EngineClosed:
    """The session ended: ``reason`` is a DisconnectReason, ``error`` a description."""

    reason: int
    error: str = ""


@dataclass
class SignalLost:
    """The signal connection is gone but the peer connections may live on: resume.
    ``reason`` is a ``ReconnectReason``."""

    reason: int
    error: str


@dataclass
class FullReconnectNeeded:
    """This session cannot go on (the server asked for a full reconnect, or a peer
    connection failed): join again. ``reason`` is a DisconnectReason."""

    reason: int
    error: str
