"""``livekit.rtc._proto.video_frame_pb2``: video enums and FrameMetadata."""

from __future__ import annotations

from typing import NoReturn

from ...types import VideoBufferType, VideoCodec, VideoRotation
from ...types_ext import EncodedFrameType, FrameMetadata
from . import export, missing

__all__ = ["FrameMetadata", *export(  # noqa: PLE0604
    globals(), EncodedFrameType=EncodedFrameType, VideoBufferType=VideoBufferType,
    VideoCodec=VideoCodec, VideoRotation=VideoRotation)]


def __getattr__(name: str) -> NoReturn:
    missing("video_frame_pb2", name)
