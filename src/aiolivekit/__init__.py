"""aiolivekit: a pure-Python real-time SDK for LiveKit, with the API of ``livekit.rtc``.

Every public name is importable from ``aiolivekit`` directly and from
``aiolivekit.rtc`` (``from aiolivekit import rtc; rtc.Room()``). Names are loaded
lazily, so importing the package does not pull in codecs until they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._deferred_imports import install as _install_deferred_imports
from .version import __version__

_install_deferred_imports()

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
    "TranscriptionSegment", "Transcription", "SimulateScenarioKind",
)
_export(
    ".errors",
    "AioLiveKitError", "ConnectError", "PublishTrackError", "UnpublishTrackError",
    "PublishDataError", "PublishDTMFError", "PublishTranscriptionError", "StreamError",
    "SignalError", "UnsupportedOptionError",
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
# the rest of livekit.rtc 1.2.1's surface (issue 15)
_export(".media.audio_mixer", "AudioMixer")
_export(".media.synchronizer", "AVSynchronizer")
_export(".media.apm", "AudioProcessingModule")
_export(".media.frame_processor", "FrameProcessor", "NoiseCancellationOptions", "AudioFilter")
_export(
    ".media.encoded_video",
    "EncodedVideoSource", "EncodedVideoFrame", "EncodedVideoSourceFeedback", "EncodedRateControl",
)
_export(
    ".media.platform_audio",
    "MediaDevices", "PlatformAudio", "PlatformAudioSource", "PlatformAudioOptions",
    "PlatformAudioError", "AudioDeviceInfo",
)
_export(
    ".types_ext",
    "DegradationPreference", "EncodedFrameType", "FrameMetadata", "FrameMetadataFeature",
    "KeyDerivationFunction", "ParticipantKindDetail", "RtcStats", "VideoEncoderBackend",
)
_export(".e2ee", "E2EEOptions", "KeyProviderOptions", "E2EEManager", "KeyProvider", "FrameCryptor")
_export(
    ".data_track",
    "LocalDataTrack", "RemoteDataTrack", "DataTrackStream", "DataTrackFrame", "DataTrackInfo",
    "PushFrameError", "SubscribeDataTrackError",
)
_export(".rpc_interceptor", "RpcCallInfo", "RpcInterceptor")
_export(".rtc", "stats")

__all__ = ["__version__", "rtc", *_EXPORTS]  # noqa: PLE0604 - _EXPORTS maps str names


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
        ByteStreamInfo as ByteStreamInfo,
        ByteStreamReader as ByteStreamReader,
        ByteStreamWriter as ByteStreamWriter,
        TextStreamInfo as TextStreamInfo,
        TextStreamReader as TextStreamReader,
        TextStreamWriter as TextStreamWriter,
    )
    from .errors import (
        AioLiveKitError as AioLiveKitError,
        ConnectError as ConnectError,
        PublishDataError as PublishDataError,
        PublishDTMFError as PublishDTMFError,
        PublishTrackError as PublishTrackError,
        PublishTranscriptionError as PublishTranscriptionError,
        SignalError as SignalError,
        StreamError as StreamError,
        UnpublishTrackError as UnpublishTrackError,
        UnsupportedOptionError as UnsupportedOptionError,
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
        AudioFrameEvent as AudioFrameEvent,
        AudioStream as AudioStream,
    )
    from .media.video_frame import (
        VideoFrame as VideoFrame,
    )
    from .media.video_source import (
        VideoSource as VideoSource,
    )
    from .media.video_stream import (
        VideoFrameEvent as VideoFrameEvent,
        VideoStream as VideoStream,
    )
    from .participant import (
        LocalParticipant as LocalParticipant,
        Participant as Participant,
        RemoteParticipant as RemoteParticipant,
    )
    from .room import (
        Room as Room,
    )
    from .track import (
        AudioTrack as AudioTrack,
        LocalAudioTrack as LocalAudioTrack,
        LocalTrack as LocalTrack,
        LocalVideoTrack as LocalVideoTrack,
        RemoteAudioTrack as RemoteAudioTrack,
        RemoteTrack as RemoteTrack,
        RemoteVideoTrack as RemoteVideoTrack,
        Track as Track,
        VideoTrack as VideoTrack,
    )
    from .track_publication import (
        LocalTrackPublication as LocalTrackPublication,
        RemoteTrackPublication as RemoteTrackPublication,
        TrackPublication as TrackPublication,
    )
    from .types import (
        AudioEncoding as AudioEncoding,
        AudioTrackFeature as AudioTrackFeature,
        ConnectionQuality as ConnectionQuality,
        ConnectionState as ConnectionState,
        ContinualGatheringPolicy as ContinualGatheringPolicy,
        DataPacket as DataPacket,
        DataPacketKind as DataPacketKind,
        DataStreamOptions as DataStreamOptions,
        DisconnectReason as DisconnectReason,
        EncryptionState as EncryptionState,
        EncryptionType as EncryptionType,
        IceServer as IceServer,
        IceTransportType as IceTransportType,
        ParticipantKind as ParticipantKind,
        ParticipantState as ParticipantState,
        ParticipantTrackPermission as ParticipantTrackPermission,
        RoomOptions as RoomOptions,
        RtcConfiguration as RtcConfiguration,
        SimulateScenarioKind as SimulateScenarioKind,
        SipDTMF as SipDTMF,
        StreamState as StreamState,
        TrackKind as TrackKind,
        TrackPublishOptions as TrackPublishOptions,
        TrackSource as TrackSource,
        Transcription as Transcription,
        TranscriptionSegment as TranscriptionSegment,
        VideoBufferType as VideoBufferType,
        VideoCodec as VideoCodec,
        VideoEncoding as VideoEncoding,
        VideoQuality as VideoQuality,
        VideoRotation as VideoRotation,
    )

if TYPE_CHECKING:  # pragma: no cover - the names added for livekit.rtc 1.2.1 (issue 15)
    from .data_track import (
        DataTrackFrame as DataTrackFrame,
        DataTrackInfo as DataTrackInfo,
        DataTrackStream as DataTrackStream,
        LocalDataTrack as LocalDataTrack,
        PushFrameError as PushFrameError,
        RemoteDataTrack as RemoteDataTrack,
        SubscribeDataTrackError as SubscribeDataTrackError,
    )
    from .e2ee import (
        E2EEManager as E2EEManager,
        E2EEOptions as E2EEOptions,
        FrameCryptor as FrameCryptor,
        KeyProvider as KeyProvider,
        KeyProviderOptions as KeyProviderOptions,
    )
    from .media.apm import AudioProcessingModule as AudioProcessingModule
    from .media.audio_mixer import AudioMixer as AudioMixer
    from .media.encoded_video import (
        EncodedRateControl as EncodedRateControl,
        EncodedVideoFrame as EncodedVideoFrame,
        EncodedVideoSource as EncodedVideoSource,
        EncodedVideoSourceFeedback as EncodedVideoSourceFeedback,
    )
    from .media.frame_processor import (
        AudioFilter as AudioFilter,
        FrameProcessor as FrameProcessor,
        NoiseCancellationOptions as NoiseCancellationOptions,
    )
    from .media.platform_audio import (
        AudioDeviceInfo as AudioDeviceInfo,
        MediaDevices as MediaDevices,
        PlatformAudio as PlatformAudio,
        PlatformAudioError as PlatformAudioError,
        PlatformAudioOptions as PlatformAudioOptions,
        PlatformAudioSource as PlatformAudioSource,
    )
    from .media.synchronizer import AVSynchronizer as AVSynchronizer
    from .rpc_interceptor import (
        RpcCallInfo as RpcCallInfo,
        RpcInterceptor as RpcInterceptor,
    )
    from .rtc import stats as stats
    from .types_ext import (
        DegradationPreference as DegradationPreference,
        EncodedFrameType as EncodedFrameType,
        FrameMetadata as FrameMetadata,
        FrameMetadataFeature as FrameMetadataFeature,
        KeyDerivationFunction as KeyDerivationFunction,
        ParticipantKindDetail as ParticipantKindDetail,
        RtcStats as RtcStats,
        VideoEncoderBackend as VideoEncoderBackend,
    )
