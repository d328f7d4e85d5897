"""Sans-I/O room state of the dev server: rooms, participants, tracks, subscriptions, data relay.

(The effects are in :mod:`.effects`, one participant's state in :mod:`.participant_state`;
both are re-exported here.)

Every operation takes the current time (``now``, Unix seconds) where it needs one and returns
a list of *effects* for the asyncio shell to carry out in order: signal messages to send,
data packets to deliver, subscriptions to add/remove on subscriber peer connections,
participants to disconnect. Nothing here touches sockets, tasks or clocks.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import deque
from collections.abc import Iterable
from typing import Any

from livekit.protocol import models as models_pb, rtc as rtc_pb

from . import limits
from .auth import VideoGrant
from .effects import (
    CloseSignal,
    CloseTrack,
    Disconnect,
    Effect,
    IceRestart,
    SendData,
    SendSignal,
    SetPaused,
    Subscribe,
    Unsubscribe,
)
from .participant_state import (
    ENABLED_PUBLISH_CODECS,
    PARTICIPANT_KINDS,
    SOURCE_CHARS,
    ParticipantState,
    TrackState,
    new_guid,
    quality_for_size,
    track_info,
)
from .room_resume import (
    SERVER_PROTOCOL,
    SERVER_VERSION,
    SignalLossMixin,
    client_configuration as _client_configuration,
    server_info as _server_info,
)

__all__ = [
    "DEPARTURE_TIMEOUT",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "SERVER_PROTOCOL",
    "SERVER_VERSION",
    "CloseSignal",
    "CloseTrack",
    "Disconnect",
    "Effect",
    "IceRestart",
    "ParticipantNotFound",
    "ParticipantState",
    "RoomManager",
    "RoomNotFound",
    "RoomState",
    "SendData",
    "SendSignal",
    "SetPaused",
    "Subscribe",
    "TrackState",
    "Unsubscribe",
    "new_guid",
]

logger = logging.getLogger(__name__)

PING_INTERVAL = 5
PING_TIMEOUT = 15
EMPTY_TIMEOUT = 300
DEPARTURE_TIMEOUT = 20
MAX_PENDING_TRACKS = 20
MAX_DEPARTURES_KEPT = 256


class RoomNotFound(LookupError):
    """No room with that name."""


class ParticipantNotFound(LookupError):
    """No participant with that identity/sid in the room."""


def _permission_update(to_sid: str, pub_sid: str, track_sid: str,
                       allowed: bool) -> SendSignal:
    return SendSignal(to_sid, _signal(subscription_permission_update=(
        rtc_pb.SubscriptionPermissionUpdate(
            participant_sid=pub_sid, track_sid=track_sid, allowed=allowed))))


def _signal(**kwargs: object) -> rtc_pb.SignalResponse:
    return rtc_pb.SignalResponse(**kwargs)  # type: ignore[arg-type]


class RoomState(SignalLossMixin):
    """One room: participants, their tracks, who is subscribed to what."""

    def __init__(self, name: str, now: float, *, sid: str | None = None,
                 metadata: str = "", empty_timeout: int = EMPTY_TIMEOUT,
                 departure_timeout: float = DEPARTURE_TIMEOUT,
                 max_participants: int = 0) -> None:
        if departure_timeout < 0:
            raise ValueError("departure_timeout must be >= 0 seconds")
        self.name = name
        self.sid = sid or new_guid("RM_")
        self.metadata = metadata
        self.created_at = now
        self.empty_timeout = empty_timeout
        self.departure_timeout = departure_timeout
        self.max_participants = max_participants
        self.version = 0
        self.participants: dict[str, ParticipantState] = {}
        # track sid -> subscriber sid -> paused
        self.subscriptions: dict[str, dict[str, bool]] = {}
        self._first_subscribed: set[str] = set()
        self.had_participants = False
        # (departure number, info) of participants that left, for DISCONNECTED updates
        # to participants resuming after a signal loss
        self._departures: deque[tuple[int, models_pb.ParticipantInfo]] = deque(
            maxlen=MAX_DEPARTURES_KEPT)
        self._departure_count = 0
        # identity -> until when a resume has its signal closed (SimulateScenario)
        self._disconnect_on_resume: dict[str, float] = {}
        # identity -> (until, times closed) for the "no messages" variant
        self._disconnect_on_resume_silent: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ lookup / info

    def info(self) -> models_pb.Room:
        active = [p for p in self.participants.values()]
        return models_pb.Room(
            sid=self.sid,
            name=self.name,
            empty_timeout=self.empty_timeout,
            departure_timeout=math.ceil(self.departure_timeout),
            max_participants=self.max_participants,
            creation_time=int(self.created_at),
            creation_time_ms=int(self.created_at * 1000),
            enabled_codecs=[models_pb.Codec(mime=m) for m in ENABLED_PUBLISH_CODECS],
            metadata=self.metadata,
            num_participants=len([p for p in active if not p.hidden]),
            num_publishers=len([p for p in active if p.published_tracks()]),
            version=models_pb.TimedVersion(unix_micro=int(self.created_at * 1e6),
                                           ticks=self.version),
        )

    def by_identity(self, identity: str) -> ParticipantState:
        for p in self.participants.values():
            if p.identity == identity:
                return p
        raise ParticipantNotFound("participant does not exist")

    def _others(self, sid: str) -> list[ParticipantState]:
        return [p for p in self.participants.values() if p.sid != sid]

    def _update_others(self, p: ParticipantState) -> list[Effect]:
        """ParticipantUpdate carrying ``p`` to everyone else (nothing if ``p`` is hidden)."""
        if p.hidden:
            return []
        info = p.info()
        return [
            SendSignal(o.sid, _signal(update=rtc_pb.ParticipantUpdate(participants=[info])))
            for o in self._others(p.sid)
        ]

    def _update_all(self, p: ParticipantState) -> list[Effect]:
        info = p.info()
        out = self._update_others(p)
        out.append(SendSignal(p.sid, _signal(update=rtc_pb.ParticipantUpdate(participants=[info]))))
        return out

    # ------------------------------------------------------------------ join / leave

    def join(
        self,
        identity: str,
        grant: VideoGrant,
        now: float,
        *,
        name: str = "",
        metadata: str = "",
        attributes: dict[str, str] | None = None,
        kind: str = "",
        client_protocol: int = 0,
        capabilities: Iterable[int] = (),
        auto_subscribe: bool = True,
        protocol: int = 0,
    ) -> tuple[ParticipantState, rtc_pb.SignalResponse, list[Effect]]:
        """Add a participant; returns it, its JoinResponse and the effects (others' updates,
        replaced duplicate, subscriptions to existing tracks)."""
        effects: list[Effect] = []
        for old in list(self.participants.values()):
            if old.identity == identity:
                effects += self.remove(old.sid, models_pb.DisconnectReason.DUPLICATE_IDENTITY)
        p = ParticipantState(
            sid=new_guid("PA_"),
            identity=identity,
            grant=grant,
            name=name,
            metadata=metadata,
            attributes=dict(attributes or {}),
            kind=PARTICIPANT_KINDS.get(kind.lower(), models_pb.ParticipantInfo.Kind.STANDARD),
            state=models_pb.ParticipantInfo.State.JOINED,
            version=1,
            joined_at_ms=int(now * 1000),
            client_protocol=client_protocol,
            capabilities=list(capabilities),
            auto_subscribe=auto_subscribe,
            protocol=protocol,
        )
        others = [o for o in self.participants.values() if not o.hidden]
        self.participants[p.sid] = p
        self.had_participants = True
        self.version += 1
        join = rtc_pb.JoinResponse(
            room=self.info(),
            participant=p.info(),
            other_participants=[o.info() for o in others],
            server_version=SERVER_VERSION,
            ice_servers=[],
            subscriber_primary=grant.can_subscribe,
            client_configuration=_client_configuration(),
            ping_timeout=PING_TIMEOUT,
            ping_interval=PING_INTERVAL,
            server_info=_server_info(),
            sif_trailer=secrets.token_urlsafe(24).encode(),
            enabled_publish_codecs=[models_pb.Codec(mime=m) for m in ENABLED_PUBLISH_CODECS],
            fast_publish=grant.can_publish,
        )
        effects += self._update_others(p)
        if p.auto_subscribe and p.permission.can_subscribe:
            for o in others:
                for t in o.published_tracks():
                    effects += self._subscribe(p, o, t.info.sid)
        return p, _signal(join=join), effects

    def set_active(self, sid: str) -> list[Effect]:
        """The participant's primary transport connected."""
        p = self.participants.get(sid)
        if p is None or p.state == models_pb.ParticipantInfo.State.ACTIVE:
            return []
        p.state = models_pb.ParticipantInfo.State.ACTIVE
        p.bump()
        return self._update_others(p)

    def leave(self, sid: str,
              reason: int = models_pb.DisconnectReason.CLIENT_INITIATED) -> list[Effect]:
        """The participant is gone (left, closed, removed): tell the others, drop its tracks
        and subscriptions."""
        p = self.participants.pop(sid, None)
        if p is None:
            return []
        self.version += 1
        effects: list[Effect] = []
        for t in list(p.tracks.values()):
            effects += self._drop_track_subscriptions(p, t.info.sid)
            if t.published:
                effects.append(CloseTrack(p.sid, t.info.sid))
        for subs in self.subscriptions.values():
            subs.pop(sid, None)
        p.tracks.clear()
        p.state = models_pb.ParticipantInfo.State.DISCONNECTED
        p.disconnect_reason = reason
        p.departure_deadline = None
        p.bump()
        self._departure_count += 1
        if not p.hidden:
            info = p.info()
            self._departures.append((self._departure_count, models_pb.ParticipantInfo(
                sid=p.sid, identity=p.identity, version=p.version,
                state=models_pb.ParticipantInfo.State.DISCONNECTED)))
            for o in self.participants.values():
                effects.append(
                    SendSignal(o.sid, _signal(update=rtc_pb.ParticipantUpdate(participants=[info])))
                )
        return effects

    def remove(self, sid: str, reason: int, action: int = rtc_pb.LeaveRequest.Action.DISCONNECT,
               *, send_leave: bool = True) -> list[Effect]:
        """Server-initiated removal: Leave to the participant, then :meth:`leave`."""
        if sid not in self.participants:
            return []
        return [Disconnect(sid, reason, action, send_leave), *self.leave(sid, reason)]

    # ------------------------------------------------------------------ tracks

    def add_track(self, sid: str, req: rtc_pb.AddTrackRequest, now: float) -> list[Effect]:
        """AddTrackRequest: answer at once with TrackPublishedResponse or a refusal."""
        p = self.participants[sid]
        for t in p.tracks.values():
            if t.cid == req.cid or (req.sid and t.info.sid == req.sid):
                return [SendSignal(sid, _signal(track_published=rtc_pb.TrackPublishedResponse(
                    cid=req.cid, track=t.info)))]
        if req.type not in (models_pb.TrackType.AUDIO, models_pb.TrackType.VIDEO):
            return [self._refuse(sid, req, rtc_pb.RequestResponse.Reason.UNSUPPORTED_TYPE,
                                 "unsupported track type")]
        if not p.can_publish_source(req.source):
            return [self._refuse(sid, req, rtc_pb.RequestResponse.Reason.NOT_ALLOWED,
                                 "does not have permission to publish")]
        too_big = limits.check_add_track(req)
        if too_big is not None:
            return [self._refuse(sid, req, rtc_pb.RequestResponse.Reason.LIMIT_EXCEEDED, too_big)]
        if len([t for t in p.tracks.values() if not t.published]) >= MAX_PENDING_TRACKS:
            return [self._refuse(sid, req, rtc_pb.RequestResponse.Reason.LIMIT_EXCEEDED,
                                 "too many pending tracks")]
        is_audio = req.type == models_pb.TrackType.AUDIO
        track_sid = new_guid(
            "TR_" + ("A" if is_audio else "V") + SOURCE_CHARS.get(req.source, "U")
        )
        info = track_info(req, track_sid, now)
        p.tracks[track_sid] = TrackState(
            info=info, cid=req.cid, codec_cids=[c.cid for c in req.simulcast_codecs if c.cid]
        )
        return [SendSignal(sid, _signal(track_published=rtc_pb.TrackPublishedResponse(
            cid=req.cid, track=info)))]

    @staticmethod
    def _refuse(sid: str, req: rtc_pb.AddTrackRequest, reason: int, message: str) -> SendSignal:
        return SendSignal(sid, _signal(request_response=rtc_pb.RequestResponse(
            reason=reason, message=message, add_track=req)))  # type: ignore[arg-type]

    def match_pending_track(self, sid: str, kind: str, msid_track_id: str) -> TrackState | None:
        """The pending track an incoming media stream belongs to (cid, codec cid, first of kind)."""
        p = self.participants.get(sid)
        if p is None:
            return None
        want = models_pb.TrackType.AUDIO if kind == "audio" else models_pb.TrackType.VIDEO
        pending = [t for t in p.tracks.values() if not t.published and t.info.type == want]
        for t in pending:
            if msid_track_id and t.cid == msid_track_id:
                return t
        for t in pending:
            if msid_track_id and msid_track_id in t.codec_cids:
                return t
        return pending[0] if pending else None

    def publish_track(self, sid: str, track_sid: str, *, mid: str = "",
                      mime_type: str = "", sdp_cid: str = "") -> list[Effect]:
        """Media for a pending track arrived: mark it published, tell others (before any
        subscriber offer carrying it), subscribe auto-subscribers."""
        p = self.participants.get(sid)
        if p is None or track_sid not in p.tracks:
            return []
        t = p.tracks[track_sid]
        if t.published:
            return []
        t.published = True
        if mid:
            t.info.mid = mid
        if mime_type:
            t.info.mime_type = mime_type
            if t.info.codecs:
                t.info.codecs[0].mime_type = mime_type
        if t.info.codecs:
            if mid:
                t.info.codecs[0].mid = mid
            if sdp_cid and sdp_cid != t.cid:
                t.info.codecs[0].sdp_cid = sdp_cid
        p.bump()
        self.version += 1
        effects = self._update_others(p)
        for o in self._others(sid):
            if o.auto_subscribe and o.permission.can_subscribe:
                effects += self._subscribe(o, p, track_sid)
        return effects

    def unpublish_track(self, sid: str, track_sid: str) -> list[Effect]:
        """The publisher stopped sending (or was told to): remove the track everywhere."""
        p = self.participants.get(sid)
        if p is None or track_sid not in p.tracks:
            return []
        t = p.tracks.pop(track_sid)
        effects = self._drop_track_subscriptions(p, track_sid)
        if t.published:
            effects.append(CloseTrack(sid, track_sid))
            p.bump()
            effects += self._update_others(p)
        return effects

    def track_sid_for_mid(self, sid: str, mid: str) -> str | None:
        p = self.participants.get(sid)
        if p is None:
            return None
        for t in p.tracks.values():
            if t.published and t.info.mid == mid:
                return t.info.sid
        return None

    def mute_track(self, sid: str, track_sid: str, muted: bool) -> list[Effect]:
        """C->S MuteTrackRequest."""
        p = self.participants.get(sid)
        if p is None:
            return []
        t = p.tracks.get(track_sid)
        if t is None:
            return [SendSignal(sid, _signal(request_response=rtc_pb.RequestResponse(
                reason=rtc_pb.RequestResponse.Reason.NOT_FOUND, message="track not found",
                mute=rtc_pb.MuteTrackRequest(sid=track_sid, muted=muted))))]
        if t.info.muted == muted:
            return []
        t.info.muted = muted
        p.bump()
        return self._update_others(p) if t.published else []

    def admin_mute_track(self, identity: str, track_sid: str, muted: bool) -> tuple[
            models_pb.TrackInfo, list[Effect]]:
        """RoomService.MutePublishedTrack: tell the publisher to mute, update everyone."""
        p = self.by_identity(identity)
        t = p.tracks.get(track_sid)
        if t is None:
            raise ParticipantNotFound("track does not exist")
        effects: list[Effect] = [SendSignal(p.sid, _signal(
            mute=rtc_pb.MuteTrackRequest(sid=track_sid, muted=muted)))]
        if t.info.muted != muted:
            t.info.muted = muted
            p.bump()
            effects += self._update_all(p)
        return t.info, effects

    # ------------------------------------------------------------------ subscriptions

    def _find_track(self, track_sid: str) -> tuple[ParticipantState, TrackState] | None:
        for p in self.participants.values():
            t = p.tracks.get(track_sid)
            if t is not None:
                return p, t
        return None

    def _subscribe(self, sub: ParticipantState, pub: ParticipantState,
                   track_sid: str) -> list[Effect]:
        if sub.sid == pub.sid or sub.sid in self.subscriptions.get(track_sid, {}):
            return []
        if not pub.allows(sub, track_sid):
            return [_permission_update(sub.sid, pub.sid, track_sid, False)]
        subs = self.subscriptions.setdefault(track_sid, {})
        subs[sub.sid] = False
        effects: list[Effect] = [Subscribe(sub.sid, pub.sid, track_sid)]
        if not sub.hidden and track_sid not in self._first_subscribed:
            self._first_subscribed.add(track_sid)
            effects.append(SendSignal(pub.sid, _signal(
                track_subscribed=rtc_pb.TrackSubscribed(track_sid=track_sid))))
        return effects

    def set_subscription_permission(self, sid: str,
                                    perm: rtc_pb.SubscriptionPermission) -> list[Effect]:
        """C->S SubscriptionPermission: who may subscribe to ``sid``'s tracks. Subscribers
        no longer allowed are unsubscribed; auto-subscribers newly allowed are subscribed;
        each changed subscriber gets a SubscriptionPermissionUpdate."""
        pub = self.participants.get(sid)
        if pub is None:
            return []
        before = {(o.sid, t.info.sid): pub.allows(o, t.info.sid)
                  for o in self._others(sid) for t in pub.published_tracks()}
        pub.track_permission = rtc_pb.SubscriptionPermission()
        pub.track_permission.CopyFrom(perm)
        effects: list[Effect] = []
        for o in self._others(sid):
            for t in pub.published_tracks():
                track_sid = t.info.sid
                allowed = pub.allows(o, track_sid)
                if allowed == before[(o.sid, track_sid)]:
                    continue
                if allowed:
                    effects.append(_permission_update(o.sid, sid, track_sid, True))
                    if o.auto_subscribe and o.permission.can_subscribe:
                        effects += self._subscribe(o, pub, track_sid)
                else:
                    subs = self.subscriptions.get(track_sid, {})
                    if subs.pop(o.sid, None) is not None:
                        effects.append(Unsubscribe(o.sid, sid, track_sid))
                    effects.append(_permission_update(o.sid, sid, track_sid, False))
        return effects

    def _drop_track_subscriptions(self, pub: ParticipantState, track_sid: str) -> list[Effect]:
        subs = self.subscriptions.pop(track_sid, {})
        self._first_subscribed.discard(track_sid)
        return [Unsubscribe(s, pub.sid, track_sid) for s in subs]

    def subscribed_tracks(self, sid: str) -> list[str]:
        return [t for t, subs in self.subscriptions.items() if sid in subs]

    def update_subscription(self, sid: str, track_sids: Iterable[str],
                            subscribe: bool) -> list[Effect]:
        """C->S UpdateSubscription (idempotent, a set of track sids)."""
        sub = self.participants.get(sid)
        if sub is None:
            return []
        effects: list[Effect] = []
        for track_sid in dict.fromkeys(track_sids):
            found = self._find_track(track_sid)
            if found is None:
                if subscribe:
                    effects.append(SendSignal(sid, _signal(
                        subscription_response=rtc_pb.SubscriptionResponse(
                            track_sid=track_sid,
                            err=models_pb.SubscriptionError.SE_TRACK_NOTFOUND))))
                continue
            pub, t = found
            if subscribe:
                if t.published and sub.permission.can_subscribe:
                    effects += self._subscribe(sub, pub, track_sid)
            else:
                subs = self.subscriptions.get(track_sid, {})
                if subs.pop(sid, None) is not None:
                    effects.append(Unsubscribe(sid, pub.sid, track_sid))
        return effects

    def update_track_settings(self, sid: str, track_sids: Iterable[str], disabled: bool,
                              setting: rtc_pb.UpdateTrackSettings | None = None) -> list[Effect]:
        """C->S UpdateTrackSettings: ``disabled`` pauses forwarding; on an enabled simulcast
        track the ``setting`` picks the layer (its size if given, else its quality)."""
        effects: list[Effect] = []
        for track_sid in dict.fromkeys(track_sids):
            subs = self.subscriptions.get(track_sid)
            found = self._find_track(track_sid)
            if subs is None or sid not in subs or found is None:
                continue
            info = found[1].info
            quality = None
            if setting is not None and not disabled and len(info.layers) > 1:
                quality = (quality_for_size(info, setting.width, setting.height)
                           if setting.width or setting.height else int(setting.quality))
            if subs[sid] != disabled or quality is not None:
                subs[sid] = disabled
                effects.append(SetPaused(sid, found[0].sid, track_sid, disabled, quality))
        return effects

    # ------------------------------------------------------------------ metadata

    def update_metadata(self, sid: str, req: rtc_pb.UpdateParticipantMetadata) -> list[Effect]:
        """C->S UpdateParticipantMetadata (needs canUpdateOwnMetadata)."""
        p = self.participants.get(sid)
        if p is None:
            return []
        if not p.permission.can_update_metadata:
            return [SendSignal(sid, _signal(request_response=rtc_pb.RequestResponse(
                request_id=req.request_id, reason=rtc_pb.RequestResponse.Reason.NOT_ALLOWED,
                message="does not have permission to update own metadata",
                update_metadata=req)))]
        try:
            limits.check_participant_fields(name=req.name, metadata=req.metadata,
                                            attributes=req.attributes)
        except limits.LimitExceeded as exc:
            return [SendSignal(sid, _signal(request_response=rtc_pb.RequestResponse(
                request_id=req.request_id, reason=rtc_pb.RequestResponse.Reason.LIMIT_EXCEEDED,
                message=exc.signal_message, update_metadata=req)))]
        effects = self._apply_participant_update(
            p, metadata=req.metadata or None, name=req.name or None,
            attributes=dict(req.attributes),
        )
        effects.append(SendSignal(sid, _signal(request_response=rtc_pb.RequestResponse(
            request_id=req.request_id, reason=rtc_pb.RequestResponse.Reason.OK,
            update_metadata=req))))
        return effects

    def _apply_participant_update(
        self, p: ParticipantState, *, metadata: str | None = None, name: str | None = None,
        attributes: dict[str, str] | None = None,
        permission: models_pb.ParticipantPermission | None = None,
    ) -> list[Effect]:
        changed = False
        if metadata is not None and metadata != p.metadata:
            p.metadata = metadata
            changed = True
        if name is not None and name != p.name:
            p.name = name
            changed = True
        for key, value in (attributes or {}).items():
            if value == "":
                if key in p.attributes:
                    del p.attributes[key]
                    changed = True
            elif p.attributes.get(key) != value:
                p.attributes[key] = value
                changed = True
        if permission is not None and permission != p.permission:
            p.permission = permission
            changed = True
        if not changed:
            return []
        p.bump()
        return self._update_all(p)

    def admin_update_participant(
        self, identity: str, *, metadata: str = "", name: str = "",
        attributes: dict[str, str] | None = None,
        permission: models_pb.ParticipantPermission | None = None,
    ) -> tuple[ParticipantState, list[Effect]]:
        """RoomService.UpdateParticipant."""
        p = self.by_identity(identity)
        effects = self._apply_participant_update(
            p, metadata=metadata or None, name=name or None, attributes=attributes,
            permission=permission,
        )
        return p, effects

    def set_metadata(self, metadata: str) -> list[Effect]:
        """RoomService.UpdateRoomMetadata: RoomUpdate to everyone."""
        self.metadata = metadata
        self.version += 1
        room = self.info()
        return [SendSignal(p.sid, _signal(room_update=rtc_pb.RoomUpdate(room=room)))
                for p in self.participants.values()]

    # ------------------------------------------------------------------ data

    def receive_data(self, sid: str, payload: bytes, reliable: bool) -> list[Effect]:
        """A DataPacket arrived from ``sid`` on its ``_reliable``/``_lossy`` channel."""
        p = self.participants.get(sid)
        if p is None or not p.permission.can_publish_data:
            return []
        packet = models_pb.DataPacket()
        try:
            packet.ParseFromString(payload)
        except Exception:  # protobuf DecodeError
            logger.debug("dropping unparsable data packet from %s", sid, exc_info=True)
            return []
        which = packet.WhichOneof("value")
        if which == "metrics":
            return []
        if reliable and packet.sequence > 0:
            if packet.sequence <= p.last_reliable_seq:
                return []
            p.last_reliable_seq = packet.sequence
        packet.kind = (models_pb.DataPacket.Kind.RELIABLE if reliable
                       else models_pb.DataPacket.Kind.LOSSY)
        packet.participant_sid = p.sid
        claimed = packet.participant_identity
        packet.participant_identity = "" if p.hidden else p.identity
        if (claimed != p.identity and p.kind == models_pb.ParticipantInfo.Kind.AGENT
                and which in ("stream_header", "stream_chunk", "stream_trailer")
                and any(o.identity == claimed for o in self.participants.values())):
            # an agent writes a participant's transcript on its behalf (livekit-agents:
            # stream_text(sender_identity=...)); livekit-server forwards that identity too
            packet.participant_identity = claimed
        destinations = list(packet.destination_identities)
        destination_sids: list[str] = []
        if which == "user":
            user = packet.user
            if not destinations:
                destinations = list(user.destination_identities)
            destination_sids = list(user.destination_sids)
            user.participant_sid = p.sid
            user.participant_identity = packet.participant_identity
            del user.destination_identities[:]
            user.destination_identities.extend(destinations)
        del packet.destination_identities[:]
        packet.destination_identities.extend(destinations)
        return self._deliver(packet.SerializeToString(), reliable, destinations, destination_sids,
                             exclude=sid)

    def _deliver(self, data: bytes, reliable: bool, identities: list[str], sids: list[str],
                 exclude: str = "") -> list[Effect]:
        out: list[Effect] = []
        for o in self.participants.values():
            if o.sid == exclude:
                continue
            if (identities or sids) and o.identity not in identities and o.sid not in sids:
                continue
            out.append(SendData(o.sid, data, reliable))
        return out

    def server_data(self, req: Any) -> list[Effect]:
        """RoomService.SendData: a packet without sender, to all or the destinations."""
        reliable = req.kind == models_pb.DataPacket.Kind.RELIABLE
        user = models_pb.UserPacket(payload=req.data, nonce=req.nonce,
                                    destination_identities=req.destination_identities)
        if req.HasField("topic"):
            user.topic = req.topic
        packet = models_pb.DataPacket(
            kind=req.kind, user=user,  # type: ignore[arg-type]
            destination_identities=req.destination_identities)
        return self._deliver(packet.SerializeToString(), reliable,
                             list(req.destination_identities), list(req.destination_sids))


