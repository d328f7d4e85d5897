"""Publishing pre-encoded video (``EncodedVideoSource``): the records are real; the
source raises ``UnsupportedOptionError`` until aiolivekit can packetize frames it did not
encode itself (issue 16: the video pipeline)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NoReturn

from ..errors import UnsupportedOptionError
from ..types import VideoCodec
from ..types_ext import EncodedFrameType, FrameMetadata

__all__ = [
    "EncodedRateControl",
    "EncodedVideoFrame",
    "EncodedVideoSource",
    "EncodedVideoSourceFeedback",
]

logger = logging.getLogger(__name__)

ISSUE_ENCODED_VIDEO = 16


def _unsupported(what: str) -> NoReturn:
    raise UnsupportedOptionError(what, "used", issue=ISSUE_ENCODED_VIDEO,
                                 detail="publishing pre-encoded H264/VP8 frames is not "
                                        "implemented yet; use VideoSource")


@dataclass
class EncodedVideoFrame:
    data: bytes
    width: int
    height: int
    codec: VideoCodec
    frame_type: EncodedFrameType
    timestamp_us: int
    metadata: FrameMetadata | None = None


@dataclass
class EncodedRateControl:
    target_bitrate_bps: int
    framerate_fps: float


@dataclass
class EncodedVideoSourceFeedback:
    keyframe_requested: bool
    rate_control: EncodedRateControl | None


class EncodedVideoSource:
    """A source of pre-encoded frames; raises: not implemented yet (issue 16)."""

    def __init__(self, width: int, height: int) -> None:
        _unsupported("EncodedVideoSource")

    def capture_frame(self, frame: EncodedVideoFrame) -> None:
        _unsupported("EncodedVideoSource.capture_frame")

    def take_feedback(self) -> EncodedVideoSourceFeedback:
        _unsupported("EncodedVideoSource.take_feedback")

    async def aclose(self) -> None:
        _unsupported("EncodedVideoSource.aclose")
