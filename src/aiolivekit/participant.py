"""Participants: the local one (publishes tracks and data) and the remote ones."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Coroutine, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from livekit.protocol import models as models_pb, rtc as rtc_pb

from . import options_check
from .errors import PublishTrackError, SignalError, UnpublishTrackError
from .rpc_interceptor import RpcInterceptorMixin
from .track import LocalAudioTrack, LocalTrack, LocalVideoTrack, PublishableTrack, Track
from .track_publication import (
    LocalTrackPublication,
    RemoteTrackPublication,
    TrackPublication,
    source_to_proto,
)
from .types import (
    AudioTrackFeature,
    ConnectionQuality,
    DisconnectReason,
    ParticipantKind,
    ParticipantState,
    ParticipantTrackPermission,
    TrackKind,
    TrackPublishOptions,
    VideoCodec,
)
from .types_ext import ParticipantKindDetail

if TYPE_CHECKING:
    from .data.manager import DataManager
    from .engine.engine import RtcEngine

__all__ = ["LocalParticipant", "Participant", "RemoteParticipant", "RoomLink"]

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0

_KIND: dict[int, ParticipantKind] = {
    models_pb.ParticipantInfo.STANDARD: ParticipantKind.PARTICIPANT_KIND_STANDARD,
    models_pb.ParticipantInfo.INGRESS: ParticipantKind.PARTICIPANT_KIND_INGRESS,
    models_pb.ParticipantInfo.EGRESS: ParticipantKind.PARTICIPANT_KIND_EGRESS,
    models_pb.ParticipantInfo.SIP: ParticipantKind.PARTICIPANT_KIND_SIP,
    models_pb.ParticipantInfo.AGENT: ParticipantKind.PARTICIPANT_KIND_AGENT,
}
for _name, _ours in (("CONNECTOR", ParticipantKind.PARTICIPANT_KIND_CONNECTOR),
                     ("BRIDGE", ParticipantKind.PARTICIPANT_KIND_BRIDGE)):
    if _name in models_pb.ParticipantInfo.Kind.keys():
        _KIND[models_pb.ParticipantInfo.Kind.Value(_name)] = _ours
# ParticipantInfo.KindDetail and ParticipantKindDetail share their values
_KIND_DETAILS = frozenset(int(d) for d in ParticipantKindDetail)


class Participant:
    """Common read-only view of a participant (from the server's ParticipantInfo)."""

    def __init__(self, info: models_pb.ParticipantInfo) -> None:
        self._info = models_pb.ParticipantInfo()
        self._info.CopyFrom(info)
        self._track_publications: dict[str, TrackPublication] = {}
        self._disconnect_reason: DisconnectReason | None = None
        self._connection_quality = ConnectionQuality.QUALITY_UNKNOWN
        # wake-up events of the AudioStream/VideoStream.from_participant streams following
        # this participant (see media.stream_base.publications_changed)
        self._stream_followers: set[asyncio.Event] = set()

    def _update_info(self, info: models_pb.ParticipantInfo) -> None:
        self._info.CopyFrom(info)

    def _publications_changed(self) -> None:
        """Wake the ``from_participant`` streams following this participant (a track was
        subscribed, unsubscribed or unpublished, or the participant left)."""
        for event in tuple(self._stream_followers):
            event.set()

    @property
    def sid(self) -> str:
        return self._info.sid

    @property
    def identity(self) -> str:
        return self._info.identity

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def metadata(self) -> str:
        return self._info.metadata

    @property
    def attributes(self) -> dict[str, str]:
        """A copy of the participant's attributes."""
        return dict(self._info.attributes)

    @property
    def kind(self) -> ParticipantKind:
        return _KIND.get(self._info.kind, ParticipantKind.PARTICIPANT_KIND_STANDARD)

    @property
    def kind_details(self) -> list[int]:
        """What ``kind`` is more precisely (``ParticipantKindDetail`` values; a value newer
        than this SDK stays a plain int)."""
        return [ParticipantKindDetail(int(d)) if int(d) in _KIND_DETAILS else int(d)
                for d in self._info.kind_details]

    @property
    def state(self) -> ParticipantState:
        try:
            return ParticipantState(int(self._info.state))
        except ValueError:
            return ParticipantState.PARTICIPANT_STATE_JOINING

    @property
    def joined_at(self) -> datetime | None:
        ms = self._info.joined_at_ms or self._info.joined_at * 1000
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc) if ms else None

    @property
    def permissions(self) -> models_pb.ParticipantPermission:
        out = models_pb.ParticipantPermission()
        out.CopyFrom(self._info.permission)
        return out

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        return self._disconnect_reason

    @property
    def connection_quality(self) -> ConnectionQuality:
        return self._connection_quality

    @property
    def track_publications(self) -> Mapping[str, TrackPublication]:
        return self._track_publications

    def __repr__(self) -> str:
        return f"rtc.{type(self).__name__}(sid={self.sid}, identity={self.identity}, name={self.name})"


