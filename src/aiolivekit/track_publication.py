"""Track publications: the server's view of a published track (TrackInfo) plus its Track."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from livekit.protocol import models as models_pb

from .types import EncryptionType, TrackKind, TrackSource, VideoQuality
from .types_ext import FrameMetadataFeature

if TYPE_CHECKING:
    from .track import LocalAudioTrack, LocalVideoTrack, RemoteAudioTrack, RemoteVideoTrack

__all__ = ["LocalTrackPublication", "RemoteTrackPublication", "TrackPublication"]

logger = logging.getLogger(__name__)

# PacketTrailerFeature (protocol) and FrameMetadataFeature share their values
_FMF = frozenset(int(f) for f in FrameMetadataFeature)
_KIND = {models_pb.TrackType.AUDIO: TrackKind.KIND_AUDIO, models_pb.TrackType.VIDEO: TrackKind.KIND_VIDEO}
_SOURCE = {
    models_pb.TrackSource.UNKNOWN: TrackSource.SOURCE_UNKNOWN,
    models_pb.TrackSource.CAMERA: TrackSource.SOURCE_CAMERA,
    models_pb.TrackSource.MICROPHONE: TrackSource.SOURCE_MICROPHONE,
    models_pb.TrackSource.SCREEN_SHARE: TrackSource.SOURCE_SCREENSHARE,
    models_pb.TrackSource.SCREEN_SHARE_AUDIO: TrackSource.SOURCE_SCREENSHARE_AUDIO,
}


def kind_from_proto(value: int) -> TrackKind:
    kind: TrackKind = _KIND.get(value, TrackKind.KIND_UNKNOWN)  # type: ignore[call-overload]
    return kind


def source_from_proto(value: int) -> TrackSource:
    source: TrackSource = _SOURCE.get(value, TrackSource.SOURCE_UNKNOWN)  # type: ignore[call-overload]
    return source


def source_to_proto(value: int) -> int:
    for proto, ours in _SOURCE.items():
        if ours == value:
            return int(proto)
    return int(models_pb.TrackSource.UNKNOWN)


class TrackPublication:
    """Base class: properties read from the server's ``TrackInfo``."""

    def __init__(self, info: models_pb.TrackInfo) -> None:
        self._info = models_pb.TrackInfo()
        self._info.CopyFrom(info)
        self._track: Any = None

    def _update_info(self, info: models_pb.TrackInfo) -> None:
        self._info.CopyFrom(info)

    @property
    def track(self) -> Any:
        """The Track, or None (not subscribed / unpublished)."""
        return self._track

    @property
    def sid(self) -> str:
        return self._info.sid

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def kind(self) -> TrackKind:
        return kind_from_proto(self._info.type)

    @property
    def source(self) -> TrackSource:
        return source_from_proto(self._info.source)

    @property
    def simulcasted(self) -> bool:
        return bool(self._info.simulcast) or len(self._info.layers) > 1

    @property
    def width(self) -> int:
        return int(self._info.width)

    @property
    def height(self) -> int:
        return int(self._info.height)

    @property
    def mime_type(self) -> str:
        if self._info.mime_type:
            return self._info.mime_type
        for codec in self._info.codecs:
            if codec.mime_type:
                return codec.mime_type
        return ""

    @property
    def muted(self) -> bool:
        return bool(self._info.muted)

    @property
    def encryption_type(self) -> EncryptionType:
        try:
            return EncryptionType(int(self._info.encryption))
        except ValueError:
            return EncryptionType.NONE

    @property
    def audio_features(self) -> list[int]:
        return [int(f) for f in self._info.audio_features]

    @property
    def frame_metadata_features(self) -> list[int]:
        """Per-frame metadata the publisher attaches (``FrameMetadataFeature`` values,
        from the track's packet trailer features)."""
        return [FrameMetadataFeature(int(f)) if int(f) in _FMF else int(f)
                for f in self._info.packet_trailer_features]

    def __repr__(self) -> str:
        return (f"rtc.{type(self).__name__}(sid={self.sid}, name={self.name}, "
                f"kind={TrackKind.Name(self.kind)}, source={TrackSource.Name(self.source)})")


