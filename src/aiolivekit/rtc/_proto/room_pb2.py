"""``livekit.rtc._proto.room_pb2``: room enums and the publish-option messages."""

from __future__ import annotations

from typing import NoReturn

from ... import types as _types
from ...types import (
    AudioEncoding,
    ConnectionQuality,
    ConnectionState,
    ContinualGatheringPolicy,
    DataPacketKind,
    IceServer,
    IceTransportType,
    TrackPublishOptions,
    VideoEncoding,
)
from ...types_ext import ProtoDegradationPreference, VideoEncoderBackend
from . import export, missing

__all__ = ["AudioEncoding", "IceServer", "TrackPublishOptions", "VideoEncoding", *export(  # noqa: PLE0604
    globals(), ConnectionQuality=ConnectionQuality, ConnectionState=ConnectionState,
    ContinualGatheringPolicy=ContinualGatheringPolicy, DataPacketKind=DataPacketKind,
    DegradationPreference=ProtoDegradationPreference, IceTransportType=IceTransportType,
    VideoEncoderBackend=VideoEncoderBackend)]
if hasattr(_types, "SimulateScenarioKind"):  # Room.simulate_scenario (reconnect work)
    __all__ += export(  # noqa: PLE0605
        globals(), SimulateScenarioKind=_types.SimulateScenarioKind)


def __getattr__(name: str) -> NoReturn:
    missing("room_pb2", name)