class RemoteParticipant(Participant):
    """Another participant in the room."""

    @property
    def track_publications(self) -> Mapping[str, RemoteTrackPublication]:
        return self._track_publications  # type: ignore[return-value]


class RoomLink(Protocol):
    """What a :class:`LocalParticipant` needs of its Room."""

    _data: DataManager

    def emit(self, event: Any, *args: Any) -> None: ...

    def _live_engine(self, closed_ok: bool = False) -> RtcEngine | None: ...

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...

    def _close_track(self, track: Track) -> None: ...

    def _e2ee_encryption(self) -> int: ...

    def _e2ee_attach_local(self, track: Any, track_sid: str,
                           old_sid: str | None = None) -> None: ...

    def _e2ee_detach(self, track_sid: str) -> None: ...

    def _e2ee_status(self, p: Participant) -> None: ...

    async def _publish_user_data(self, payload: bytes, *, reliable: bool,
                                 destination_identities: list[str], topic: str) -> None: ...


class LocalParticipant(RpcInterceptorMixin, Participant):
    """This client's participant: publishes tracks and data, updates its own info."""

    def __init__(self, info: models_pb.ParticipantInfo, room: RoomLink) -> None:
        Participant.__init__(self, info)
        self._room = room
        self._data = room._data
        self._request_waiters: dict[int, asyncio.Future[tuple[int, str]]] = {}
        self._metadata_expect: dict[int, dict[str, Any]] = {}
        self._early_subscribed: set[str] = set()

    @property
    def track_publications(self) -> Mapping[str, LocalTrackPublication]:
        return self._track_publications  # type: ignore[return-value]

    # ---------------------------------------------------------------- data

    async def publish_data(
        self,
        payload: bytes | str,
        *,
        reliable: bool = True,
        destination_identities: Sequence[str] = (),
        topic: str = "",
    ) -> None:
        """Send a user packet to everyone (or to ``destination_identities``)."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        elif not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError("payload must be bytes or str")
        if isinstance(destination_identities, str):
            destination_identities = [destination_identities]
        await self._room._publish_user_data(
            bytes(payload), reliable=reliable,
            destination_identities=list(destination_identities), topic=topic)

    # ---------------------------------------------------------------- own info

    async def set_metadata(self, metadata: str) -> None:
        """Change this participant's metadata (needs canUpdateOwnMetadata)."""
        await self._update_own_info(metadata=metadata)

    async def set_name(self, name: str) -> None:
        """Change this participant's name (needs canUpdateOwnMetadata)."""
        await self._update_own_info(name=name)

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        """Set (merge) attributes; an empty value deletes a key (needs canUpdateOwnMetadata)."""
        await self._update_own_info(attributes=dict(attributes))

    def set_track_subscription_permissions(
        self,
        *,
        allow_all_participants: bool,
        participant_permissions: list[ParticipantTrackPermission] | None = None,
    ) -> None:
        """Restrict which participants may subscribe to this participant's tracks."""
        perms = []
        for p in participant_permissions or []:
            perms.append(rtc_pb.TrackPermission(
                participant_identity=p.participant_identity, all_tracks=p.allow_all,
                track_sids=list(p.allowed_track_sids)))
        engine = self._room._live_engine()
        if engine is None:
            raise RuntimeError("the room is not connected")
        engine.session.subscription_permission(rtc_pb.SubscriptionPermission(
            all_participants=allow_all_participants, track_permissions=perms))
        engine.send_signal()

    async def _update_own_info(self, *, metadata: str | None = None, name: str | None = None,
                               attributes: dict[str, str] | None = None) -> None:
        engine = self._room._live_engine()
        if engine is None:
            raise SignalError("cannot update participant info: not connected")
        request_id = engine.session.update_metadata(metadata=metadata, name=name,
                                                    attributes=attributes)
        fut: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._request_waiters[request_id] = fut
        self._metadata_expect[request_id] = {"metadata": metadata, "name": name,
                                             "attributes": attributes}
        engine.send_signal()
        try:
            reason, message = await asyncio.wait_for(asyncio.shield(fut), REQUEST_TIMEOUT)
        except asyncio.TimeoutError:
            raise SignalError("the server did not answer the participant update in time") from None
        finally:
            self._request_waiters.pop(request_id, None)
            self._metadata_expect.pop(request_id, None)
        if reason != rtc_pb.RequestResponse.OK:
            name_ = rtc_pb.RequestResponse.Reason.Name(reason)
            raise SignalError(f"participant update refused: {name_} {message}".strip())

    def _request_answered(self, request_id: int, reason: int, message: str) -> None:
        """The server answered a request of ours (a refused update, typically)."""
        fut = self._request_waiters.pop(request_id, None)
        if fut is not None and not fut.done():
            fut.set_result((reason, message))
        self._metadata_expect.pop(request_id, None)

    def _check_metadata_waiters(self) -> None:
        """Resolve pending updates whose values now show in our own ParticipantInfo."""
        for request_id, want in list(self._metadata_expect.items()):
            ok = True
            if want["metadata"] is not None and self.metadata != want["metadata"]:
                ok = False
            if want["name"] is not None and self.name != want["name"]:
                ok = False
            attrs = want["attributes"]
            if attrs:
                current = self.attributes
                for k, v in attrs.items():
                    if (v == "" and k in current) or (v != "" and current.get(k) != v):
                        ok = False
            if ok:
                fut = self._request_waiters.get(request_id)
                if fut is not None and not fut.done():
                    fut.set_result((rtc_pb.RequestResponse.OK, ""))
                self._metadata_expect.pop(request_id, None)

    # ---------------------------------------------------------------- tracks

    async def publish_track(
        self, track: LocalTrack, options: TrackPublishOptions | None = None
    ) -> LocalTrackPublication:
        """Publish a LocalAudioTrack / LocalVideoTrack; returns its publication."""
        options = options or TrackPublishOptions()
        engine = self._room._live_engine()
        if engine is None or engine.publisher is None:
            raise PublishTrackError("cannot publish a track: not connected")
        if not isinstance(track, (LocalAudioTrack, LocalVideoTrack)):
            raise PublishTrackError("publish_track needs a LocalAudioTrack or LocalVideoTrack")
        for pub in self._track_publications.values():
            if pub.track is track:
                raise PublishTrackError("this track is already published")
        options_check.check_publish_options(options,
                                            is_video=track.kind == TrackKind.KIND_VIDEO)
        encryption = self._room._e2ee_encryption()
        options = _without_red_when_encrypted(options, encryption)
        req = add_track_request(track, options, encryption=encryption)
        info = await engine.publishing.request(req)
        track._configure(options)
        self._room._e2ee_attach_local(track, info.sid)
        is_audio = track.kind == TrackKind.KIND_AUDIO
        negotiated = await engine.publishing.start_sending(
            track, info.sid, options.video_codec, red=bool(options.red) and is_audio)
        if negotiated:
            info.mime_type = negotiated
        elif not info.mime_type:
            from .engine.publishing import default_mime

            info.mime_type = default_mime(track.kind == TrackKind.KIND_VIDEO,
                                          options.video_codec)
        pub = LocalTrackPublication(info, track)
        pub._options = options
        self._track_publications[info.sid] = pub
        track._set_sid(info.sid)
        track._on_mute_changed = lambda muted, sid=info.sid: self._mute_changed(sid, muted)
        self._room.emit("local_track_published", pub, track)
        self._room._e2ee_status(self)
        if info.sid in self._early_subscribed:
            self._early_subscribed.discard(info.sid)
            self._track_subscribed(info.sid)
        return pub

    async def _republish(self, engine: RtcEngine) -> None:
        """After a full reconnect: publish every track again on ``engine`` (new sids,
        same publication objects) and emit ``local_track_republished(publication,
        previous_sid)`` for each. A track the new session refuses is unpublished."""
        for old_sid, pub in list(self._track_publications.items()):
            if not isinstance(pub, LocalTrackPublication):
                continue
            track = pub.track
            options = pub._options or TrackPublishOptions()
            if not isinstance(track, (LocalAudioTrack, LocalVideoTrack)):
                continue
            track._close()  # a fresh aiortc track: the old one ended with its PC
            try:
                encryption = self._room._e2ee_encryption()
                options = _without_red_when_encrypted(options, encryption)
                info = await engine.publishing.request(
                    add_track_request(track, options, encryption=encryption))
                track._configure(options)
                self._room._e2ee_attach_local(track, info.sid, old_sid)
                negotiated = await engine.publishing.start_sending(track, info.sid,
                                                                   options.video_codec)
            except PublishTrackError as exc:
                logger.warning("republishing track %s failed: %s", old_sid, exc.message)
                del self._track_publications[old_sid]
                track._on_mute_changed = None
                self._room.emit("local_track_unpublished", pub)
                pub._track = None
                pub._unpublished()
                continue
            info.mime_type = negotiated or pub._info.mime_type or info.mime_type
            del self._track_publications[old_sid]
            pub._update_info(info)
            self._track_publications[info.sid] = pub
            track._set_sid(info.sid)
            track._on_mute_changed = lambda muted, sid=info.sid: self._mute_changed(sid, muted)
            if track.muted:
                engine.session.mute_track(info.sid, True)
                engine.send_signal()
            self._room.emit("local_track_republished", pub, old_sid)

    async def unpublish_track(self, track_sid: str) -> None:
        """Stop publishing the track with ``track_sid``."""
        await self._unpublish(track_sid)

    async def _unpublish(self, track_sid: str, negotiate: bool = True) -> None:
        engine = self._room._live_engine(closed_ok=True)
        if engine is None:
            raise UnpublishTrackError("cannot unpublish: not connected")
        pub = self._track_publications.pop(track_sid, None)
        if not isinstance(pub, LocalTrackPublication):
            raise UnpublishTrackError(f"no published track with sid {track_sid}")
        engine.publishing.stop_sending(track_sid)
        self._room._e2ee_detach(track_sid)
        track = pub.track
        if track is not None:
            track._on_mute_changed = None
            try:
                track._attach_sender(None)
            except Exception:
                logger.debug("detaching the track from its sender failed", exc_info=True)
        self._room.emit("local_track_unpublished", pub)
        self._room._e2ee_status(self)
        pub._track = None
        pub._unpublished()
        if track is not None:
            self._room._close_track(track)
        if negotiate and not engine.closed:
            try:
                await engine.negotiate_publisher()
            except Exception as exc:
                raise UnpublishTrackError(f"renegotiation after unpublish failed: {exc}") from exc

    def _mute_changed(self, track_sid: str, muted: bool) -> None:
        """A published track was muted or unmuted locally: tell the server and the user."""
        pub = self._track_publications.get(track_sid)
        if pub is None:
            return
        engine = self._room._live_engine()
        if engine is not None:
            engine.session.mute_track(track_sid, muted)
            engine.send_signal()
        if pub._info.muted != muted:
            pub._info.muted = muted
            self._room.emit("track_muted" if muted else "track_unmuted", self, pub)

    def _track_subscribed(self, track_sid: str) -> None:
        """A remote participant subscribed to one of our tracks."""
        pub = self._track_publications.get(track_sid)
        if pub is None:
            # may arrive before publish_track finished its negotiation
            self._early_subscribed.add(track_sid)
            return
        if isinstance(pub, LocalTrackPublication):
            first = not pub._first_subscription.done()
            pub._resolve_subscription()
            if first and pub.track is not None:
                self._room.emit("local_track_subscribed", pub.track)

    def _session_ended(self, reason: int) -> None:
        """The session is over: pending requests fail, publications end, tracks close."""
        for fut in self._request_waiters.values():
            if not fut.done():
                fut.set_exception(SignalError("disconnected"))
                fut.exception()
        self._request_waiters.clear()
        try:
            self._disconnect_reason = DisconnectReason(reason)
        except ValueError:
            self._disconnect_reason = DisconnectReason.UNKNOWN_REASON
        for pub in list(self._track_publications.values()):
            if isinstance(pub, LocalTrackPublication):
                pub._unpublished()
                track = pub.track
                if track is not None:
                    track._on_mute_changed = None
                    self._room._close_track(track)