class LocalTrackPublication(TrackPublication):
    """A track this client published."""

    def __init__(self, info: models_pb.TrackInfo,
                 track: LocalAudioTrack | LocalVideoTrack | None = None) -> None:
        super().__init__(info)
        self._track = track
        self._options: Any = None  # the TrackPublishOptions (republished with them)
        loop = asyncio.get_event_loop()
        self._first_subscription: asyncio.Future[None] = loop.create_future()

    @property
    def track(self) -> LocalAudioTrack | LocalVideoTrack | None:
        return self._track  # type: ignore[no-any-return]

    @property
    def simulcasted(self) -> bool:
        """Whether the track is sent in simulcast layers (what is sent, which can be less
        than what the AddTrackRequest declared when the server took one layer)."""
        rids = getattr(getattr(self._track, "_rtc_track", None), "simulcast_rids", None)
        if rids is not None:
            return bool(rids)
        return super().simulcasted

    async def wait_for_subscription(self) -> None:
        """Resolve once a remote participant subscribed; RuntimeError if unpublished first."""
        await asyncio.shield(self._first_subscription)

    def _resolve_subscription(self) -> None:
        if not self._first_subscription.done():
            self._first_subscription.set_result(None)

    def _unpublished(self) -> None:
        if not self._first_subscription.done():
            self._first_subscription.set_exception(
                RuntimeError("track was unpublished before it was subscribed"))
            # nobody may be waiting: mark the exception as retrieved
            self._first_subscription.exception()


class RemoteTrackPublication(TrackPublication):
    """A track published by a remote participant."""

    def __init__(self, info: models_pb.TrackInfo, participant_sid: str = "",
                 set_subscribed: Callable[[RemoteTrackPublication, bool], None] | None = None,
                 set_quality: Callable[[RemoteTrackPublication, VideoQuality], None] | None = None
                 ) -> None:
        super().__init__(info)
        self._participant_sid = participant_sid
        self._subscribed = False
        self._desired: bool | None = None
        self._set_subscribed_cb = set_subscribed
        self._set_quality_cb = set_quality

    @property
    def track(self) -> RemoteAudioTrack | RemoteVideoTrack | None:
        return self._track  # type: ignore[no-any-return]

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    def set_subscribed(self, subscribed: bool) -> None:
        """Ask the server to (un)subscribe; no-op if already in that state."""
        subscribed = bool(subscribed)
        if self._set_subscribed_cb is None:
            raise RuntimeError("the room is not connected")
        current = self._desired if self._desired is not None else self._subscribed
        if current == subscribed:
            return
        self._set_subscribed_cb(self, subscribed)  # raises RuntimeError when disconnected
        self._desired = subscribed

    def set_video_quality(self, quality: VideoQuality | int) -> None:
        """Ask the server for one simulcast layer of this track: ``VIDEO_QUALITY_LOW``
        (q), ``MEDIUM`` (h) or ``HIGH`` (f); sent as ``UpdateTrackSettings.quality``.

        Raises ``ValueError`` for an audio or a single-layer publication (as
        ``livekit.rtc``) or an unknown quality, ``RuntimeError`` when not connected.
        """
        if self.kind != TrackKind.KIND_VIDEO:
            raise ValueError(
                f"set_video_quality is only supported on video publications (sid={self.sid})")
        if not self.simulcasted:
            raise ValueError(
                f"set_video_quality requires a simulcasted publication (sid={self.sid})")
        try:
            q = VideoQuality(int(quality))
        except ValueError:
            raise ValueError(f"unknown video quality {quality!r}") from None
        if q not in (VideoQuality.VIDEO_QUALITY_LOW, VideoQuality.VIDEO_QUALITY_MEDIUM,
                     VideoQuality.VIDEO_QUALITY_HIGH):
            raise ValueError(f"unknown video quality {quality!r}")
        if self._set_quality_cb is None:
            raise RuntimeError("the room is not connected")
        self._set_quality_cb(self, q)
