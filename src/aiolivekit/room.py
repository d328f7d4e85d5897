"""Room: the public entry point. Connects the engine and turns its events into user events.

All user-visible state (participants, publications, tracks, room info) is changed here, in
the same step as the event that announces it, so what a handler reads is consistent with
the events already emitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from livekit.protocol import models as models_pb, rtc as rtc_pb

from . import options_check
from .data import packets
from .data.api import RoomDataMixin
from .data.dispatch import DataManager
from .engine import engine as eng, signal as sig
from .errors import (
    ConnectError,
    PublishDataError,
    PublishTrackError,
    SignalError,
    UnpublishTrackError,
)
from .events import EventEmitter
from .media.stream_base import publications_changed
from .participant import LocalParticipant, Participant, RemoteParticipant
from .track_publication import (
    LocalTrackPublication,
    RemoteTrackPublication,
    source_to_proto,
)
from .types import (
    AudioTrackFeature,
    ConnectionQuality,
    ConnectionState,
    DataPacket,
    DataPacketKind,
    DisconnectReason,
    RoomOptions,
    StreamState,
    TrackKind,
    TrackPublishOptions,
    VideoCodec,
)

__all__ = ["EventTypes", "Room"]

logger = logging.getLogger(__name__)

EventTypes = Literal[
    "participant_connected", "participant_disconnected", "participant_active",
    "local_track_published", "local_track_unpublished", "local_track_subscribed",
    "track_published", "track_unpublished", "track_subscribed", "track_unsubscribed",
    "track_subscription_failed", "track_muted", "track_unmuted", "active_speakers_changed",
    "room_metadata_changed", "participant_metadata_changed", "participant_name_changed",
    "participant_attributes_changed", "connection_quality_changed",
    "participant_permissions_changed", "data_received", "sip_dtmf_received",
    "transcription_received", "e2ee_state_changed", "connection_state_changed", "connected",
    "disconnected", "reconnecting", "reconnected", "room_updated", "token_refreshed",
]

REQUEST_TIMEOUT = 5.0
PUBLISH_TIMEOUT = 10.0
PENDING_TRACK_TTL = 5.0
_NOT_ALLOWED = rtc_pb.RequestResponse.NOT_ALLOWED


_REFUSAL_HINTS: dict[int, str] = {
    rtc_pb.RequestResponse.NOT_ALLOWED: (
        "; publishing is not allowed for this participant or this track source "
        "(token grants canPublish / canPublishSources)"),
    rtc_pb.RequestResponse.LIMIT_EXCEEDED: "; too many tracks pending or published",
    rtc_pb.RequestResponse.UNSUPPORTED_TYPE: "; unsupported track type",
}


class _DataSender:
    """The engine side of the data layer's ``DataSender`` protocol."""

    def __init__(self, room: Room) -> None:
        self._room = room

    @property
    def local_identity(self) -> str:
        lp = self._room._local
        return lp.identity if lp is not None else ""

    async def send_packet(self, packet: models_pb.DataPacket, *, reliable: bool = True) -> None:
        await self._room._send_packet(packet, reliable=reliable)

    def remote_client_protocol(self, identity: str) -> int | None:
        p = self._room._remote.get(identity)
        return None if p is None else int(p._info.client_protocol)

    def remote_identities(self) -> list[str]:
        return list(self._room._remote)

    def remote_capabilities(self, identity: str) -> list[int] | None:
        p = self._room._remote.get(identity)
        return None if p is None else [int(c) for c in p._info.capabilities]


