"""``livekit.rtc.data_track`` names: data tracks (the track objects raise), from aiolivekit's implementation."""

from __future__ import annotations

from ..data_track import (
    DataTrackFrame,
    DataTrackInfo,
    DataTrackStream,
    LocalDataTrack,
    PushFrameError,
    RemoteDataTrack,
    SubscribeDataTrackError,
)

__all__ = [
    "DataTrackFrame",
    "DataTrackInfo",
    "DataTrackStream",
    "LocalDataTrack",
    "PushFrameError",
    "RemoteDataTrack",
    "SubscribeDataTrackError",
]
