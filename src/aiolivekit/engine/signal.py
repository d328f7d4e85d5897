"""Sans-I/O client signal session: SignalResponses in, state + high-level events out.

:class:`SignalSession` owns everything the signalling protocol decides, without touching a
socket or a clock: feed it each decoded ``SignalResponse`` with the current time
(:meth:`SignalSession.receive`), call :meth:`SignalSession.handle_timer` when
:meth:`SignalSession.next_timer` is due, and send whatever :meth:`SignalSession.drain`
returns. User intents (offer, answer, trickle, add_track, mute, subscription, metadata,
leave) are methods that queue ``SignalRequest`` s.

Remote participants are tracked by sid with their last ``ParticipantInfo``; updates with a
version not above the stored one are ignored, and each accepted update is diffed into
events (joined, left, metadata/name/attributes changed, active, track published /
unpublished / muted / updated).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from livekit.protocol import models as models_pb, rtc as rtc_pb

__all__ = [
    "PUBLISHER",
    "SUBSCRIBER",
    "AnswerReceived",
    "ConnectionQualityChanged",
    "Joined",
    "LeaveReceived",
    "LocalTrackSubscribed",
    "MuteRequested",
    "OfferReceived",
    "ParticipantActive",
    "ParticipantAttributesChanged",
    "ParticipantJoined",
    "ParticipantLeft",
    "ParticipantMetadataChanged",
    "ParticipantNameChanged",
    "ParticipantPermissionsChanged",
    "PingTimeout",
    "PongReceived",
    "RequestAnswered",
    "ResumeAccepted",
    "RoomMoved",
    "RoomUpdated",
    "SignalEvent",
    "SignalSession",
    "SpeakersChanged",
    "StreamStateChanged",
    "SubscribedQualitiesChanged",
    "SubscriptionFailed",
    "TokenRefreshed",
    "TrackMuted",
    "TrackPublished",
    "TrackPublishedAck",
    "TrackUnpublished",
    "TrackUnpublishedByServer",
    "TrackUpdated",
    "TrickleReceived",
]

logger = logging.getLogger(__name__)

PUBLISHER = rtc_pb.SignalTarget.PUBLISHER
SUBSCRIBER = rtc_pb.SignalTarget.SUBSCRIBER
_DISCONNECTED = models_pb.ParticipantInfo.DISCONNECTED
_ACTIVE = models_pb.ParticipantInfo.ACTIVE


# ------------------------------------------------------------------------------ events


@dataclass
class Joined:
    join: rtc_pb.JoinResponse


@dataclass
class ParticipantJoined:
    info: models_pb.ParticipantInfo


@dataclass
class ParticipantLeft:
    info: models_pb.ParticipantInfo
    reason: int


@dataclass
class ParticipantMetadataChanged:
    sid: str
    old: str
    new: str
    local: bool = False


@dataclass
class ParticipantNameChanged:
    sid: str
    old: str
    new: str
    local: bool = False


@dataclass
class ParticipantAttributesChanged:
    sid: str
    changed: dict[str, str]
    local: bool = False


@dataclass
class ParticipantActive:
    sid: str


@dataclass
class ParticipantPermissionsChanged:
    sid: str
    permission: models_pb.ParticipantPermission
    local: bool = False


@dataclass
class TrackPublished:
    participant_sid: str
    track: models_pb.TrackInfo


@dataclass
class TrackUnpublished:
    participant_sid: str
    track: models_pb.TrackInfo


@dataclass
class TrackMuted:
    participant_sid: str
    track: models_pb.TrackInfo
    muted: bool
    local: bool = False


@dataclass
class TrackUpdated:
    participant_sid: str
    track: models_pb.TrackInfo
    local: bool = False


@dataclass
class RoomUpdated:
    old: models_pb.Room
    new: models_pb.Room


@dataclass
class OfferReceived:
    sdp: str
    id: int
    mid_to_track_id: dict[str, str] = field(default_factory=dict)


@dataclass
class AnswerReceived:
    sdp: str
    id: int


@dataclass
class TrickleReceived:
    candidate_init: str
    target: int
    final: bool


@dataclass
class LeaveReceived:
    """A LeaveRequest from the server; ``action`` is DISCONNECT, RESUME or RECONNECT (a
    legacy ``can_reconnect`` without an action reads as RECONNECT)."""

    reason: int
    action: int


@dataclass
class ResumeAccepted:
    """The server resumed the session (ReconnectResponse)."""

    response: rtc_pb.ReconnectResponse


@dataclass
class RoomMoved:
    """The server moved the participant to another room (RoomMovedResponse)."""

    room: models_pb.Room
    token: str
    participant: models_pb.ParticipantInfo
    joined: list[models_pb.ParticipantInfo]
    left: list[models_pb.ParticipantInfo]


@dataclass
class RequestAnswered:
    request_id: int
    reason: int
    message: str
    kind: str  # which request oneof it answers ("update_metadata", "add_track", ...)
    cid: str = ""  # for add_track


@dataclass
class TrackPublishedAck:
    cid: str
    track: models_pb.TrackInfo


@dataclass
class TrackUnpublishedByServer:
    track_sid: str


@dataclass
class LocalTrackSubscribed:
    track_sid: str


@dataclass
class SubscriptionFailed:
    track_sid: str
    error: str


@dataclass
class MuteRequested:
    track_sid: str
    muted: bool


@dataclass
class StreamStateChanged:
    """The server paused or resumed forwarding a subscribed track (``states``: sid -> state)."""

    states: dict[str, int]


@dataclass
class SpeakersChanged:
    speakers: list[models_pb.SpeakerInfo]


@dataclass
class ConnectionQualityChanged:
    updates: list[rtc_pb.ConnectionQualityInfo]


@dataclass
class SubscribedQualitiesChanged:
    """Which layers of a published track anyone subscribes to (dynacast)."""

    track_sid: str
    enabled: dict[int, bool]  # VideoQuality -> wanted


@dataclass
class TokenRefreshed:
    token: str


@dataclass
class PingTimeout:
    silent_for: float


@dataclass
class PongReceived:
    rtt_ms: int


SignalEvent = (
    Joined | ParticipantJoined | ParticipantLeft | ParticipantMetadataChanged |
    ParticipantNameChanged | ParticipantAttributesChanged | ParticipantActive |
    ParticipantPermissionsChanged | TrackPublished | TrackUnpublished | TrackMuted |
    TrackUpdated | RoomUpdated | OfferReceived | AnswerReceived | TrickleReceived |
    LeaveReceived | ResumeAccepted | RoomMoved | RequestAnswered | TrackPublishedAck | TrackUnpublishedByServer |
    LocalTrackSubscribed | SubscriptionFailed | MuteRequested | StreamStateChanged |
    SpeakersChanged | ConnectionQualityChanged | TokenRefreshed | PingTimeout | PongReceived |
    SubscribedQualitiesChanged
)


#: Requests sent while the signal is being resumed; the others wait for the resume.
PASS_THROUGH = frozenset({"sync_state", "trickle", "offer", "answer", "simulate", "leave"})


def _copy(msg: object) -> object:
    out = type(msg)()  # type: ignore[operator]
    out.CopyFrom(msg)  # type: ignore[attr-defined]
    return out


# ------------------------------------------------------------------------------ session


class SignalSession:
    """The client side of one signalling session (no I/O, time passed in)."""

    def __init__(self) -> None:
        self.join: rtc_pb.JoinResponse | None = None
        self.room = models_pb.Room()
        self.local = models_pb.ParticipantInfo()
        #: remote participants by sid
        self.participants: dict[str, models_pb.ParticipantInfo] = {}
        self._sid_by_identity: dict[str, str] = {}
        self.ping_interval = 0.0
        self.ping_timeout = 0.0
        self.rtt_ms = 0
        self.closed = False
        self.leave_reason: int | None = None
        self._outbox: list[rtc_pb.SignalRequest] = []
        self._last_received = 0.0
        self._next_ping: float | None = None
        self._next_request_id = 1
        self._offer_id = 0
        self._timed_out = False
        self._pending_update_metadata: set[int] = set()
        #: the signal connection is down (lost or being resumed): only pass-through
        #: requests leave the outbox (see :data:`PASS_THROUGH`)
        self.signal_down = False

    # ----------------------------------------------------------------- outbox

    def drain(self) -> list[rtc_pb.SignalRequest]:
        """SignalRequests to send now, in order (while the signal is down: only the
        pass-through ones; the others stay queued for after the resume)."""
        if not self.signal_down:
            out, self._outbox = self._outbox, []
            return out
        out = [r for r in self._outbox if r.WhichOneof("message") in PASS_THROUGH]
        self._outbox = [r for r in self._outbox if r.WhichOneof("message") not in PASS_THROUGH]
        return out

    def has_outgoing(self) -> bool:
        """Whether :meth:`drain` would return something now."""
        if not self.signal_down:
            return bool(self._outbox)
        return any(r.WhichOneof("message") in PASS_THROUGH for r in self._outbox)

    # ----------------------------------------------------------------- resume

    def signal_lost(self) -> None:
        """The signal connection is gone: no pings, no ping timeout, requests held."""
        self.signal_down = True
        self._next_ping = None
        self._timed_out = True

    def signal_reopened(self, now: float) -> None:
        """A new signal connection is open (resume in progress): pings and the ping
        timeout run again; requests other than pass-through ones are still held."""
        self._last_received = now
        self._timed_out = False
        if self.ping_interval > 0:
            self._next_ping = now

    def resume_done(self) -> None:
        """The resume completed: the held requests go out with the next :meth:`drain`."""
        self.signal_down = False

    def sync_state(self, state: rtc_pb.SyncState) -> None:
        self._send(sync_state=state)

    def simulate(self, scenario: rtc_pb.SimulateScenario) -> None:
        self._send(simulate=scenario)

    def _send(self, **kw: object) -> rtc_pb.SignalRequest:
        req = rtc_pb.SignalRequest(**kw)  # type: ignore[arg-type]
        self._outbox.append(req)
        return req

    # ----------------------------------------------------------------- intents

    def send_offer(self, sdp: str) -> int:
        """Queue a publisher offer; returns its id."""
        self._offer_id += 1
        self._send(offer=rtc_pb.SessionDescription(type="offer", sdp=sdp, id=self._offer_id))
        return self._offer_id

    def send_answer(self, sdp: str, offer_id: int = 0) -> None:
        """Queue the answer to a subscriber offer (echoing its id)."""
        self._send(answer=rtc_pb.SessionDescription(type="answer", sdp=sdp, id=offer_id))

    def send_trickle(self, candidate_init: str, target: int, final: bool = False) -> None:
        self._send(trickle=rtc_pb.TrickleRequest(
            candidateInit=candidate_init, target=target, final=final))  # type: ignore[arg-type]

    def add_track(self, request: rtc_pb.AddTrackRequest) -> None:
        self._send(add_track=request)

    def mute_track(self, track_sid: str, muted: bool) -> None:
        self._send(mute=rtc_pb.MuteTrackRequest(sid=track_sid, muted=muted))

    def update_subscription(self, track_sids: list[str], subscribe: bool,
                            participant_sid: str = "") -> None:
        parts = []
        if participant_sid:
            parts.append(models_pb.ParticipantTracks(
                participant_sid=participant_sid, track_sids=track_sids))
        self._send(subscription=rtc_pb.UpdateSubscription(
            track_sids=track_sids, subscribe=subscribe, participant_tracks=parts))

    def update_metadata(self, *, metadata: str | None = None, name: str | None = None,
                        attributes: dict[str, str] | None = None) -> int:
        """Queue an UpdateParticipantMetadata; returns its request id."""
        request_id = self._next_request_id
        self._next_request_id += 1
        req = rtc_pb.UpdateParticipantMetadata(request_id=request_id)
        req.metadata = self.local.metadata if metadata is None else metadata
        req.name = self.local.name if name is None else name
        if attributes:
            req.attributes.update(attributes)
        self._pending_update_metadata.add(request_id)
        self._send(update_metadata=req)
        return request_id

    def update_track_settings(self, track_sids: list[str], *, disabled: bool,
                              quality: int | None = None) -> None:
        """UpdateTrackSettings; ``quality`` (a ``VideoQuality``) asks for a simulcast layer."""
        req = rtc_pb.UpdateTrackSettings(track_sids=track_sids, disabled=disabled)
        if quality is not None:
            req.quality = quality  # type: ignore[assignment]  # an int is a protobuf enum value
        self._send(track_setting=req)

    def subscription_permission(self, permission: rtc_pb.SubscriptionPermission) -> None:
        self._send(subscription_permission=permission)

    def leave(self, reason: int = models_pb.DisconnectReason.CLIENT_INITIATED) -> None:
        """Queue a LeaveRequest (client initiated) and mark the session closed."""
        if self.closed:
            return
        self._send(leave=rtc_pb.LeaveRequest(
            reason=reason, action=rtc_pb.LeaveRequest.DISCONNECT))  # type: ignore[arg-type]
        self.closed = True
        self.leave_reason = reason
        self._next_ping = None

    # ----------------------------------------------------------------- timers

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` should next run (same clock as ``now``), or None."""
        if self.closed or self.join is None:
            return None
        candidates = []
        if self._next_ping is not None:
            candidates.append(self._next_ping)
        if self.ping_timeout > 0 and not self._timed_out:
            candidates.append(self._last_received + self.ping_timeout)
        return min(candidates) if candidates else None

    def handle_timer(self, now: float) -> list[SignalEvent]:
        """Send due pings; report a ping timeout when the server has been silent too long."""
        events: list[SignalEvent] = []
        if self.closed or self.join is None:
            return events
        if self._next_ping is not None and now >= self._next_ping:
            self._send(ping_req=rtc_pb.Ping(timestamp=int(now * 1000), rtt=self.rtt_ms))
            # a tiny legacy ping too: older servers only answer ``ping``
            self._next_ping = now + self.ping_interval
            # skip missed intervals instead of bursting
            while self._next_ping <= now:
                self._next_ping += self.ping_interval
        if (self.ping_timeout > 0 and not self._timed_out
                and now - self._last_received >= self.ping_timeout):
            self._timed_out = True
            events.append(PingTimeout(now - self._last_received))
        return events

    # ----------------------------------------------------------------- input

    def receive(self, resp: rtc_pb.SignalResponse, now: float) -> list[SignalEvent]:
        """Apply one SignalResponse; returns the events it produced, in order."""
        self._last_received = now
        self._timed_out = False
        kind = resp.WhichOneof("message")
        if kind is None:
            return []
        if self.join is None and kind not in ("join", "leave"):
            logger.debug("ignoring %s before join", kind)
            return []
        handler = getattr(self, "_on_" + kind, None)
        if handler is None:
            logger.debug("unhandled signal message %s", kind)
            return []
        events: list[SignalEvent] = handler(getattr(resp, kind), now)
        return events

    def _on_join(self, join: rtc_pb.JoinResponse, now: float) -> list[SignalEvent]:
        self.join = join
        self.room = _copy(join.room)  # type: ignore[assignment]
        self.local = _copy(join.participant)  # type: ignore[assignment]
        self.ping_interval = float(join.ping_interval)
        self.ping_timeout = float(join.ping_timeout)
        if self.ping_interval > 0:
            self._next_ping = now
        for info in join.other_participants:
            self._store(info)
        return [Joined(join)]

    def _store(self, info: models_pb.ParticipantInfo) -> None:
        self.participants[info.sid] = _copy(info)  # type: ignore[assignment]
        if info.identity:
            self._sid_by_identity[info.identity] = info.sid

    def _on_update(self, update: rtc_pb.ParticipantUpdate, now: float) -> list[SignalEvent]:
        events: list[SignalEvent] = []
        for info in update.participants:
            if info.sid == self.local.sid:
                events.extend(self._update_local(info))
            else:
                events.extend(self._update_remote(info))
        return events

    def _update_local(self, info: models_pb.ParticipantInfo) -> list[SignalEvent]:
        old = self.local
        if info.version and old.version and info.version < old.version:
            return []
        events: list[SignalEvent] = []
        sid = info.sid
        if info.metadata != old.metadata:
            events.append(ParticipantMetadataChanged(sid, old.metadata, info.metadata, local=True))
        if info.name != old.name:
            events.append(ParticipantNameChanged(sid, old.name, info.name, local=True))
        changed = _attribute_diff(dict(old.attributes), dict(info.attributes))
        if changed:
            events.append(ParticipantAttributesChanged(sid, changed, local=True))
        if info.permission != old.permission:
            events.append(ParticipantPermissionsChanged(sid, info.permission, local=True))
        old_tracks = {t.sid: t for t in old.tracks}
        for t in info.tracks:
            prev = old_tracks.get(t.sid)
            if prev is not None and prev.muted != t.muted:
                events.append(TrackMuted(sid, t, t.muted, local=True))
            elif prev is not None and prev != t:
                events.append(TrackUpdated(sid, t, local=True))
        self.local = _copy(info)  # type: ignore[assignment]
        return events

    def _update_remote(self, info: models_pb.ParticipantInfo) -> list[SignalEvent]:
        events: list[SignalEvent] = []
        old = self.participants.get(info.sid)
        if info.state == _DISCONNECTED:
            if old is None:
                return []
            del self.participants[info.sid]
            if self._sid_by_identity.get(old.identity) == info.sid:
                del self._sid_by_identity[old.identity]
            for t in old.tracks:
                events.append(TrackUnpublished(info.sid, t))
            merged = _copy(old)
            merged.state = _DISCONNECTED  # type: ignore[attr-defined]
            merged.disconnect_reason = info.disconnect_reason  # type: ignore[attr-defined]
            events.append(ParticipantLeft(merged, info.disconnect_reason))  # type: ignore[arg-type]
            return events
        if old is None:
            # same identity under a new sid: the old session is gone
            prev_sid = self._sid_by_identity.get(info.identity)
            if prev_sid is not None and prev_sid in self.participants:
                gone = self.participants.pop(prev_sid)
                for t in gone.tracks:
                    events.append(TrackUnpublished(prev_sid, t))
                events.append(ParticipantLeft(gone, models_pb.DisconnectReason.DUPLICATE_IDENTITY))
            self._store(info)
            events.append(ParticipantJoined(self.participants[info.sid]))
            for t in info.tracks:
                events.append(TrackPublished(info.sid, t))
            if info.state == _ACTIVE:
                events.append(ParticipantActive(info.sid))
            return events
        if info.version and old.version and info.version <= old.version:
            return []
        sid = info.sid
        if info.metadata != old.metadata:
            events.append(ParticipantMetadataChanged(sid, old.metadata, info.metadata))
        if info.name != old.name:
            events.append(ParticipantNameChanged(sid, old.name, info.name))
        changed = _attribute_diff(dict(old.attributes), dict(info.attributes))
        if changed:
            events.append(ParticipantAttributesChanged(sid, changed))
        if info.permission != old.permission:
            events.append(ParticipantPermissionsChanged(sid, info.permission))
        if info.state == _ACTIVE and old.state != _ACTIVE:
            events.append(ParticipantActive(sid))
        old_tracks = {t.sid: t for t in old.tracks}
        new_tracks = {t.sid: t for t in info.tracks}
        for tsid, t in old_tracks.items():
            if tsid not in new_tracks:
                events.append(TrackUnpublished(sid, t))
        for tsid, t in new_tracks.items():
            prev = old_tracks.get(tsid)
            if prev is None:
                events.append(TrackPublished(sid, t))
            elif prev.muted != t.muted:
                events.append(TrackMuted(sid, t, t.muted))
            elif prev != t:
                events.append(TrackUpdated(sid, t))
        self._store(info)
        return events

    def _on_room_update(self, update: rtc_pb.RoomUpdate, now: float) -> list[SignalEvent]:
        old = self.room
        self.room = _copy(update.room)  # type: ignore[assignment]
        if not self.room.sid:
            self.room.sid = old.sid
        return [RoomUpdated(old, self.room)]

    def _on_offer(self, sd: rtc_pb.SessionDescription, now: float) -> list[SignalEvent]:
        return [OfferReceived(sd.sdp, sd.id, dict(sd.mid_to_track_id))]

    def _on_answer(self, sd: rtc_pb.SessionDescription, now: float) -> list[SignalEvent]:
        return [AnswerReceived(sd.sdp, sd.id)]

    def _on_trickle(self, t: rtc_pb.TrickleRequest, now: float) -> list[SignalEvent]:
        return [TrickleReceived(t.candidateInit, int(t.target), bool(t.final))]

    def _on_leave(self, leave: rtc_pb.LeaveRequest, now: float) -> list[SignalEvent]:
        action = int(leave.action)
        if action == rtc_pb.LeaveRequest.DISCONNECT and leave.can_reconnect:
            action = rtc_pb.LeaveRequest.RECONNECT  # servers before protocol 13
        if action == rtc_pb.LeaveRequest.DISCONNECT:
            self.closed = True
        self.leave_reason = int(leave.reason)
        self._next_ping = None
        return [LeaveReceived(int(leave.reason), action)]

    def _on_reconnect(self, resp: rtc_pb.ReconnectResponse, now: float) -> list[SignalEvent]:
        return [ResumeAccepted(resp)]

    def _on_room_moved(self, moved: rtc_pb.RoomMovedResponse, now: float) -> list[SignalEvent]:
        self.room = _copy(moved.room)  # type: ignore[assignment]
        self.local = _copy(moved.participant)  # type: ignore[assignment]
        left = list(self.participants.values())
        self.participants = {}
        self._sid_by_identity = {}
        for info in moved.other_participants:
            self._store(info)
        return [RoomMoved(self.room, moved.token, self.local,
                          list(self.participants.values()), left)]

    def _on_request_response(self, rr: rtc_pb.RequestResponse, now: float) -> list[SignalEvent]:
        which = rr.WhichOneof("request") or ""
        cid = rr.add_track.cid if which == "add_track" else ""
        self._pending_update_metadata.discard(rr.request_id)
        return [RequestAnswered(rr.request_id, int(rr.reason), rr.message, which, cid)]

    def _on_track_published(self, r: rtc_pb.TrackPublishedResponse, now: float) -> list[SignalEvent]:
        return [TrackPublishedAck(r.cid, r.track)]

    def _on_track_unpublished(self, r: rtc_pb.TrackUnpublishedResponse,
                              now: float) -> list[SignalEvent]:
        return [TrackUnpublishedByServer(r.track_sid)]

    def _on_track_subscribed(self, r: rtc_pb.TrackSubscribed, now: float) -> list[SignalEvent]:
        return [LocalTrackSubscribed(r.track_sid)]

    def _on_subscription_response(self, r: rtc_pb.SubscriptionResponse,
                                  now: float) -> list[SignalEvent]:
        if r.err == 0 and not r.track_sid:
            return []
        return [SubscriptionFailed(r.track_sid, models_pb.SubscriptionError.Name(r.err))]

    def _on_mute(self, m: rtc_pb.MuteTrackRequest, now: float) -> list[SignalEvent]:
        return [MuteRequested(m.sid, m.muted)]

    def _on_stream_state_update(self, u: rtc_pb.StreamStateUpdate,
                                now: float) -> list[SignalEvent]:
        return [StreamStateChanged({i.track_sid: int(i.state) for i in u.stream_states})]

    def _on_speakers_changed(self, s: rtc_pb.SpeakersChanged, now: float) -> list[SignalEvent]:
        return [SpeakersChanged(list(s.speakers))]

    def _on_connection_quality(self, c: rtc_pb.ConnectionQualityUpdate,
                               now: float) -> list[SignalEvent]:
        return [ConnectionQualityChanged(list(c.updates))]

    def _on_subscribed_quality_update(self, u: rtc_pb.SubscribedQualityUpdate,
                                      now: float) -> list[SignalEvent]:
        # per codec when the server sends it (one codec is published), else the old list
        qualities = u.subscribed_codecs[0].qualities if u.subscribed_codecs else \
            u.subscribed_qualities
        return [SubscribedQualitiesChanged(
            u.track_sid, {int(q.quality): bool(q.enabled) for q in qualities})]

    def _on_refresh_token(self, token: str, now: float) -> list[SignalEvent]:
        return [TokenRefreshed(token)]

    def _on_pong_resp(self, pong: rtc_pb.Pong, now: float) -> list[SignalEvent]:
        self.rtt_ms = max(0, int(now * 1000) - int(pong.last_ping_timestamp))
        return [PongReceived(self.rtt_ms)]

    def _on_pong(self, value: int, now: float) -> list[SignalEvent]:
        return []


def _attribute_diff(old: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    """Attributes that changed: new or different values, removed keys map to ``""``."""
    changed = {k: v for k, v in new.items() if old.get(k) != v}
    for k in old:
        if k not in new:
            changed[k] = ""
    return changed