class Room(RoomDataMixin, EventEmitter[EventTypes]):
    """A LiveKit room: ``await room.connect(url, token)``, then events and participants."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """A room to :meth:`connect` to; ``loop``, when given, must be the event loop
        that later awaits :meth:`connect` (``ValueError`` otherwise)."""
        EventEmitter.__init__(self)
        self._loop = loop
        self._engine: eng.RtcEngine | None = None
        self._state = ConnectionState.CONN_DISCONNECTED
        self._info = models_pb.Room()
        self._local: LocalParticipant | None = None
        self._remote: dict[str, RemoteParticipant] = {}
        self._by_sid: dict[str, RemoteParticipant] = {}
        self._sid_waiters: list[asyncio.Future[str]] = []
        self._connecting = False
        self._encoder = packets.PacketEncoder()
        self._dup = packets.DuplicateFilter()
        self._request_waiters: dict[int, asyncio.Future[tuple[int, str]]] = {}
        self._metadata_expect: dict[int, dict[str, Any]] = {}
        self._publish_waiters: dict[str, asyncio.Future[Any]] = {}
        self._pending_tracks: dict[str, tuple[float, eng.TrackReceived]] = {}
        self._transceivers: dict[str, Any] = {}
        self._early_subscribed: set[str] = set()
        self._active_speakers: list[Participant] = []
        self._token = ""
        self._options = RoomOptions()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._data = DataManager(emit=self.emit, lookup_participant=self._participant_by_identity)

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def metadata(self) -> str:
        return self._info.metadata

    @property
    def sid(self) -> Any:
        """Awaitable: ``await room.sid`` (waits for the server's room sid while connecting)."""
        return self._get_sid()

    async def _get_sid(self) -> str:
        if not self._connecting and self._state == ConnectionState.CONN_DISCONNECTED:
            raise RuntimeError("cannot get sid of a disconnected room")
        if self._info.sid:
            return self._info.sid
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._sid_waiters.append(fut)
        return await asyncio.shield(fut)

    def _resolve_sid(self) -> None:
        if self._info.sid:
            for fut in self._sid_waiters:
                if not fut.done():
                    fut.set_result(self._info.sid)
            self._sid_waiters.clear()

    def _fail_sid_waiters(self) -> None:
        for fut in self._sid_waiters:
            if not fut.done():
                fut.set_exception(RuntimeError("room disconnected before its sid was known"))
                fut.exception()
        self._sid_waiters.clear()

    @property
    def connection_state(self) -> ConnectionState:
        return self._state

    def isconnected(self) -> bool:
        return self._engine is not None and self._state != ConnectionState.CONN_DISCONNECTED

    @property
    def local_participant(self) -> LocalParticipant:
        if self._local is None:
            raise Exception("cannot access local participant before connecting")
        return self._local

    @property
    def remote_participants(self) -> Mapping[str, RemoteParticipant]:
        return self._remote

    @property
    def num_participants(self) -> int:
        return int(self._info.num_participants)

    @property
    def num_publishers(self) -> int:
        return int(self._info.num_publishers)

    @property
    def creation_time(self) -> datetime:
        ms = self._info.creation_time_ms or self._info.creation_time * 1000
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)

    @property
    def is_recording(self) -> bool:
        return bool(self._info.active_recording)

    @property
    def departure_timeout(self) -> float:
        return float(self._info.departure_timeout)

    @property
    def empty_timeout(self) -> float:
        return float(self._info.empty_timeout)

    async def get_rtc_stats(self) -> Any:
        """Stats of both peer connections (``.publisher_stats``, ``.subscriber_stats``: lists
        of aiortc stats objects, each with ``.type``); RuntimeError when not connected."""
        engine = self._engine
        if engine is None or not self.isconnected():
            raise RuntimeError("the room isn't connected")
        out: dict[str, list[Any]] = {}
        for name, pt in (("publisher", engine.publisher), ("subscriber", engine.subscriber)):
            if pt is None:
                out[name] = []
                continue
            report = await asyncio.wait_for(pt.pc.getStats(), 5.0)
            out[name] = list(report.values())
        return _RtcStats(out["publisher"], out["subscriber"])

    # ------------------------------------------------------------------ connect

    async def connect(self, url: str, token: str, options: RoomOptions | None = None) -> None:
        """Join the room at ``url`` with ``token``.

        Returns once signalling is up and the primary peer connection is connected (the
        publisher PC of a subscriber-primary join connects on first publish); participants
        already in the room are then in :attr:`remote_participants`. Raises
        :class:`ConnectError` (``status``/``reason`` from the server, or ``signal_timeout``
        after ``options.connect_timeout`` (10 s) / ``ice_timeout`` after
        ``options.ice_timeout`` (15 s)). Cancelling it closes everything it opened.
        """
        options = options if options is not None else RoomOptions()
        if self._engine is not None and self._state != ConnectionState.CONN_DISCONNECTED:
            raise ConnectError("already connected", reason="bad_request")
        if self._connecting:
            raise ConnectError("already connecting", reason="bad_request")
        options_check.check_loop(self._loop, "Room")
        options_check.check_room_options(options)
        self._reset_state()
        self._data.set_stream_payload_limit(options_check.stream_payload_limit(options))
        self._connecting = True
        self._options = options
        self._token = token
        engine = eng.RtcEngine(self._on_engine_event)
        self._engine = engine
        try:
            await engine.connect(url, token, options)
        except BaseException:
            self._abandon_connect()
            raise
        self._connecting = False
        if engine.closed:
            # the server ended the session while we were finishing the connect
            self._abandon_connect()
            raise ConnectError("the session ended while connecting", reason="leave")
        self._data.attach(_DataSender(self))
        self._set_state(ConnectionState.CONN_CONNECTED)
        self.emit("connected")

    def _abandon_connect(self) -> None:
        self._connecting = False
        self._engine = None
        self._fail_sid_waiters()
        self._close_remote_tracks()
        self._data.close()
        self._local = None
        self._remote = {}
        self._by_sid = {}

    def _reset_state(self) -> None:
        self._info = models_pb.Room()
        self._local = None
        self._remote = {}
        self._by_sid = {}
        self._encoder = packets.PacketEncoder()
        self._dup = packets.DuplicateFilter()
        self._pending_tracks.clear()
        self._transceivers.clear()
        self._early_subscribed.clear()
        self._active_speakers = []

    def _set_state(self, state: ConnectionState) -> None:
        if state != self._state:
            self._state = state
            self.emit("connection_state_changed", state)

    async def disconnect(self, *, reason: DisconnectReason = DisconnectReason.CLIENT_INITIATED) -> None:
        """Leave the room (no-op when not connected)."""
        engine = self._engine
        if engine is None:
            return
        await engine.close(int(reason))
        self._finish(int(reason))

    def _finish(self, reason: int) -> None:
        """The session is over: clean up and emit the disconnect events once."""
        if self._engine is None:
            return
        self._engine = None
        self._data.close()
        self._fail_sid_waiters()
        for fut in list(self._request_waiters.values()) + list(self._publish_waiters.values()):
            if not fut.done():
                fut.set_exception(SignalError("disconnected"))
                fut.exception()
        self._request_waiters.clear()
        self._publish_waiters.clear()
        self._close_remote_tracks()
        if self._local is not None:
            try:
                self._local._disconnect_reason = DisconnectReason(reason)
            except ValueError:
                self._local._disconnect_reason = DisconnectReason.UNKNOWN_REASON
            for pub in list(self._local._track_publications.values()):
                if isinstance(pub, LocalTrackPublication):
                    pub._unpublished()
                    track = pub.track
                    if track is not None:
                        track._on_mute_changed = None
                        self._close_track(track)
        was_connected = self._state != ConnectionState.CONN_DISCONNECTED
        self._state = ConnectionState.CONN_DISCONNECTED
        if was_connected:
            self.emit("connection_state_changed", ConnectionState.CONN_DISCONNECTED)
            try:
                self.emit("disconnected", DisconnectReason(reason))
            except ValueError:
                self.emit("disconnected", DisconnectReason.UNKNOWN_REASON)

    def _close_remote_tracks(self) -> None:
        for p in self._remote.values():
            for pub in p._track_publications.values():
                track = pub._track
                if track is not None:
                    pub._track = None
                    if isinstance(pub, RemoteTrackPublication):
                        pub._subscribed = False
                    self._close_track(track)

    def _close_track(self, track: Any) -> None:
        closer = getattr(track, "_close", None)
        if closer is None:
            return
        try:
            result = closer()
        except Exception:
            logger.exception("closing a remote track failed")
            return
        if asyncio.iscoroutine(result):
            self._spawn(result)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ engine events

    def _on_engine_event(self, ev: Any) -> None:
        handler = getattr(self, "_ev_" + type(ev).__name__, None)
        if handler is not None:
            handler(ev)

    def _ev_Joined(self, ev: sig.Joined) -> None:
        join = ev.join
        self._info.CopyFrom(join.room)
        self._local = LocalParticipant(join.participant, self)
        self._encoder = packets.PacketEncoder(identity=join.participant.identity,
                                              sid=join.participant.sid)
        for info in join.other_participants:
            p = self._add_remote(info)
            for t in info.tracks:
                self._add_publication(p, t)
        self._resolve_sid()

    def _add_remote(self, info: models_pb.ParticipantInfo) -> RemoteParticipant:
        p = RemoteParticipant(info)
        self._remote[info.identity] = p
        self._by_sid[info.sid] = p
        return p

    def _add_publication(self, p: RemoteParticipant, info: models_pb.TrackInfo
                         ) -> RemoteTrackPublication:
        pub = RemoteTrackPublication(info, p.sid, self._set_subscribed)
        p._track_publications[info.sid] = pub
        return pub

    def _participant(self, sid: str, local: bool = False) -> Participant | None:
        if local:
            return self._local
        return self._by_sid.get(sid)

    def _ev_ParticipantJoined(self, ev: sig.ParticipantJoined) -> None:
        p = self._add_remote(ev.info)
        # publications are announced by the TrackPublished events that follow
        self.emit("participant_connected", p)

    def _ev_ParticipantLeft(self, ev: sig.ParticipantLeft) -> None:
        p = self._by_sid.pop(ev.info.sid, None)
        if p is None:
            return
        if self._remote.get(p.identity) is p:
            del self._remote[p.identity]
        p._update_info(ev.info)
        try:
            p._disconnect_reason = DisconnectReason(ev.reason)
        except ValueError:
            p._disconnect_reason = DisconnectReason.UNKNOWN_REASON
        self._dup.forget(p.sid)
        self._active_speakers = [s for s in self._active_speakers if s is not p]
        for key in [k for k, (_, t) in self._pending_tracks.items() if t.participant_sid == p.sid]:
            self._pending_tracks.pop(key, None)
        self._data.on_participant_disconnected(p.identity)
        self.emit("participant_disconnected", p)
        publications_changed(p)

    def _refresh_info(self, sid: str, local: bool) -> Participant | None:
        engine = self._engine
        p = self._participant(sid, local)
        if p is None or engine is None:
            return p
        info = engine.session.local if local else engine.session.participants.get(sid)
        if info is not None:
            p._update_info(info)
        return p

    def _ev_ParticipantMetadataChanged(self, ev: sig.ParticipantMetadataChanged) -> None:
        p = self._refresh_info(ev.sid, ev.local)
        if p is not None:
            self.emit("participant_metadata_changed", p, ev.old, ev.new)
            self._check_metadata_waiters()

    def _ev_ParticipantNameChanged(self, ev: sig.ParticipantNameChanged) -> None:
        p = self._refresh_info(ev.sid, ev.local)
        if p is not None:
            self.emit("participant_name_changed", p, ev.old, ev.new)
            self._check_metadata_waiters()

    def _ev_ParticipantAttributesChanged(self, ev: sig.ParticipantAttributesChanged) -> None:
        p = self._refresh_info(ev.sid, ev.local)
        if p is not None:
            self.emit("participant_attributes_changed", dict(ev.changed), p)
            self._check_metadata_waiters()

    def _ev_ParticipantPermissionsChanged(self, ev: sig.ParticipantPermissionsChanged) -> None:
        p = self._refresh_info(ev.sid, ev.local)
        if p is not None:
            self.emit("participant_permissions_changed", p, p.permissions)

    def _ev_ParticipantActive(self, ev: sig.ParticipantActive) -> None:
        p = self._refresh_info(ev.sid, False)
        if p is not None:
            self.emit("participant_active", p)

    def _ev_TrackPublished(self, ev: sig.TrackPublished) -> None:
        p = self._by_sid.get(ev.participant_sid)
        if p is None:
            return
        self._refresh_info(ev.participant_sid, False)
        pub = self._add_publication(p, ev.track)
        self.emit("track_published", pub, p)
        pending = self._pending_tracks.pop(ev.track.sid, None)
        if pending is not None:
            self._attach_remote_track(pending[1])

    def _ev_TrackUnpublished(self, ev: sig.TrackUnpublished) -> None:
        p = self._by_sid.get(ev.participant_sid)
        if p is None:
            return
        pub = p._track_publications.get(ev.track.sid)
        if not isinstance(pub, RemoteTrackPublication):
            return
        self._unsubscribe_publication(p, pub)
        del p._track_publications[ev.track.sid]
        self._refresh_info(ev.participant_sid, False)
        self.emit("track_unpublished", pub, p)
        publications_changed(p)

    def _unsubscribe_publication(self, p: RemoteParticipant, pub: RemoteTrackPublication) -> None:
        track = pub._track
        pub._desired = None
        if track is None:
            pub._subscribed = False
            return
        pub._track = None
        pub._subscribed = False
        self.emit("track_unsubscribed", track, pub, p)
        publications_changed(p)
        self._close_track(track)

    def _ev_TrackMuted(self, ev: sig.TrackMuted) -> None:
        p = self._participant(ev.participant_sid, ev.local)
        if p is None:
            return
        pub = p._track_publications.get(ev.track.sid)
        if pub is None:
            return
        if ev.local and pub.muted == ev.muted:
            pub._update_info(ev.track) if pub.mime_type else None
            return
        pub._update_info(ev.track)
        track = pub._track
        if track is not None and not ev.local:
            setter = getattr(track, "_set_muted", None)
            if setter is not None:
                setter(ev.muted)
        self.emit("track_muted" if ev.muted else "track_unmuted", p, pub)

    def _ev_TrackUpdated(self, ev: sig.TrackUpdated) -> None:
        p = self._participant(ev.participant_sid, ev.local)
        if p is None:
            return
        pub = p._track_publications.get(ev.track.sid)
        if pub is not None:
            mime = pub.mime_type
            pub._update_info(ev.track)
            if ev.local and not pub._info.mime_type and mime:
                pub._info.mime_type = mime

    def _ev_RoomUpdated(self, ev: sig.RoomUpdated) -> None:
        old_meta = self._info.metadata
        self._info.CopyFrom(ev.new)
        self._resolve_sid()
        if ev.new.metadata != old_meta:
            self.emit("room_metadata_changed", old_meta, ev.new.metadata)
        self.emit("room_updated")

    def _ev_RequestAnswered(self, ev: sig.RequestAnswered) -> None:
        fut = self._request_waiters.pop(ev.request_id, None)
        if fut is not None and not fut.done():
            fut.set_result((ev.reason, ev.message))
        self._metadata_expect.pop(ev.request_id, None)
        if ev.kind == "add_track" and ev.cid and ev.reason != rtc_pb.RequestResponse.OK:
            waiter = self._publish_waiters.pop(ev.cid, None)
            if waiter is not None and not waiter.done():
                name = rtc_pb.RequestResponse.Reason.Name(ev.reason)
                hint = _REFUSAL_HINTS.get(ev.reason, "")
                detail = f": {ev.message}" if ev.message else ""
                waiter.set_exception(PublishTrackError(
                    f"server refused the track ({name}){detail}{hint}"))

    def _ev_TrackPublishedAck(self, ev: sig.TrackPublishedAck) -> None:
        waiter = self._publish_waiters.pop(ev.cid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(ev.track)

    def _ev_TrackUnpublishedByServer(self, ev: sig.TrackUnpublishedByServer) -> None:
        if self._local is not None and ev.track_sid in self._local._track_publications:
            self._spawn(self._unpublish_track(ev.track_sid, negotiate=True))

    def _ev_LocalTrackSubscribed(self, ev: sig.LocalTrackSubscribed) -> None:
        if self._local is None:
            return
        pub = self._local._track_publications.get(ev.track_sid)
        if pub is None:
            # may arrive before publish_track finished its negotiation
            self._early_subscribed.add(ev.track_sid)
            return
        if isinstance(pub, LocalTrackPublication):
            first = not pub._first_subscription.done()
            pub._resolve_subscription()
            if first and pub.track is not None:
                self.emit("local_track_subscribed", pub.track)

    def _ev_SubscriptionFailed(self, ev: sig.SubscriptionFailed) -> None:
        for p in self._remote.values():
            if ev.track_sid in p._track_publications:
                self.emit("track_subscription_failed", p, ev.track_sid, ev.error)
                return

    def _ev_MuteRequested(self, ev: sig.MuteRequested) -> None:
        if self._local is None:
            return
        pub = self._local._track_publications.get(ev.track_sid)
        track = pub.track if pub is not None else None
        if track is not None:
            (track.mute if ev.muted else track.unmute)()

    def _ev_StreamStateChanged(self, ev: sig.StreamStateChanged) -> None:
        for p in self._remote.values():
            for sid, state in ev.states.items():
                pub = p._track_publications.get(sid)
                track = pub._track if pub is not None else None
                setter = getattr(track, "_set_stream_state", None)
                if setter is not None:
                    # proto ACTIVE=0/PAUSED=1 -> StreamState ACTIVE=1/PAUSED=2
                    setter(StreamState.STATE_PAUSED if state == 1 else StreamState.STATE_ACTIVE)

    def _ev_SpeakersChanged(self, ev: sig.SpeakersChanged) -> None:
        current = {id(p): p for p in self._active_speakers}
        order = list(self._active_speakers)
        for s in ev.speakers:
            p = self._local if self._local is not None and s.sid == self._local.sid \
                else self._by_sid.get(s.sid)
            if p is None:
                continue
            if s.active and id(p) not in current:
                order.append(p)
                current[id(p)] = p
            elif not s.active and id(p) in current:
                order = [x for x in order if x is not p]
                del current[id(p)]
        self._active_speakers = order
        self.emit("active_speakers_changed", list(order))

    def _ev_ConnectionQualityChanged(self, ev: sig.ConnectionQualityChanged) -> None:
        for u in ev.updates:
            p = self._local if self._local is not None and u.participant_sid == self._local.sid \
                else self._by_sid.get(u.participant_sid)
            if p is None:
                continue
            try:
                q = ConnectionQuality(int(u.quality))
            except ValueError:
                continue
            p._connection_quality = q
            self.emit("connection_quality_changed", p, q)

    def _ev_TokenRefreshed(self, ev: sig.TokenRefreshed) -> None:
        self._token = ev.token
        self.emit("token_refreshed")

    def _ev_EngineClosed(self, ev: eng.EngineClosed) -> None:
        if self._connecting:
            return  # connect() reports the failure itself
        self._finish(ev.reason)

    # ------------------------------------------------------------------ data

    def _participant_by_identity(self, identity: str) -> Participant | None:
        """The remote participant with ``identity``, or the local one for our own identity."""
        remote = self._remote.get(identity)
        if remote is not None:
            return remote
        local = self._local
        return local if local is not None and local.identity == identity else None

    def _ev_DataReceived(self, ev: eng.DataReceived) -> None:
        try:
            packet = packets.decode_packet(ev.data)
        except ValueError as exc:
            logger.warning("%s", exc)
            return
        if not self._dup.accept(packet, reliable=ev.reliable):
            return
        which = packet.WhichOneof("value")
        if which == "user":
            user = packet.user
            identity = packet.participant_identity or user.participant_identity
            participant = self._remote.get(identity) if identity else None
            if participant is None and packet.participant_sid:
                participant = self._by_sid.get(packet.participant_sid)
            topic = user.topic if user.HasField("topic") else None
            kind = DataPacketKind.KIND_RELIABLE if ev.reliable else DataPacketKind.KIND_LOSSY
            self.emit("data_received", DataPacket(data=bytes(user.payload), kind=kind,
                                                  participant=participant, topic=topic))
        elif which is not None:
            try:
                self._data.handle_packet(packet)
            except Exception:
                logger.exception("data layer failed on a %s packet", which)

    async def _send_packet(self, packet: models_pb.DataPacket, *, reliable: bool) -> None:
        engine = self._engine
        if engine is None or engine.closed or self._local is None:
            raise PublishDataError("cannot send data: not connected")
        encoder = self._encoder

        def encode(reliable_max: int) -> bytes:
            # run by the engine right before sending (in call order): the size limit is
            # the one the server advertised once the (lazily connected) publisher is up
            return encoder.encode(packet, reliable=reliable, reliable_max=reliable_max)
        await engine.send_data(encode, reliable=reliable)

    async def _publish_user_data(self, payload: bytes, *, reliable: bool,
                                 destination_identities: list[str], topic: str) -> None:
        packet = self._encoder.user_packet(payload, topic=topic,
                                           destination_identities=destination_identities)
        await self._send_packet(packet, reliable=reliable)

    # ------------------------------------------------------------------ local participant info

    async def _update_own_info(self, *, metadata: str | None = None, name: str | None = None,
                               attributes: dict[str, str] | None = None) -> None:
        engine = self._engine
        if engine is None or engine.closed:
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

    def _check_metadata_waiters(self) -> None:
        """Resolve pending updates whose values now show in our own ParticipantInfo."""
        lp = self._local
        if lp is None:
            return
        for request_id, want in list(self._metadata_expect.items()):
            ok = True
            if want["metadata"] is not None and lp.metadata != want["metadata"]:
                ok = False
            if want["name"] is not None and lp.name != want["name"]:
                ok = False
            attrs = want["attributes"]
            if attrs:
                current = lp.attributes
                for k, v in attrs.items():
                    if (v == "" and k in current) or (v != "" and current.get(k) != v):
                        ok = False
            if ok:
                fut = self._request_waiters.get(request_id)
                if fut is not None and not fut.done():
                    fut.set_result((rtc_pb.RequestResponse.OK, ""))
                self._metadata_expect.pop(request_id, None)

    def _send_subscription_permission(self, perm: rtc_pb.SubscriptionPermission) -> None:
        engine = self._engine
        if engine is None or engine.closed:
            raise RuntimeError("the room is not connected")
        engine.session.subscription_permission(perm)
        engine.send_signal()

    # ------------------------------------------------------------------ remote media

    def _set_subscribed(self, pub: RemoteTrackPublication, subscribed: bool) -> None:
        engine = self._engine
        if engine is None or engine.closed:
            raise RuntimeError("the room is not connected")
        engine.session.update_subscription([pub.sid], subscribed, pub._participant_sid)
        engine.send_signal()
        if not subscribed:
            # the server removes the m-line; report it now like the official SDK
            p = self._by_sid.get(pub._participant_sid)
            if p is not None and pub._track is not None:
                self._unsubscribe_publication(p, pub)
            pub._desired = False

    def _ev_TrackReceived(self, ev: eng.TrackReceived) -> None:
        self._expire_pending()
        p = self._by_sid.get(ev.participant_sid)
        if p is None:
            p = next((x for x in self._remote.values() if ev.track_sid in x._track_publications),
                     None)
        if p is None or ev.track_sid not in p._track_publications:
            self._pending_tracks[ev.track_sid] = (time.monotonic(), ev)
            return
        self._attach_remote_track(ev)

    def _expire_pending(self) -> None:
        now = time.monotonic()
        for key, (t, _) in list(self._pending_tracks.items()):
            if now - t > PENDING_TRACK_TTL:
                del self._pending_tracks[key]
                logger.warning("dropping remote track %s: no publication arrived", key)

    def _attach_remote_track(self, ev: eng.TrackReceived) -> None:
        p = self._by_sid.get(ev.participant_sid)
        if p is None:
            p = next((x for x in self._remote.values() if ev.track_sid in x._track_publications),
                     None)
        if p is None:
            return
        pub = p._track_publications.get(ev.track_sid)
        if not isinstance(pub, RemoteTrackPublication):
            return
        if pub._track is not None:
            old = pub._track
            pub._track = None
            self.emit("track_unsubscribed", old, pub, p)
            publications_changed(p)
            self._close_track(old)
        try:
            from .track import RemoteAudioTrack, RemoteVideoTrack
        except ImportError:
            logger.warning("remote media needs aiolivekit.track")
            return
        cls = RemoteAudioTrack if ev.track.kind == "audio" else RemoteVideoTrack
        try:
            track = cls._from_rtc(ev.track, sid=pub.sid, name=pub.name, receiver=ev.receiver)
        except Exception:
            logger.exception("wrapping a remote track failed")
            self.emit("track_subscription_failed", p, pub.sid, "could not wrap the track")
            return
        if pub.muted:
            setter = getattr(track, "_set_muted", None)
            if setter is not None:
                setter(True)
        pub._track = track
        track._set_room(self)
        pub._subscribed = True
        pub._desired = None
        self.emit("track_subscribed", track, pub, p)
        publications_changed(p)

    def _ev_TrackRemoved(self, ev: eng.TrackRemoved) -> None:
        for p in self._remote.values():
            pub = p._track_publications.get(ev.track_sid)
            if isinstance(pub, RemoteTrackPublication) and pub._track is not None:
                self._unsubscribe_publication(p, pub)
                return

    # ------------------------------------------------------------------ local media

    async def _publish_track(self, track: Any, options: TrackPublishOptions) -> LocalTrackPublication:
        engine = self._engine
        lp = self._local
        if engine is None or engine.closed or lp is None or engine.publisher is None:
            raise PublishTrackError("cannot publish a track: not connected")
        rtc_track = getattr(track, "_rtc_track", None)
        if rtc_track is None:
            raise PublishTrackError("publish_track needs a LocalAudioTrack or LocalVideoTrack")
        for pub in lp._track_publications.values():
            if pub.track is track:
                raise PublishTrackError("this track is already published")
        kind = getattr(track, "kind", None)
        is_video = (rtc_track.kind == "video") if kind is None else kind == TrackKind.KIND_VIDEO
        options_check.check_publish_options(options, is_video=is_video)
        cid = rtc_track.id
        req = rtc_pb.AddTrackRequest(
            cid=cid, name=getattr(track, "name", "") or "",
            type=models_pb.TrackType.VIDEO if is_video else models_pb.TrackType.AUDIO,
            source=source_to_proto(int(options.source)),  # type: ignore[arg-type]
            muted=bool(getattr(track, "muted", False)),
            disable_red=True,
            stream=options.stream or "",
            encryption=models_pb.Encryption.NONE,
        )
        if is_video:
            w, h = _track_dimensions(track)
            req.width, req.height = w, h
            codec_name = "h264" if options.video_codec == VideoCodec.H264 else "vp8"
            req.simulcast_codecs.append(rtc_pb.SimulcastCodec(codec=codec_name, cid=cid))
        else:
            features = []
            stereo = _track_channels(track) >= 2
            req.disable_dtx = not options.dtx
            req.stereo = stereo
            if stereo:
                features.append(int(AudioTrackFeature.TF_STEREO))
            if not options.dtx:
                features.append(int(AudioTrackFeature.TF_NO_DTX))
            if options.preconnect_buffer:
                features.append(int(AudioTrackFeature.TF_PRECONNECT_BUFFER))
            req.audio_features.extend(features)  # type: ignore[arg-type]
        fut: asyncio.Future[models_pb.TrackInfo] = asyncio.get_running_loop().create_future()
        self._publish_waiters[cid] = fut
        engine.session.add_track(req)
        engine.send_signal()
        try:
            info = await asyncio.wait_for(asyncio.shield(fut), PUBLISH_TIMEOUT)
        except asyncio.TimeoutError:
            raise PublishTrackError("the server did not acknowledge the track in time") from None
        except SignalError:
            raise PublishTrackError("disconnected while publishing") from None
        finally:
            self._publish_waiters.pop(cid, None)
        configure = getattr(track, "_configure", None)
        if configure is not None:
            configure(options)
        try:
            # a subscriber-primary join negotiates the publisher lazily: its first offer
            # carries the data channels only, the track comes in the renegotiation below
            await engine.ensure_publisher_negotiated()
        except ConnectError as exc:
            raise PublishTrackError(f"publisher negotiation failed: {exc.message}") from None
        try:
            transceiver = engine.publisher.pc.addTransceiver(rtc_track, direction="sendonly")
            _prefer_codec(transceiver, is_video, options.video_codec)
            attach = getattr(track, "_attach_sender", None)
            if attach is not None:
                attach(transceiver.sender)
            await engine.negotiate_publisher()
        except asyncio.TimeoutError:
            raise PublishTrackError("publisher negotiation timed out") from None
        except PublishTrackError:
            raise
        except Exception as exc:
            raise PublishTrackError(f"publishing failed: {exc}") from exc
        try:
            # the first publication connects a lazily negotiated publisher PC: wait for it,
            # so that frames captured once publish_track returns are sent, not dropped
            await engine.ensure_publisher_connected()
        except ConnectError as exc:
            raise PublishTrackError(f"publisher did not connect: {exc.message}") from None
        negotiated = _negotiated_mime(engine.publisher.last_remote_sdp, transceiver.mid)
        if negotiated:
            info.mime_type = negotiated
        elif not info.mime_type:
            info.mime_type = _mime_type(is_video, options.video_codec)
        pub = LocalTrackPublication(info, track)
        lp._track_publications[info.sid] = pub
        self._transceivers[info.sid] = transceiver
        set_sid = getattr(track, "_set_sid", None)
        if set_sid is not None:
            set_sid(info.sid)
        track._on_mute_changed = lambda muted, sid=info.sid: self._local_mute_changed(sid, muted)
        self.emit("local_track_published", pub, track)
        if info.sid in self._early_subscribed:
            self._early_subscribed.discard(info.sid)
            self._ev_LocalTrackSubscribed(sig.LocalTrackSubscribed(info.sid))
        return pub

    def _local_mute_changed(self, track_sid: str, muted: bool) -> None:
        engine = self._engine
        lp = self._local
        if lp is None:
            return
        pub = lp._track_publications.get(track_sid)
        if pub is None:
            return
        if engine is not None and not engine.closed:
            engine.session.mute_track(track_sid, muted)
            engine.send_signal()
        if pub._info.muted != muted:
            pub._info.muted = muted
            self.emit("track_muted" if muted else "track_unmuted", lp, pub)

    async def _unpublish_track(self, track_sid: str, negotiate: bool = True) -> None:
        engine = self._engine
        lp = self._local
        if lp is None or engine is None:
            raise UnpublishTrackError("cannot unpublish: not connected")
        pub = lp._track_publications.pop(track_sid, None)
        if not isinstance(pub, LocalTrackPublication):
            raise UnpublishTrackError(f"no published track with sid {track_sid}")
        transceiver = self._transceivers.pop(track_sid, None)
        track = pub.track
        if transceiver is not None:
            try:
                transceiver.sender.replaceTrack(None)
                transceiver.direction = "inactive"
            except Exception:
                logger.debug("removing sender failed", exc_info=True)
        if track is not None:
            track._on_mute_changed = None
            detach = getattr(track, "_attach_sender", None)
            if detach is not None:
                try:
                    detach(None)
                except Exception:
                    logger.debug("detaching the track from its sender failed", exc_info=True)
        self.emit("local_track_unpublished", pub)
        pub._track = None
        pub._unpublished()
        if track is not None:
            self._close_track(track)
        if negotiate and not engine.closed:
            try:
                await engine.negotiate_publisher()
            except Exception as exc:
                raise UnpublishTrackError(f"renegotiation after unpublish failed: {exc}") from exc


class _RtcStats:
    """``publisher_stats`` / ``subscriber_stats`` lists of aiortc stats objects."""

    def __init__(self, publisher: list[Any], subscriber: list[Any]) -> None:
        self.publisher_stats = publisher
        self.subscriber_stats = subscriber

    def __repr__(self) -> str:
        return (f"RtcStats(publisher_stats={len(self.publisher_stats)} entries, "
                f"subscriber_stats={len(self.subscriber_stats)} entries)")


def _track_dimensions(track: Any) -> tuple[int, int]:
    for obj in (track, getattr(track, "_source", None), getattr(track, "source", None)):
        if obj is None:
            continue
        w, h = getattr(obj, "width", 0), getattr(obj, "height", 0)
        if isinstance(w, int) and isinstance(h, int) and w and h:
            return w, h
    return 0, 0


def _track_channels(track: Any) -> int:
    for obj in (track, getattr(track, "_source", None), getattr(track, "source", None)):
        if obj is None:
            continue
        n = getattr(obj, "num_channels", None)
        if isinstance(n, int) and n > 0:
            return n
    return 1


def _negotiated_mime(answer_sdp: str, mid: str | None) -> str:
    """``kind/codec`` of the first codec the answer kept for ``mid`` (lower case)."""
    from .engine.sdp import parse_media_sections

    for section in parse_media_sections(answer_sdp):
        if section.mid == mid:
            for codec in section.codecs:
                if codec.lower() not in ("rtx", "red", "ulpfec", "flexfec-03"):
                    return f"{section.kind}/{codec}".lower()
    return ""


def _mime_type(is_video: bool, codec: int) -> str:
    if not is_video:
        return "audio/opus"
    return "video/h264" if codec == VideoCodec.H264 else "video/vp8"


def _prefer_codec(transceiver: Any, is_video: bool, codec: int) -> None:
    """Put the chosen video codec first (aiortc supports VP8 and H264)."""
    if not is_video:
        return
    from aiortc import RTCRtpSender

    want = "video/h264" if codec == VideoCodec.H264 else "video/vp8"
    caps = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in caps if c.mimeType.lower() == want]
    if not chosen:
        return
    rest = [c for c in caps if c.mimeType.lower() == "video/rtx"]
    try:
        transceiver.setCodecPreferences(chosen + rest)
    except Exception:
        logger.debug("setCodecPreferences failed", exc_info=True)