def _without_red_when_encrypted(options: TrackPublishOptions, encryption: int
                                ) -> TrackPublishOptions:
    """With end-to-end encryption RED is not used (as livekit-client): reported."""
    if encryption and options.red:
        logger.warning("TrackPublishOptions.red is not used with end-to-end encryption; "
                       "the track is published without RED")
        return dataclasses.replace(options, red=False)
    return options


def _simulcast_layers(track: PublishableTrack, options: TrackPublishOptions, width: int,
                      height: int) -> list[models_pb.VideoLayer]:
    """The layers a simulcast video track declares (none for one layer)."""
    if not options.simulcast:
        return []
    if not hasattr(track._rtc_track, "simulcast_specs"):
        logger.warning("TrackPublishOptions.simulcast=True: an EncodedVideoSource track is "
                       "sent as the application encodes it, in one layer; "
                       "publication.simulcasted is False")
        return []
    from .media import codecs, simulcast_layers

    specs = codecs.simulcast_specs(codecs.video_config(options), width, height)
    if not specs:
        logger.info("TrackPublishOptions.simulcast=True: %dx%d is too small for a second "
                    "layer (as the official SDK, one layer is sent)", width, height)
    return simulcast_layers.video_layers(specs)


def add_track_request(track: PublishableTrack, options: TrackPublishOptions, *,
                      encryption: int = 0) -> rtc_pb.AddTrackRequest:
    """The AddTrackRequest announcing ``track`` with ``options`` (``encryption``: an
    ``Encryption.Type``, GCM when the room encrypts end to end)."""
    is_video = track.kind == TrackKind.KIND_VIDEO
    cid = track._rtc_track.id
    req = rtc_pb.AddTrackRequest(
        cid=cid, name=track.name or "",
        type=models_pb.TrackType.VIDEO if is_video else models_pb.TrackType.AUDIO,
        source=source_to_proto(int(options.source)),  # type: ignore[arg-type]
        muted=bool(track.muted),
        disable_red=is_video or not options.red,
        stream=options.stream or "",
        encryption=encryption,  # type: ignore[arg-type]
    )
    if is_video:
        w, h = track._dimensions()
        req.width, req.height = w, h
        codec_name = "h264" if options.video_codec == VideoCodec.H264 else "vp8"
        codec = rtc_pb.SimulcastCodec(codec=codec_name, cid=cid)
        layers = _simulcast_layers(track, options, w, h)
        if layers:
            req.layers.extend(layers)
            codec.layers.extend(layers)
        req.simulcast_codecs.append(codec)
    else:
        features = []
        stereo = track._num_channels() >= 2
        req.disable_dtx = not options.dtx
        req.stereo = stereo
        if stereo:
            features.append(int(AudioTrackFeature.TF_STEREO))
        if not options.dtx:
            features.append(int(AudioTrackFeature.TF_NO_DTX))
        if options.preconnect_buffer:
            features.append(int(AudioTrackFeature.TF_PRECONNECT_BUFFER))
        req.audio_features.extend(features)  # type: ignore[arg-type]
    return req
