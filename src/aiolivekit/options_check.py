"""What aiolivekit does with each public option: honour it, refuse it, or report it.

Every public option is either honoured as in ``livekit.rtc``, refused with
:class:`~aiolivekit.errors.UnsupportedOptionError` (naming the option, the value and the
issue that will bring the feature) before any network I/O it would affect, or, where
the official SDK itself only treats it as a preference, accepted and reported (a warning
in the log and the effect visible on the publication). docs/options.md has the table;
tests/unit/test_options_honest.py checks that no public option is left unclassified.

The call sites (``Room.connect``, ``publish_track``, the stream constructors, the
engine's peer set-up) each make one call into this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConnectError, UnsupportedOptionError
from .types import (
    ContinualGatheringPolicy,
    IceTransportType,
    RoomOptions,
    TrackPublishOptions,
    VideoCodec,
    VideoRotation,
)

__all__ = [
    "ISSUE_AUDIO_RED",
    "ISSUE_E2EE",
    "ISSUE_VIDEO",
    "audio_processor",
    "check_frame_metadata",
    "check_loop",
    "check_publish_options",
    "check_room_options",
    "check_stream_kwargs",
    "check_video_rotation",
    "relay_only",
    "require_relay_servers",
    "stream_payload_limit",
]

logger = logging.getLogger(__name__)

ISSUE_VIDEO = 16  # simulcast layers, VP9/AV1/H265
ISSUE_E2EE = 17  # end-to-end encryption
ISSUE_AUDIO_RED = 20  # redundant audio (RED)

# video codecs aiortc encodes and packetizes (see media/codecs.py)
SUPPORTED_VIDEO_CODECS = (VideoCodec.VP8, VideoCodec.H264)

# keyword arguments the stream constructors take through **kwargs (as livekit.rtc)
STREAM_KWARGS = frozenset({"participant", "track_source"})


# --------------------------------------------------------------------------- room


def check_room_options(options: RoomOptions) -> None:
    """Refuse, before any network I/O, the ``RoomOptions`` aiolivekit cannot honour.

    Raises :class:`UnsupportedOptionError` for an end-to-end encryption type other than
    GCM (LiveKit's frame format; ``CUSTOM`` has no implementation), ``single_peer_connection=True`` and
    ``ice_transport_type=TRANSPORT_NOHOST``; :class:`ConnectError` (reason
    ``"no_relay"``) for relay-only ICE with an explicit ``ice_servers`` list that has
    no TURN server; ``ValueError`` for values outside an option's range.
    """
    for name in ("e2ee", "encryption"):
        value = getattr(options, name)
        if value is None:
            continue
        kind = getattr(value, "encryption_type", None)
        if not hasattr(value, "key_provider_options") or kind is None:
            raise UnsupportedOptionError(
                f"RoomOptions.{name}", value, issue=ISSUE_E2EE,
                detail="expected an E2EEOptions; refusing to connect rather than send "
                       "media in clear")
        if int(kind) != 1:  # EncryptionType.GCM
            raise UnsupportedOptionError(
                f"RoomOptions.{name}.encryption_type", kind, issue=ISSUE_E2EE,
                detail="only EncryptionType.GCM (LiveKit's frame format) is implemented; "
                       "refusing to connect rather than send media in clear")
    if options.single_peer_connection:
        raise UnsupportedOptionError(
            "RoomOptions.single_peer_connection", options.single_peer_connection,
            detail="aiolivekit always uses one publisher and one subscriber peer "
                   "connection; leave it None or False")
    stream_payload_limit(options)  # validates
    cfg = options.rtc_config
    if cfg is None:
        return
    transport = _enum_value(IceTransportType, cfg.ice_transport_type,
                            "RtcConfiguration.ice_transport_type")
    _enum_value(ContinualGatheringPolicy, cfg.continual_gathering_policy,
                "RtcConfiguration.continual_gathering_policy")
    if transport == IceTransportType.TRANSPORT_NOHOST:
        raise UnsupportedOptionError(
            "RtcConfiguration.ice_transport_type", IceTransportType.TRANSPORT_NOHOST,
            detail="hiding host candidates is not implemented; use TRANSPORT_RELAY "
                   "(with a TURN server) or TRANSPORT_ALL")
    if transport == IceTransportType.TRANSPORT_RELAY and cfg.ice_servers:
        urls = [u for s in cfg.ice_servers for u in _urls(s.urls)]
        if not any(_is_turn(u) for u in urls):
            raise ConnectError(
                "RtcConfiguration.ice_transport_type=TRANSPORT_RELAY needs a TURN server, "
                f"and ice_servers has none ({urls}); refusing to connect", reason="no_relay")


def check_loop(loop: asyncio.AbstractEventLoop | None, owner: str) -> None:
    """``ValueError`` when ``owner`` was created for an event loop other than the running
    one (``Room(loop=...)``): aiolivekit runs on the loop that awaits it."""
    if loop is not None and loop is not asyncio.get_running_loop():
        raise ValueError(f"{owner} was created with loop={loop!r}, but is used from "
                         "another event loop; aiolivekit runs on the loop that awaits it")


def relay_only(options: RoomOptions) -> bool:
    """True when ICE must use relay candidates only (no host, no server-reflexive)."""
    cfg = options.rtc_config
    return cfg is not None and int(cfg.ice_transport_type) == IceTransportType.TRANSPORT_RELAY


def require_relay_servers(options: RoomOptions, servers: Iterable[Any]) -> None:
    """With relay-only ICE, refuse (``ConnectError``, reason ``"no_relay"``) when
    ``servers`` (the aiortc ``RTCIceServer`` list the peer connections would get) has no
    TURN server: without one there is no candidate ICE may use."""
    if not relay_only(options):
        return
    urls = [u for s in servers for u in _urls(s.urls)]
    if not any(_is_turn(u) for u in urls):
        raise ConnectError(
            "RtcConfiguration.ice_transport_type=TRANSPORT_RELAY needs a TURN server, but "
            "neither RtcConfiguration.ice_servers nor the server's join response offers "
            "one reachable from this connection; refusing to connect rather than use "
            "direct candidates", reason="no_relay")


def stream_payload_limit(options: RoomOptions) -> int | None:
    """``DataStreamOptions.max_payload_byte_length`` (validated), or ``None``."""
    ds = options.data_stream
    limit = ds.max_payload_byte_length if ds is not None else None
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValueError(
            f"DataStreamOptions.max_payload_byte_length must be a positive int or None, "
            f"got {limit!r}")
    return limit


def _urls(urls: Any) -> list[str]:
    return [urls] if isinstance(urls, str) else [str(u) for u in urls]


def _is_turn(url: str) -> bool:
    return url.lower().startswith(("turn:", "turns:"))


def _enum_value(enum: Any, value: Any, name: str) -> int:
    try:
        return int(enum(int(value)))
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {value!r} is not a {enum.__name__}") from None


# --------------------------------------------------------------------------- publishing


def check_publish_options(options: TrackPublishOptions, *, is_video: bool) -> None:
    """Refuse or report the ``TrackPublishOptions`` aiolivekit cannot honour for a track.

    * video with ``video_codec`` other than VP8/H264: :class:`UnsupportedOptionError`.
    * video with ``simulcast=True``: published in the official SDK's layers
      (``media.simulcast_layers``); where that cannot be done (the server's answer takes
      no layers, an ``EncodedVideoSource`` track) a warning is logged, one layer is sent
      and ``publication.simulcasted`` is ``False`` (checked in ``participant`` and
      ``engine.publishing``). A track too small for two layers gets one, as in the
      official SDK.
    * audio with ``red=True``: RED (RFC 2198) is offered first; when the server does not
      accept it the track is sent as plain Opus, a warning is logged and
      ``publication.mime_type`` is ``audio/opus`` (``audio/red`` when it is sent; RED is a
      negotiated preference in the official SDK too). Checked after negotiation, in
      ``engine.publishing``.

    ``simulcast`` on audio and ``red`` on video mean nothing, as in the official SDK.
    """
    codec = _enum_value(VideoCodec, options.video_codec, "TrackPublishOptions.video_codec")
    if is_video and codec not in SUPPORTED_VIDEO_CODECS:
        raise UnsupportedOptionError(
            "TrackPublishOptions.video_codec", VideoCodec(codec), issue=ISSUE_VIDEO,
            detail="aiolivekit encodes VP8 and H264 only")
    _check_publish_options_1_2(options, is_video=is_video)


# VideoEncoderBackend values (types_ext): AUTO and SOFTWARE are what aiolivekit does;
# PRE_ENCODED is what an EncodedVideoSource track does whatever the value
_ENCODER_SOFTWARE = (0, 1)
_ENCODER_PRE_ENCODED = 6


def _check_publish_options_1_2(options: TrackPublishOptions, *, is_video: bool) -> None:
    """The fields livekit.rtc 1.2 added: frame metadata and SVC modes raise, the encoder
    backend and the degradation preference are hints (see ``TrackPublishOptions``): a
    ``VideoSource`` is encoded in software, an ``EncodedVideoSource`` sent as encoded."""
    features = list(options.frame_metadata_features or ())
    if features:
        raise UnsupportedOptionError(
            "TrackPublishOptions.frame_metadata_features", features, issue=ISSUE_VIDEO,
            detail="per-frame metadata (packet trailer) is not sent yet")
    if is_video and options.scalability_mode:
        raise UnsupportedOptionError(
            "TrackPublishOptions.scalability_mode", options.scalability_mode,
            issue=ISSUE_VIDEO, detail="aiolivekit encodes one spatial/temporal layer")
    encoder = int(options.video_encoder)
    if is_video and encoder not in (*_ENCODER_SOFTWARE, _ENCODER_PRE_ENCODED):
        logger.warning("TrackPublishOptions.video_encoder=%d: aiolivekit encodes in "
                       "software (no hardware encoder backend)", encoder)


# --------------------------------------------------------------------------- streams


def check_stream_kwargs(owner: str, kwargs: Mapping[str, Any]) -> None:
    """``TypeError`` for keyword arguments a stream constructor does not know."""
    unknown = sorted(set(kwargs) - STREAM_KWARGS)
    if unknown:
        raise TypeError(f"{owner}() got unexpected keyword argument(s): {', '.join(unknown)}")


def audio_processor(noise_cancellation: Any) -> Any:
    """The frame processor ``AudioStream`` runs, from its ``noise_cancellation`` argument.

    ``None`` -> ``None``; a ``FrameProcessor`` (an object with ``enabled``, ``_process``
    and ``_close``, e.g. a subclass of ``livekit.rtc.FrameProcessor``) is used as is;
    ``NoiseCancellationOptions`` (a native filter module of the official SDK) raises
    :class:`UnsupportedOptionError`; anything else raises ``TypeError``.
    """
    if noise_cancellation is None:
        return None
    if all(callable(getattr(noise_cancellation, m, None)) for m in ("_process", "_close")) \
            and hasattr(noise_cancellation, "enabled"):
        return noise_cancellation
    if hasattr(noise_cancellation, "module_id") and hasattr(noise_cancellation, "options"):
        raise UnsupportedOptionError(
            "AudioStream.noise_cancellation", noise_cancellation,
            detail="NoiseCancellationOptions name a native audio filter module of the "
                   "official SDK's library, which pure Python cannot load; pass a "
                   "FrameProcessor instead")
    raise TypeError(
        "noise_cancellation must be None or a FrameProcessor (with enabled, _process and "
        f"_close), got {type(noise_cancellation).__name__}")


def check_video_rotation(rotation: Any) -> VideoRotation:
    """The ``VideoSource.capture_frame`` rotation; anything but 0 raises
    :class:`UnsupportedOptionError` (frames are sent as captured: no rotation, no
    orientation header extension; issue 16)."""
    value = VideoRotation(_enum_value(VideoRotation, rotation, "capture_frame rotation"))
    if value != VideoRotation.VIDEO_ROTATION_0:
        raise UnsupportedOptionError(
            "VideoSource.capture_frame(rotation)", value, issue=ISSUE_VIDEO,
            detail="frames are encoded as captured; rotate them before capture_frame")
    return value


def check_frame_metadata(metadata: Any) -> None:
    """``VideoSource.capture_frame(metadata=...)``: anything but ``None`` raises
    :class:`UnsupportedOptionError` (per-frame metadata travels in a packet trailer that
    aiolivekit's video path does not write yet; issue 16)."""
    if metadata is not None:
        raise UnsupportedOptionError(
            "VideoSource.capture_frame(metadata)", metadata, issue=ISSUE_VIDEO,
            detail="frame metadata (user timestamp, frame id, user data) is not sent yet")
