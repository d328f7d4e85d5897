"""``livekit.rtc.room`` names: Room and its records, from aiolivekit's implementation."""

from __future__ import annotations

from ..errors import ConnectError
from ..room import Room
from ..types import (
    ConnectionState,
    DataPacket,
    DataStreamOptions,
    DisconnectReason,
    RoomOptions,
    RtcConfiguration,
    SimulateScenarioKind,
    SipDTMF,
    TrackKind,
)
from ..types_ext import RtcStats

__all__ = [
    "ConnectError",
    "ConnectionState",
    "DataPacket",
    "DataStreamOptions",
    "DisconnectReason",
    "Room",
    "RoomOptions",
    "RtcConfiguration",
    "RtcStats",
    "SimulateScenarioKind",
    "SipDTMF",
    "TrackKind",
]
