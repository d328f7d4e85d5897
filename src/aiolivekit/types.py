"""Enums and option records of the public API.

Enums are ``IntEnum`` s with the member names and values of ``livekit.rtc``; they also
offer the ``Name()`` / ``Value()`` / ``keys()`` / ``values()`` / ``items()`` helpers of
protobuf enum wrappers, so code written against ``livekit.rtc`` keeps working.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol, TypeVar

__all__ = [
    "AudioEncoding",
    "AudioTrackFeature",
    "ConnectionQuality",
    "ConnectionState",
    "ContinualGatheringPolicy",
    "DataPacket",
    "DataPacketKind",
    "DataStreamOptions",
    "DisconnectReason",
    "EncryptionState",
    "EncryptionType",
    "IceServer",
    "IceTransportType",
    "ParticipantKind",
    "ParticipantState",
    "ParticipantTrackPermission",
    "RoomOptions",
    "RtcConfiguration",
    "SimulateScenarioKind",
    "SipDTMF",
    "StreamState",
    "TrackKind",
    "TrackPublishOptions",
    "TrackSource",
    "Transcription",
    "TranscriptionSegment",
    "VideoBufferType",
    "VideoCodec",
    "VideoEncoding",
    "VideoQuality",
    "VideoRotation",
]

E = TypeVar("E", bound="ProtoEnum")


class ProtoEnum(enum.IntEnum):
    """IntEnum with the class-level helpers of protobuf ``EnumTypeWrapper``.

    ``ValueType`` is ``int``, as on a protobuf enum wrapper, where code uses it at run time
    too (livekit-agents: ``isinstance(source, rtc.TrackSource.ValueType)``).
    """

    ValueType: ClassVar[type[int]]  # set below the class: an assignment here makes a member

    @classmethod
    def Name(cls, value: int) -> str:
        """Member name of ``value``; ``ValueError`` if unknown."""
        try:
            return cls(value).name
        except ValueError:
            raise ValueError(
                f"Enum {cls.__name__} has no name defined for value {value!r}"
            ) from None

    @classmethod
    def Value(cls, name: str) -> int:
        """Integer value of member ``name``; ``ValueError`` if unknown."""
        try:
            return int(cls[name])
        except KeyError:
            raise ValueError(
                f"Enum {cls.__name__} has no value defined for name {name!r}"
            ) from None

    @classmethod
    def keys(cls) -> list[str]:
        return [m.name for m in cls]

    @classmethod
    def values(cls) -> list[int]:
        return [int(m) for m in cls]

    @classmethod
    def items(cls) -> list[tuple[str, int]]:
        return [(m.name, int(m)) for m in cls]


ProtoEnum.ValueType = int


class ConnectionState(ProtoEnum):
    CONN_DISCONNECTED = 0
    CONN_CONNECTED = 1
    CONN_RECONNECTING = 2


class SimulateScenarioKind(ProtoEnum):
    """Faults :meth:`Room.simulate_scenario` can trigger (values of the official SDK)."""

    SIMULATE_SIGNAL_RECONNECT = 0
    SIMULATE_SPEAKER = 1
    SIMULATE_NODE_FAILURE = 2
    SIMULATE_SERVER_LEAVE = 3
    SIMULATE_MIGRATION = 4
    SIMULATE_FORCE_TCP = 5
    SIMULATE_FORCE_TLS = 6
    SIMULATE_FULL_RECONNECT = 7
    SIMULATE_DISCONNECT_SIGNAL_ON_RESUME = 8


class ConnectionQuality(ProtoEnum):
    QUALITY_UNKNOWN = -1
    QUALITY_POOR = 0
    QUALITY_GOOD = 1
    QUALITY_EXCELLENT = 2
    QUALITY_LOST = 3


class DataPacketKind(ProtoEnum):
    KIND_LOSSY = 0
    KIND_RELIABLE = 1


class IceTransportType(ProtoEnum):
    TRANSPORT_RELAY = 0
    TRANSPORT_NOHOST = 1
    TRANSPORT_ALL = 2


class ContinualGatheringPolicy(ProtoEnum):
    GATHER_ONCE = 0
    GATHER_CONTINUALLY = 1


class TrackKind(ProtoEnum):
    KIND_UNKNOWN = 0
    KIND_AUDIO = 1
    KIND_VIDEO = 2


class TrackSource(ProtoEnum):
    SOURCE_UNKNOWN = 0
    SOURCE_CAMERA = 1
    SOURCE_MICROPHONE = 2
    SOURCE_SCREENSHARE = 3
    SOURCE_SCREENSHARE_AUDIO = 4


class StreamState(ProtoEnum):
    STATE_UNKNOWN = 0
    STATE_ACTIVE = 1
    STATE_PAUSED = 2


class VideoBufferType(ProtoEnum):
    RGBA = 0
    ABGR = 1
    ARGB = 2
    BGRA = 3
    RGB24 = 4
    I420 = 5
    I420A = 6
    I422 = 7
    I444 = 8
    I010 = 9
    NV12 = 10


class VideoRotation(ProtoEnum):
    VIDEO_ROTATION_0 = 0
    VIDEO_ROTATION_90 = 1
    VIDEO_ROTATION_180 = 2
    VIDEO_ROTATION_270 = 3


class VideoCodec(ProtoEnum):
    VP8 = 0
    H264 = 1
    AV1 = 2
    VP9 = 3
    H265 = 4


class EncryptionType(ProtoEnum):
    NONE = 0
    GCM = 1
    CUSTOM = 2


class EncryptionState(ProtoEnum):
    NEW = 0
    OK = 1
    ENCRYPTION_FAILED = 2
    DECRYPTION_FAILED = 3
    MISSING_KEY = 4
    KEY_RATCHETED = 5
    INTERNAL_ERROR = 6


class ParticipantKind(ProtoEnum):
    PARTICIPANT_KIND_STANDARD = 0
    PARTICIPANT_KIND_INGRESS = 1
    PARTICIPANT_KIND_EGRESS = 2
    PARTICIPANT_KIND_SIP = 3
    PARTICIPANT_KIND_AGENT = 4
    PARTICIPANT_KIND_CONNECTOR = 5
    PARTICIPANT_KIND_BRIDGE = 6


class ParticipantState(ProtoEnum):
    PARTICIPANT_STATE_JOINING = 0
    PARTICIPANT_STATE_JOINED = 1
    PARTICIPANT_STATE_ACTIVE = 2
    PARTICIPANT_STATE_DISCONNECTED = 3


class DisconnectReason(ProtoEnum):
    UNKNOWN_REASON = 0
    CLIENT_INITIATED = 1
    DUPLICATE_IDENTITY = 2
    SERVER_SHUTDOWN = 3
    PARTICIPANT_REMOVED = 4
    ROOM_DELETED = 5
    STATE_MISMATCH = 6
    JOIN_FAILURE = 7
    MIGRATION = 8
    SIGNAL_CLOSE = 9
    ROOM_CLOSED = 10
    USER_UNAVAILABLE = 11
    USER_REJECTED = 12
    SIP_TRUNK_FAILURE = 13
    CONNECTION_TIMEOUT = 14
    MEDIA_FAILURE = 15
    AGENT_ERROR = 16


class AudioTrackFeature(ProtoEnum):
    TF_STEREO = 0
    TF_NO_DTX = 1
    TF_AUTO_GAIN_CONTROL = 2
    TF_ECHO_CANCELLATION = 3
    TF_NOISE_SUPPRESSION = 4
    TF_ENHANCED_NOISE_CANCELLATION = 5
    TF_PRECONNECT_BUFFER = 6


class VideoQuality(ProtoEnum):
    VIDEO_QUALITY_LOW = 0
    VIDEO_QUALITY_MEDIUM = 1
    VIDEO_QUALITY_HIGH = 2


# --------------------------------------------------------------------------- records


class _Message:
    """Mixin giving dataclass records the protobuf-message helpers users call."""

    def CopyFrom(self, other: Any) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            setattr(self, f.name, getattr(other, f.name))

    def HasField(self, name: str) -> bool:
        return getattr(self, name, None) not in (None, "", 0, False, [])


@dataclass
class IceServer(_Message):
    urls: list[str] = field(default_factory=list)
    username: str = ""
    password: str = ""


@dataclass
class RtcConfiguration:
    """Peer-connection settings (what aiolivekit does with each: docs/options.md).

    ``ice_servers`` empty means: use the ICE servers the server sends at join (never a
    built-in public STUN server). ``host_addresses`` (aiolivekit extension) restricts the
    local addresses ICE gathers on; by default a loopback server URL gathers on loopback
    only and any other URL on every interface.

    ``ice_transport_type``: ``TRANSPORT_ALL`` uses every candidate; ``TRANSPORT_RELAY``
    gathers and signals relay (TURN) candidates only, and ``Room.connect`` refuses with
    ``ConnectError`` (reason ``"no_relay"``) when no TURN server is configured or offered;
    ``TRANSPORT_NOHOST`` raises ``UnsupportedOptionError``.

    ``continual_gathering_policy`` is a hint: aiolivekit gathers candidates once per
    peer connection whatever its value (``GATHER_ONCE`` behaviour); interfaces that appear
    later are not used by a running connection.
    """

    ice_transport_type: IceTransportType = IceTransportType.TRANSPORT_ALL
    continual_gathering_policy: ContinualGatheringPolicy = ContinualGatheringPolicy.GATHER_CONTINUALLY
    ice_servers: list[IceServer] = field(default_factory=list)
    host_addresses: list[str] | None = None


@dataclass
class DataStreamOptions:
    """Options of incoming data streams (``RoomOptions.data_stream``).

    ``max_payload_byte_length``: an incoming text or byte stream whose payload (after
    decompression) exceeds it ends with ``StreamError`` on the reader; ``None``: only the
    reader's unread-buffer limit applies.
    """

    max_payload_byte_length: int | None = None


@dataclass
class RoomOptions:
    """Options of :meth:`Room.connect` (what aiolivekit does with each: docs/options.md).

    ``connect_timeout`` bounds each signalling step (WebSocket upgrade, JoinResponse);
    ``ice_timeout`` bounds the wait for the peer connections to connect.

    ``encryption`` (an ``E2EEOptions``; ``e2ee`` is its deprecated alias) encrypts media
    end to end in LiveKit's frame format (docs/e2ee.md); any other value, or an
    ``encryption_type`` other than GCM, raises ``UnsupportedOptionError``: aiolivekit never
    connects in clear when encryption was asked for. ``single_peer_connection=True`` raises (aiolivekit
    always uses a publisher and a subscriber peer connection; ``None`` and ``False``
    are fine). ``dynacast=True`` pauses the simulcast layers
    no subscriber wants (the server's ``SubscribedQualityUpdate``), as the official SDK;
    without it every layer is always encoded.
    """

    auto_subscribe: bool = True
    dynacast: bool = False
    e2ee: Any = None
    encryption: Any = None
    rtc_config: RtcConfiguration | None = None
    connect_timeout: float | None = None
    ice_timeout: float | None = None
    single_peer_connection: bool | None = None
    data_stream: DataStreamOptions | None = None


@dataclass
class VideoEncoding(_Message):
    max_bitrate: int = 0
    max_framerate: float = 0.0


@dataclass
class AudioEncoding(_Message):
    max_bitrate: int = 0


@dataclass
class TrackPublishOptions(_Message):
    """Options of :meth:`LocalParticipant.publish_track` (the fields of ``livekit.rtc``).

    Defaults are the values ``livekit.rtc``'s record reads as (``False`` for ``dtx``,
    ``red`` and ``simulcast``), and aiolivekit does what they say; the official native
    layer instead turns an unset ``dtx``/``red``/``simulcast`` into ``True``.

    * ``video_codec``: VP8 and H264 are honoured; AV1, VP9 and H265 raise
      ``UnsupportedOptionError`` (aiolivekit issue 16). Ignored for audio, as officially.
    * ``simulcast=True`` (video) sends the official SDK's layers (up to three by the
      resolution, as officially); where that cannot be done (the server's answer takes no
      layers, an ``EncodedVideoSource`` track) aiortc sends one layer, a warning is logged
      and ``publication.simulcasted`` is ``False``.
    * ``red=True`` (audio) is a hint, reported when not honoured: aiolivekit offers RED
      (RFC 2198, each packet also carries the previous one) and sends it when the server
      accepts it (``publication.mime_type`` is ``audio/red``); when the server refuses it,
      plain Opus, a warning and ``audio/opus``. Officially too RED is negotiated.
    * ``video_encoding``, ``audio_encoding``, ``dtx``, ``source``, ``stream`` and
      ``preconnect_buffer`` (the TF_PRECONNECT_BUFFER feature flag; the application sends
      the buffer, as with the official SDK) are honoured.
    * ``frame_metadata_features`` (non-empty) and ``scalability_mode`` (non-empty, video)
      raise ``UnsupportedOptionError`` (issue 16: no packet trailer, no SVC).
    * ``video_encoder`` (a ``VideoEncoderBackend`` value) is a hint: aiolivekit encodes a
      ``VideoSource`` in software (``ENCODER_BACKEND_AUTO`` / ``SOFTWARE``; a hardware
      backend logs a warning, as the official SDK falls back to software when it has
      none) and sends an ``EncodedVideoSource`` 's frames as they are, whatever the value.
    * ``degradation_preference`` (a ``DegradationPreference`` value) is a hint: aiolivekit
      keeps the captured resolution and drops frames only above ``max_framerate``,
      whatever its value.
    """

    video_encoding: VideoEncoding = field(default_factory=VideoEncoding)
    audio_encoding: AudioEncoding = field(default_factory=AudioEncoding)
    video_codec: VideoCodec = VideoCodec.VP8
    dtx: bool = False
    red: bool = False
    simulcast: bool = False
    source: TrackSource = TrackSource.SOURCE_UNKNOWN
    stream: str = ""
    preconnect_buffer: bool = False
    # livekit.rtc 1.2 (values of FrameMetadataFeature, VideoEncoderBackend and
    # DegradationPreference in aiolivekit.types_ext, which imports this module)
    frame_metadata_features: list[int] = field(default_factory=list)
    scalability_mode: str = ""
    video_encoder: int = 0
    degradation_preference: int = 0


@dataclass
class ParticipantTrackPermission(_Message):
    participant_identity: str = ""
    allow_all: bool = False
    allowed_track_sids: list[str] = field(default_factory=list)


class ParticipantView(Protocol):
    """The ``participant`` of a :class:`DataPacket` / :class:`SipDTMF`: the sender, a
    ``RemoteParticipant`` (``LocalParticipant`` for our own DTMF) at run time. Typed by
    what both offer, so that this module does not import the participant module."""

    @property
    def sid(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def metadata(self) -> str: ...

    @property
    def attributes(self) -> dict[str, str]: ...


@dataclass
class DataPacket:
    """A user data packet received from a participant (or from the server API)."""

    data: bytes
    kind: DataPacketKind
    participant: ParticipantView | None = None
    topic: str | None = None


@dataclass
class SipDTMF:
    code: int
    digit: str
    participant: ParticipantView | None = None


@dataclass
class TranscriptionSegment:
    id: str
    text: str
    start_time: int = 0
    end_time: int = 0
    language: str = ""
    final: bool = False


@dataclass
class Transcription:
    participant_identity: str
    track_sid: str
    segments: list[TranscriptionSegment] = field(default_factory=list)
