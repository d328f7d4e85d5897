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


if TYPE_CHECKING:  # pragma: no cover - explicit re-exports for type checkers and IDEs
    from .data.rpc import (
        RpcError as RpcError,
        RpcInvocationData as RpcInvocationData,
    )
    from .data.streams import (
        TextStreamInfo as TextStreamInfo,
        ByteStreamInfo as ByteStreamInfo,
        TextStreamReader as TextStreamReader,
        TextStreamWriter as TextStreamWriter,
        ByteStreamReader as ByteStreamReader,
        ByteStreamWriter as ByteStreamWriter,
    )
    from .errors import (
        AioLiveKitError as AioLiveKitError,
        ConnectError as ConnectError,
        PublishTrackError as PublishTrackError,
        UnpublishTrackError as UnpublishTrackError,
        PublishDataError as PublishDataError,
        PublishDTMFError as PublishDTMFError,
        PublishTranscriptionError as PublishTranscriptionError,
        StreamError as StreamError,
        SignalError as SignalError,
    )
    from .events import (
        EventEmitter as EventEmitter,
    )
    from .media.audio_frame import (
        AudioFrame as AudioFrame,
        combine_audio_frames as combine_audio_frames,
    )
    from .media.audio_resampler import (
        AudioResampler as AudioResampler,
        AudioResamplerQuality as AudioResamplerQuality,
    )
    from .media.audio_source import (
        AudioSource as AudioSource,
    )
    from .media.audio_stream import (
        AudioStream as AudioStream,
        AudioFrameEvent as AudioFrameEvent,
    )
    from .media.video_frame import (
        VideoFrame as VideoFrame,
    )
    from .media.video_source import (
        VideoSource as VideoSource,
    )
    from .media.video_stream import (
        VideoStream as VideoStream,
        VideoFrameEvent as VideoFrameEvent,
    )
    from .participant import (
        Participant as Participant,
        LocalParticipant as LocalParticipant,
        RemoteParticipant as RemoteParticipant,
    )
    from .room import (
        Room as Room,
    )
    from .track import (
        Track as Track,
        LocalAudioTrack as LocalAudioTrack,
        LocalVideoTrack as LocalVideoTrack,
        RemoteAudioTrack as RemoteAudioTrack,
        RemoteVideoTrack as RemoteVideoTrack,
        LocalTrack as LocalTrack,
        RemoteTrack as RemoteTrack,
        AudioTrack as AudioTrack,
        VideoTrack as VideoTrack,
    )
    from .track_publication import (
        TrackPublication as TrackPublication,
        LocalTrackPublication as LocalTrackPublication,
        RemoteTrackPublication as RemoteTrackPublication,
    )
    from .types import (
        ConnectionState as ConnectionState,
        ConnectionQuality as ConnectionQuality,
        DataPacketKind as DataPacketKind,
        IceTransportType as IceTransportType,
        ContinualGatheringPolicy as ContinualGatheringPolicy,
        TrackKind as TrackKind,
        TrackSource as TrackSource,
        StreamState as StreamState,
        VideoBufferType as VideoBufferType,
        VideoRotation as VideoRotation,
        VideoCodec as VideoCodec,
        EncryptionType as EncryptionType,
        EncryptionState as EncryptionState,
        ParticipantKind as ParticipantKind,
        ParticipantState as ParticipantState,
        DisconnectReason as DisconnectReason,
        AudioTrackFeature as AudioTrackFeature,
        VideoQuality as VideoQuality,
        IceServer as IceServer,
        RtcConfiguration as RtcConfiguration,
        RoomOptions as RoomOptions,
        DataStreamOptions as DataStreamOptions,
        VideoEncoding as VideoEncoding,
        AudioEncoding as AudioEncoding,
        TrackPublishOptions as TrackPublishOptions,
        ParticipantTrackPermission as ParticipantTrackPermission,
        DataPacket as DataPacket,
        SipDTMF as SipDTMF,
        TranscriptionSegment as TranscriptionSegment,
        Transcription as Transcription,
    )