class RoomManager:
    """All rooms of one server, by name (``departure_timeout``: the default of new rooms)."""

    def __init__(self, departure_timeout: float = DEPARTURE_TIMEOUT) -> None:
        self.departure_timeout = departure_timeout
        self.rooms: dict[str, RoomState] = {}
        self._empty_since: dict[str, float] = {}

    def prune(self, now: float) -> list[str]:
        """Close rooms that stayed empty: ``departure_timeout`` after the last participant
        left, ``empty_timeout`` if nobody ever joined. Returns the closed room names."""
        closed: list[str] = []
        for name, room in list(self.rooms.items()):
            if room.participants:
                self._empty_since.pop(name, None)
                continue
            # empty_timeout counts from the creation, departure_timeout from the first
            # check that found the room empty after its last participant left
            since = self._empty_since.setdefault(
                name, now if room.had_participants else room.created_at)
            limit = room.departure_timeout if room.had_participants else room.empty_timeout
            if now - since >= limit:
                del self.rooms[name]
                self._empty_since.pop(name, None)
                closed.append(name)
        return closed

    def get(self, name: str) -> RoomState:
        room = self.rooms.get(name)
        if room is None:
            raise RoomNotFound("requested room does not exist")
        return room

    def get_or_create(self, name: str, now: float, **options: object) -> RoomState:
        room = self.rooms.get(name)
        if room is None:
            options.setdefault("departure_timeout", self.departure_timeout)
            room = RoomState(name, now, **options)  # type: ignore[arg-type]
            self.rooms[name] = room
        return room

    def delete(self, name: str) -> list[Effect]:
        """Remove the room; every participant gets Leave{ROOM_DELETED}."""
        room = self.get(name)
        effects: list[Effect] = []
        for sid in list(room.participants):
            effects.append(Disconnect(sid, models_pb.DisconnectReason.ROOM_DELETED))
        for sid in list(room.participants):
            for e in room.leave(sid, models_pb.DisconnectReason.ROOM_DELETED):
                if not isinstance(e, SendSignal):
                    effects.append(e)
        del self.rooms[name]
        return effects

    def next_departure(self) -> float | None:
        """The earliest departure deadline over all rooms."""
        deadlines = [d for d in (r.next_departure() for r in self.rooms.values())
                     if d is not None]
        return min(deadlines) if deadlines else None

    def expire_departures(self, now: float) -> list[Effect]:
        """:meth:`RoomState.expire_departures` of every room."""
        effects: list[Effect] = []
        for room in self.rooms.values():
            effects += room.expire_departures(now)
        return effects

    def find_participant(self, sid: str) -> tuple[RoomState, ParticipantState] | None:
        for room in self.rooms.values():
            p = room.participants.get(sid)
            if p is not None:
                return room, p
        return None
