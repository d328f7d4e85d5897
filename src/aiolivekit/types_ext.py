"""Enums and records of ``livekit.rtc`` 1.2 that ``types`` does not have: encoder and
degradation preferences, frame metadata, key derivation, participant kind details, the
encoded-frame type, and the ``RtcStats`` record of ``Room.get_rtc_stats``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .types import ProtoEnum, _Message

__all__ = [
    "DegradationPreference",
    "EncodedFrameType",
    "FrameMetadata",
    "FrameMetadataFeature",
    "KeyDerivationFunction",
    "ParticipantKindDetail",
    "ProtoDegradationPreference",
    "RtcStats",
    "VideoEncoderBackend",
]


class DegradationPreference(ProtoEnum):
    """What the video encoder gives up first under constraint."""

    BALANCED = 0
    MAINTAIN_FRAMERATE = 1
    MAINTAIN_RESOLUTION = 2
    MAINTAIN_FRAMERATE_AND_RESOLUTION = 4


class ProtoDegradationPreference(ProtoEnum):
    DEGRADATION_PREFERENCE_BALANCED = 0
    DEGRADATION_PREFERENCE_MAINTAIN_FRAMERATE = 1
    DEGRADATION_PREFERENCE_MAINTAIN_RESOLUTION = 2
    DEGRADATION_PREFERENCE_MAINTAIN_FRAMERATE_AND_RESOLUTION = 4


class KeyDerivationFunction(ProtoEnum):
    PBKDF2 = 0
    HKDF = 1


class FrameMetadataFeature(ProtoEnum):
    FMF_USER_TIMESTAMP = 0
    FMF_FRAME_ID = 1
    FMF_USER_DATA = 2


class ParticipantKindDetail(ProtoEnum):
    PARTICIPANT_KIND_DETAIL_CLOUD_AGENT = 0
    PARTICIPANT_KIND_DETAIL_FORWARDED = 1
    PARTICIPANT_KIND_DETAIL_CONNECTOR_WHATSAPP = 2
    PARTICIPANT_KIND_DETAIL_CONNECTOR_TWILIO = 3
    PARTICIPANT_KIND_DETAIL_BRIDGE_RTSP = 4
    PARTICIPANT_KIND_DETAIL_SIMULATION = 5


class EncodedFrameType(ProtoEnum):
    ENCODED_FRAME_KEY = 0
    ENCODED_FRAME_DELTA = 1


class VideoEncoderBackend(ProtoEnum):
    ENCODER_BACKEND_AUTO = 0
    ENCODER_BACKEND_SOFTWARE = 1
    ENCODER_BACKEND_HARDWARE = 2
    ENCODER_BACKEND_NVENC = 3
    ENCODER_BACKEND_VAAPI = 4
    ENCODER_BACKEND_VIDEOTOOLBOX = 5
    ENCODER_BACKEND_PRE_ENCODED = 6


@dataclass
class FrameMetadata(_Message):
    """Per-frame metadata of a video frame (``user_timestamp`` in µs, ``frame_id``,
    ``user_data``)."""

    user_timestamp: int = 0
    frame_id: int = 0
    user_data: bytes = b""


@dataclass
class RtcStats:
    """What ``Room.get_rtc_stats()`` returns: the stats of each peer connection."""

    publisher_stats: list[Any]
    subscriber_stats: list[Any]
