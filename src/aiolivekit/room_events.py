"""The Room's handling of what the engine reports about participants and tracks.

:class:`RoomEventHandlers` is mixed into :class:`~aiolivekit.room.Room`: one ``_ev_<Event>``
method per signal or engine event (participants joining, leaving and changing, remote
publications, subscriptions and their media tracks, mutes, speakers, connection quality),
each changing the user-visible state in the same step as the event it emits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from livekit.protocol import models as models_pb

from .data import packets
from .data.manager import DataManager
from .engine import engine as eng, signal as sig
from .participant import LocalParticipant, Participant, RemoteParticipant
from .track import RemoteAudioTrack, RemoteVideoTrack, Track
from .track_publication import RemoteTrackPublication
from .types import ConnectionQuality, DisconnectReason, RoomOptions, StreamState, VideoQuality

__all__ = ["PENDING_TRACK_TTL", "RoomEventHandlers"]

logger = logging.getLogger(__name__)

# simulcast rids and the qualities SubscribedQualityUpdate names them by
_RID_QUALITIES = (("q", models_pb.VideoQuality.LOW), ("h", models_pb.VideoQuality.MEDIUM),
                  ("f", models_pb.VideoQuality.HIGH))

PENDING_TRACK_TTL = 5.0


class RoomEventHandlers:
    """Participant and track events -> Room state and user events."""

    _engine: eng.RtcEngine | None
    _info: models_pb.Room
    _local: LocalParticipant | None
    _remote: dict[str, RemoteParticipant]
    _by_sid: dict[str, RemoteParticipant]
    _pending_tracks: dict[str, tuple[float, eng.TrackReceived]]
    _active_speakers: list[Participant]
    _dup: packets.DuplicateFilter
    _data: DataManager
    _token: str
    _tasks: set[asyncio.Task[Any]]
    _subscription_prefs: dict[str, bool]
    _quality_prefs: dict[str, VideoQuality]
    _options: RoomOptions

    if TYPE_CHECKING:  # provided by the Room
        def emit(self, event: Any, *args: Any) -> None: ...

        def _resolve_sid(self) -> None: ...

        def _e2ee_status(self, p: Participant) -> None: ...

        def _e2ee_detach(self, track_sid: str) -> None: ...

        def _e2ee_hold(self, receiver: Any, kind: str) -> None: ...

        def _e2ee_attach_remote(self, p: RemoteParticipant, pub: RemoteTrackPublication,
                                receiver: Any, kind: str) -> None: ...

    def _metadata_changed(self, p: Participant) -> None:
        """A participant's info changed: our own pending updates may now be answered."""
        if self._local is not None:
            self._local._check_metadata_waiters()

    def _add_remote(self, info: models_pb.ParticipantInfo) -> RemoteParticipant:
        p = RemoteParticipant(info)
        self._remote[info.identity] = p
        self._by_sid[info.sid] = p
        return p

    def _add_publication(self, p: RemoteParticipant, info: models_pb.TrackInfo
                         ) -> RemoteTrackPublication:
        pub = RemoteTrackPublication(info, p.sid, self._set_subscribed, self._set_video_quality)
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
        p._publications_changed()

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
            self._metadata_changed(p)

    def _ev_ParticipantNameChanged(self, ev: sig.ParticipantNameChanged) -> None:
        p = self._refresh_info(ev.sid, ev.local)
        if p is not None:
            self.emit("participant_name_changed", p, ev.old, ev.new)
            self._metadata_changed(p)

    def _ev_ParticipantAttributesChanged(self, ev: sig.ParticipantAttributesChanged) -> None:
        p = self._refresh_info(ev.sid, ev.local)
        if p is not None:
            self.emit("participant_attributes_changed", dict(ev.changed), p)
            self._metadata_changed(p)

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
        self._e2ee_status(p)
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
        self._e2ee_status(p)
        p._publications_changed()

    def _unsubscribe_publication(self, p: RemoteParticipant, pub: RemoteTrackPublication) -> None:
        track = pub._track
        pub._desired = None
        if track is None:
            pub._subscribed = False
            return
        pub._track = None
        pub._subscribed = False
        self._e2ee_detach(pub.sid)
        self.emit("track_unsubscribed", track, pub, p)
        p._publications_changed()
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
        if isinstance(track, (RemoteAudioTrack, RemoteVideoTrack)) and not ev.local:
            track._set_muted(ev.muted)
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

    def _ev_SubscribedQualitiesChanged(self, ev: sig.SubscribedQualitiesChanged) -> None:
        """Dynacast: with ``RoomOptions.dynacast`` the layers nobody wants are paused."""
        if not self._options.dynacast:
            return
        local = self._local
        pub = local._track_publications.get(ev.track_sid) if local is not None else None
        track = getattr(pub, "track", None) if pub is not None else None
        sender = getattr(getattr(track, "_rtc_track", None), "simulcast", None)
        if sender is not None:
            sender.set_active({rid for rid, quality in _RID_QUALITIES
                               if ev.enabled.get(quality, False)})

    def _ev_RoomUpdated(self, ev: sig.RoomUpdated) -> None:
        old_meta = self._info.metadata
        self._info.CopyFrom(ev.new)
        self._resolve_sid()
        if ev.new.metadata != old_meta:
            self.emit("room_metadata_changed", old_meta, ev.new.metadata)
        self.emit("room_updated")

    def _ev_RequestAnswered(self, ev: sig.RequestAnswered) -> None:
        # an AddTrackRequest's refusal is the engine's (engine.publishing)
        if self._local is not None:
            self._local._request_answered(ev.request_id, ev.reason, ev.message)

    def _ev_TrackUnpublishedByServer(self, ev: sig.TrackUnpublishedByServer) -> None:
        local = self._local
        if local is not None and ev.track_sid in local._track_publications:
            self._spawn(local._unpublish(ev.track_sid, negotiate=True))

    def _ev_LocalTrackSubscribed(self, ev: sig.LocalTrackSubscribed) -> None:
        if self._local is not None:
            self._local._track_subscribed(ev.track_sid)

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
                if track is not None:
                    # proto ACTIVE=0/PAUSED=1 -> StreamState ACTIVE=1/PAUSED=2
                    track._set_stream_state(
                        StreamState.STATE_PAUSED if state == 1 else StreamState.STATE_ACTIVE)

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

    # ------------------------------------------------------------------ remote media


    def _set_subscribed(self, pub: RemoteTrackPublication, subscribed: bool) -> None:
        engine = self._engine
        if engine is None or engine.closed:
            raise RuntimeError("the room is not connected")
        engine.session.update_subscription([pub.sid], subscribed, pub._participant_sid)
        engine.send_signal()
        self._subscription_prefs[pub.sid] = subscribed  # applied again after a full reconnect
        if not subscribed:
            # the server removes the m-line; report it now like the official SDK
            p = self._by_sid.get(pub._participant_sid)
            if p is not None and pub._track is not None:
                self._unsubscribe_publication(p, pub)
            pub._desired = False

    def _set_video_quality(self, pub: RemoteTrackPublication, quality: VideoQuality) -> None:
        engine = self._engine
        if engine is None or engine.closed:
            raise RuntimeError("the room is not connected")
        engine.session.update_track_settings([pub.sid], disabled=False, quality=int(quality))
        engine.send_signal()
        self._quality_prefs[pub.sid] = quality  # sent again after a full reconnect

    def _ev_TrackReceived(self, ev: eng.TrackReceived) -> None:
        self._expire_pending()
        p = self._by_sid.get(ev.participant_sid)
        if p is None:
            p = next((x for x in self._remote.values() if ev.track_sid in x._track_publications),
                     None)
        if p is None or ev.track_sid not in p._track_publications:
            self._pending_tracks[ev.track_sid] = (time.monotonic(), ev)
            self._e2ee_hold(ev.receiver, ev.track.kind)
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
        if self._subscription_prefs.get(pub.sid) is False:
            # the user unsubscribed (e.g. before a full reconnect, whose auto-subscribe
            # brought the track back): the unsubscription sent removes it again
            logger.debug("ignoring remote track %s: unsubscribed by the user", pub.sid)
            return
        if pub._track is not None:
            old = pub._track
            pub._track = None
            self.emit("track_unsubscribed", old, pub, p)
            p._publications_changed()
            self._close_track(old)
        cls = RemoteAudioTrack if ev.track.kind == "audio" else RemoteVideoTrack
        try:
            track = cls._from_rtc(ev.track, sid=pub.sid, name=pub.name, receiver=ev.receiver)
        except Exception:
            logger.exception("wrapping a remote track failed")
            self.emit("track_subscription_failed", p, pub.sid, "could not wrap the track")
            return
        self._e2ee_attach_remote(p, pub, ev.receiver, ev.track.kind)
        if pub.muted:
            track._set_muted(True)
        pub._track = track
        track._set_room(self)
        pub._subscribed = True
        pub._desired = None
        self.emit("track_subscribed", track, pub, p)
        p._publications_changed()

    def _ev_TrackRemoved(self, ev: eng.TrackRemoved) -> None:
        for p in self._remote.values():
            pub = p._track_publications.get(ev.track_sid)
            if isinstance(pub, RemoteTrackPublication) and pub._track is not None:
                self._unsubscribe_publication(p, pub)
                return

    def _close_remote_tracks(self) -> None:
        for p in self._remote.values():
            for pub in p._track_publications.values():
                track = pub._track
                if track is not None:
                    pub._track = None
                    if isinstance(pub, RemoteTrackPublication):
                        pub._subscribed = False
                    self._close_track(track)

    def _close_track(self, track: Track) -> None:
        try:
            result = track._close()
        except Exception:
            logger.exception("closing a remote track failed")
            return
        if asyncio.iscoroutine(result):
            self._spawn(result)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
