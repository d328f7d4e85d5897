"""``livekit.rtc._proto.track_pb2``: track enums and ParticipantTrackPermission."""

from __future__ import annotations

from typing import NoReturn

from ...types import (
    AudioTrackFeature,
    ParticipantTrackPermission,
    StreamState,
    TrackKind,
    TrackSource,
)
from ...types_ext import FrameMetadataFeature
from . import export, missing

__all__ = ["ParticipantTrackPermission", *export(  # noqa: PLE0604
    globals(), AudioTrackFeature=AudioTrackFeature, FrameMetadataFeature=FrameMetadataFeature,
    StreamState=StreamState, TrackKind=TrackKind, TrackSource=TrackSource)]


def __getattr__(name: str) -> NoReturn:
    missing("track_pb2", name)
