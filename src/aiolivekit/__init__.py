"""aiolivekit: a pure-Python real-time SDK for LiveKit, with the API of ``livekit.rtc``.

Every public name is importable from ``aiolivekit`` directly and from
``aiolivekit.rtc`` (``from aiolivekit import rtc; rtc.Room()``). Names are loaded
lazily, so importing the package does not pull in codecs until they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

_EXPORTS: dict[str, str] = {}


def _export(module: str, *names: str) -> None:
    for name in names:
        _EXPORTS[name] = module


_export(
    ".types",
    "ConnectionState", "ConnectionQuality", "DataPacketKind", "IceTransportType",
    "ContinualGatheringPolicy", "TrackKind", "TrackSource", "StreamState", "VideoBufferType",
    "VideoRotation", "VideoCodec", "EncryptionType", "EncryptionState", "ParticipantKind",
    "ParticipantState", "DisconnectReason", "AudioTrackFeature", "VideoQuality", "IceServer",
    "RtcConfiguration", "RoomOptions", "DataStreamOptions", "VideoEncoding", "AudioEncoding",
    "TrackPublishOptions", "ParticipantTrackPermission", "DataPacket", "SipDTMF",
    "TranscriptionSegment", "Transcription",
)
_export(
    ".errors",
    "AioLiveKitError", "ConnectError", "PublishTrackError", "UnpublishTrackError",
    "PublishDataError", "PublishDTMFError", "PublishTranscriptionError", "StreamError",
    "SignalError",
)
_export(".events", "EventEmitter")
_export(".room", "Room")
_export(".participant", "Participant", "LocalParticipant", "RemoteParticipant")
_export(
    ".track",
    "Track", "LocalAudioTrack", "LocalVideoTrack", "RemoteAudioTrack", "RemoteVideoTrack",
    "LocalTrack", "RemoteTrack", "AudioTrack", "VideoTrack",
)
_export(".track_publication", "TrackPublication", "LocalTrackPublication", "RemoteTrackPublication")
_export(".media.audio_frame", "AudioFrame", "combine_audio_frames")
_export(".media.audio_source", "AudioSource")
_export(".media.audio_stream", "AudioStream", "AudioFrameEvent")
_export(".media.audio_resampler", "AudioResampler", "AudioResamplerQuality")
_export(".media.video_frame", "VideoFrame")
_export(".media.video_source", "VideoSource")
_export(".media.video_stream", "VideoStream", "VideoFrameEvent")
_export(
    ".data.streams",
    "TextStreamInfo", "ByteStreamInfo", "TextStreamReader", "TextStreamWriter",
    "ByteStreamReader", "ByteStreamWriter",
)
_export(".data.rpc", "RpcError", "RpcInvocationData")

__all__ = ["__version__", "rtc", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "rtc":
        return importlib.import_module(".rtc", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aiolivekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .data.rpc import RpcError, RpcInvocationData
    from .data.streams import (
        ByteStreamInfo, ByteStreamReader, ByteStreamWriter, TextStreamInfo, TextStreamReader,
        TextStreamWriter,
    )
    from .errors import (
        AioLiveKitError, ConnectError, PublishDataError, PublishDTMFError, PublishTrackError,
        PublishTranscriptionError, SignalError, StreamError, UnpublishTrackError,
    )
    from .events import EventEmitter
    from .media.audio_frame import AudioFrame, combine_audio_frames
    from .media.audio_resampler import AudioResampler, AudioResamplerQuality
    from .media.audio_source import AudioSource
    from .media.audio_stream import AudioFrameEvent, AudioStream
    from .media.video_frame import VideoFrame
    from .media.video_source import VideoSource
    from .media.video_stream import VideoFrameEvent, VideoStream
    from .participant import LocalParticipant, Participant, RemoteParticipant
    from .room import Room
    from .track import (
        AudioTrack, LocalAudioTrack, LocalTrack, LocalVideoTrack, RemoteAudioTrack,
        RemoteTrack, RemoteVideoTrack, Track, VideoTrack,
    )
    from .track_publication import (
        LocalTrackPublication, RemoteTrackPublication, TrackPublication,
    )
    from .types import *  # noqa: F403
