"""The sans-I/O room core: join/leave, versions, tracks, subscriptions, data relay."""

from __future__ import annotations

import re

from livekit.protocol import models as models_pb, rtc as rtc_pb

from aiolivekit.server.auth import VideoGrant
from aiolivekit.server.rooms import (
    CloseTrack,
    Disconnect,
    RoomManager,
    RoomState,
    SendData,
    SendSignal,
    SetPaused,
    Subscribe,
    Unsubscribe,
)

NOW = 1_800_000_000.0
State = models_pb.ParticipantInfo.State


def grant(**kw: object) -> VideoGrant:
    g = VideoGrant(room_join=True, room="r", can_update_own_metadata=True)
    for k, v in kw.items():
        setattr(g, k, v)
    return g


def join(room: RoomState, identity: str, **kw: object):  # type: ignore[no-untyped-def]
    g = kw.pop("grant", None) or grant()
    return room.join(identity, g, NOW, name=identity.title(), **kw)  # type: ignore[arg-type]


def signals(effects: list, sid: str, kind: str) -> list[rtc_pb.SignalResponse]:
    return [e.response for e in effects
            if isinstance(e, SendSignal) and e.participant_sid == sid
            and e.response.WhichOneof("message") == kind]


def add_audio(room: RoomState, sid: str, cid: str = "cid-a", **kw: object) -> str:
    req = rtc_pb.AddTrackRequest(cid=cid, name="mic", type=models_pb.TrackType.AUDIO,
                                 source=models_pb.TrackSource.MICROPHONE, **kw)
    effects = room.add_track(sid, req, NOW)
    (resp,) = signals(effects, sid, "track_published")
    return resp.track_published.track.sid


def test_join_response_fields() -> None:
    room = RoomState("r", NOW)
    _, resp, effects = join(room, "alice", client_protocol=2, capabilities=[1])
    j = resp.join
    assert re.fullmatch(r"RM_[2-9A-Za-z]{12}", j.room.sid) and j.room.name == "r"
    assert re.fullmatch(r"PA_[2-9A-Za-z]{12}", j.participant.sid)
    assert j.participant.identity == "alice" and j.participant.name == "Alice"
    assert j.participant.client_protocol == 2 and list(j.participant.capabilities) == [1]
    assert j.ping_interval == 5 and j.ping_timeout == 15
    assert j.server_info.version == "1.13.5" == j.server_version
    assert j.server_info.protocol <= 17
    assert j.subscriber_primary and list(j.ice_servers) == []
    assert [c.mime for c in j.enabled_publish_codecs] == ["audio/opus", "audio/red", "video/VP8",
                                                          "video/H264"]
    # sessions are resumable: the clients must not be told to skip the resume
    assert j.client_configuration.resume_connection != models_pb.ClientConfigSetting.DISABLED
    assert list(j.other_participants) == [] and effects == []


def test_second_join_sees_first_and_first_gets_update() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice", metadata="ma")
    b, resp, effects = join(room, "bob")
    assert [o.identity for o in resp.join.other_participants] == ["alice"]
    assert resp.join.other_participants[0].metadata == "ma"
    (upd,) = signals(effects, a.sid, "update")
    assert upd.update.participants[0].identity == "bob"
    assert signals(effects, b.sid, "update") == []


def test_versions_increase_on_every_change() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    b, _, _ = join(room, "bob")
    seen = [a.version]
    for effects in (room.set_active(a.sid),
                    room.update_metadata(a.sid, rtc_pb.UpdateParticipantMetadata(metadata="x")),
                    room.update_metadata(a.sid, rtc_pb.UpdateParticipantMetadata(name="N"))):
        (upd,) = signals(effects, b.sid, "update")
        seen.append(upd.update.participants[0].version)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


def test_active_state_and_leave() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    b, _, _ = join(room, "bob")
    (upd,) = signals(room.set_active(a.sid), b.sid, "update")
    assert upd.update.participants[0].state == State.ACTIVE
    assert room.set_active(a.sid) == []  # no change, no update
    effects = room.leave(a.sid)
    (upd,) = signals(effects, b.sid, "update")
    assert upd.update.participants[0].state == State.DISCONNECTED
    assert (upd.update.participants[0].disconnect_reason
            == models_pb.DisconnectReason.CLIENT_INITIATED)
    assert list(room.participants) == [b.sid]


def test_duplicate_identity_replaces_old() -> None:
    room = RoomState("r", NOW)
    old, _, _ = join(room, "alice")
    other, _, _ = join(room, "bob")
    new, resp, effects = join(room, "alice")
    assert effects[0] == Disconnect(old.sid, models_pb.DisconnectReason.DUPLICATE_IDENTITY)
    updates = [u.update.participants[0] for u in signals(effects, other.sid, "update")]
    assert [(u.sid, u.state) for u in updates] == [(old.sid, State.DISCONNECTED),
                                                   (new.sid, State.JOINED)]
    assert [o.identity for o in resp.join.other_participants] == ["bob"]


def test_hidden_participant_is_invisible() -> None:
    room = RoomState("r", NOW)
    join(room, "alice")
    _, _, effects = join(room, "ghost", grant=grant(hidden=True))
    assert effects == []
    _, resp, _ = join(room, "bob")
    assert [o.identity for o in resp.join.other_participants] == ["alice"]


def test_add_track_response() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    req = rtc_pb.AddTrackRequest(cid="c1", name="mic", type=models_pb.TrackType.AUDIO,
                                 source=models_pb.TrackSource.MICROPHONE, stereo=True,
                                 disable_dtx=True, encryption=models_pb.Encryption.Type.GCM)
    (resp,) = signals(room.add_track(a.sid, req, NOW), a.sid, "track_published")
    t = resp.track_published.track
    assert resp.track_published.cid == "c1"
    assert re.fullmatch(r"TR_AM[2-9A-Za-z]{12}", t.sid)
    assert t.mime_type == "audio/opus" and t.encryption == models_pb.Encryption.Type.GCM
    assert t.source == models_pb.TrackSource.MICROPHONE and t.stream == "camera"
    assert set(t.audio_features) == {models_pb.AudioTrackFeature.TF_STEREO,
                                     models_pb.AudioTrackFeature.TF_NO_DTX}
    # same cid again -> same sid
    (again,) = signals(room.add_track(a.sid, req, NOW), a.sid, "track_published")
    assert again.track_published.track.sid == t.sid
    vreq = rtc_pb.AddTrackRequest(cid="v1", type=models_pb.TrackType.VIDEO, width=640, height=480,
                                  source=models_pb.TrackSource.CAMERA)
    (vresp,) = signals(room.add_track(a.sid, vreq, NOW), a.sid, "track_published")
    vt = vresp.track_published.track
    assert vt.sid.startswith("TR_VC") and (vt.width, vt.height) == (640, 480)
    assert vt.mime_type == "video/VP8"


def test_add_track_refused_without_permission() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice", grant=grant(can_publish_sources=["camera"]))
    req = rtc_pb.AddTrackRequest(cid="c1", type=models_pb.TrackType.AUDIO,
                                 source=models_pb.TrackSource.MICROPHONE)
    effects = room.add_track(a.sid, req, NOW)
    (resp,) = signals(effects, a.sid, "request_response")
    assert resp.request_response.reason == rtc_pb.RequestResponse.Reason.NOT_ALLOWED
    assert resp.request_response.add_track.cid == "c1"
    b, _, _ = join(room, "bob", grant=grant(can_publish=False))
    (resp,) = signals(room.add_track(b.sid, req, NOW), b.sid, "request_response")
    assert resp.request_response.reason == rtc_pb.RequestResponse.Reason.NOT_ALLOWED


def test_publish_orders_update_before_subscribe_and_track_subscribed_once() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    b, _, _ = join(room, "bob")
    c, _, _ = join(room, "carol", auto_subscribe=False)
    sid = add_audio(room, a.sid)
    t = room.match_pending_track(a.sid, "audio", "unknown-msid")  # falls back to kind
    assert t is not None and t.info.sid == sid
    effects = room.publish_track(a.sid, sid, mid="3", mime_type="audio/opus")
    kinds = [(type(e).__name__, e.participant_sid if isinstance(e, SendSignal)
              else getattr(e, "subscriber_sid", "")) for e in effects]
    assert kinds.index(("SendSignal", b.sid)) < kinds.index(("Subscribe", b.sid))
    assert Subscribe(b.sid, a.sid, sid) in effects
    assert not any(isinstance(e, Subscribe) and e.subscriber_sid == c.sid for e in effects)
    (upd,) = signals(effects, b.sid, "update")
    assert [tr.sid for tr in upd.update.participants[0].tracks] == [sid]
    assert upd.update.participants[0].tracks[0].mid == "3"
    assert len(signals(effects, a.sid, "track_subscribed")) == 1
    # carol subscribes manually: idempotent, no second TrackSubscribed
    e1 = room.update_subscription(c.sid, [sid, sid], True)
    assert e1 == [Subscribe(c.sid, a.sid, sid)]
    assert room.update_subscription(c.sid, [sid], True) == []
    assert room.update_subscription(c.sid, [sid], False) == [Unsubscribe(c.sid, a.sid, sid)]
    assert room.update_subscription(c.sid, [sid], False) == []
    # new joiner is subscribed to the existing track at join
    d, resp, effects = join(room, "dave")
    assert Subscribe(d.sid, a.sid, sid) in effects
    assert [tr.sid for o in resp.join.other_participants for tr in o.tracks] == [sid]


def test_match_pending_prefers_cid() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    first = add_audio(room, a.sid, cid="one")
    second = add_audio(room, a.sid, cid="two")
    t = room.match_pending_track(a.sid, "audio", "two")
    assert t is not None and t.info.sid == second
    assert room.match_pending_track(a.sid, "video", "two") is None
    assert first != second


def test_unpublish_and_leave_remove_subscriptions() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    b, _, _ = join(room, "bob")
    sid = add_audio(room, a.sid)
    room.publish_track(a.sid, sid)
    assert room.subscribed_tracks(b.sid) == [sid]
    effects = room.unpublish_track(a.sid, sid)
    assert Unsubscribe(b.sid, a.sid, sid) in effects and CloseTrack(a.sid, sid) in effects
    (upd,) = signals(effects, b.sid, "update")
    assert list(upd.update.participants[0].tracks) == []
    assert room.subscribed_tracks(b.sid) == []
    sid2 = add_audio(room, a.sid, cid="c2")
    room.publish_track(a.sid, sid2)
    effects = room.leave(a.sid)
    assert effects.index(Unsubscribe(b.sid, a.sid, sid2)) < effects.index(CloseTrack(a.sid, sid2))


def test_mute_and_track_settings() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    b, _, _ = join(room, "bob")
    sid = add_audio(room, a.sid)
    room.publish_track(a.sid, sid)
    (upd,) = signals(room.mute_track(a.sid, sid, True), b.sid, "update")
    assert upd.update.participants[0].tracks[0].muted
    (rr,) = signals(room.mute_track(a.sid, "TR_nope", True), a.sid, "request_response")
    assert rr.request_response.reason == rtc_pb.RequestResponse.Reason.NOT_FOUND
    assert room.update_track_settings(b.sid, [sid], True) == [SetPaused(b.sid, a.sid, sid, True)]
    assert room.update_track_settings(b.sid, [sid], True) == []
    info, effects = room.admin_mute_track("alice", sid, False)
    assert not info.muted
    (m,) = signals(effects, a.sid, "mute")
    assert m.mute.sid == sid and not m.mute.muted


def test_update_metadata_request_response() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    b, _, _ = join(room, "bob")
    req = rtc_pb.UpdateParticipantMetadata(metadata="new", attributes={"k": "v"}, request_id=7)
    effects = room.update_metadata(a.sid, req)
    (rr,) = signals(effects, a.sid, "request_response")
    assert rr.request_response.request_id == 7
    assert rr.request_response.reason == rtc_pb.RequestResponse.Reason.OK
    (own,) = signals(effects, a.sid, "update")
    (other,) = signals(effects, b.sid, "update")
    assert own.update.participants[0].metadata == other.update.participants[0].metadata == "new"
    assert dict(other.update.participants[0].attributes) == {"k": "v"}
    effects = room.update_metadata(a.sid, rtc_pb.UpdateParticipantMetadata(
        attributes={"k": ""}, request_id=8))
    (other,) = signals(effects, b.sid, "update")
    assert dict(other.update.participants[0].attributes) == {}
    c, _, _ = join(room, "carol", grant=grant(can_update_own_metadata=False))
    effects = room.update_metadata(c.sid, rtc_pb.UpdateParticipantMetadata(metadata="x",
                                                                           request_id=9))
    (rr,) = signals(effects, c.sid, "request_response")
    assert rr.request_response.reason == rtc_pb.RequestResponse.Reason.NOT_ALLOWED
    assert signals(effects, a.sid, "update") == []


def test_room_metadata_room_update() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    (ru,) = signals(room.set_metadata("hello"), a.sid, "room_update")
    assert ru.room_update.room.metadata == "hello" and ru.room_update.room.sid == room.sid


def _packet(payload: bytes, seq: int = 0, dest: list[str] | None = None,
            kind: int = models_pb.DataPacket.Kind.LOSSY) -> bytes:
    return models_pb.DataPacket(kind=kind, sequence=seq, participant_identity="spoofed",
                                destination_identities=dest or [],
                                user=models_pb.UserPacket(payload=payload, topic="t")
                                ).SerializeToString()


def test_data_relay() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    b, _, _ = join(room, "bob")
    c, _, _ = join(room, "carol")
    effects = room.receive_data(a.sid, _packet(b"hi", seq=1), reliable=True)
    assert sorted(e.participant_sid for e in effects) == sorted([b.sid, c.sid])
    out = models_pb.DataPacket.FromString(effects[0].payload)
    assert isinstance(effects[0], SendData) and effects[0].reliable
    assert out.participant_identity == "alice" and out.participant_sid == a.sid
    assert out.kind == models_pb.DataPacket.Kind.RELIABLE  # from the channel, not the field
    assert out.user.payload == b"hi" and out.user.topic == "t"
    # duplicate / old sequence dropped; lossy ignores sequences
    assert room.receive_data(a.sid, _packet(b"hi", seq=1), reliable=True) == []
    assert len(room.receive_data(a.sid, _packet(b"x", seq=1), reliable=False)) == 2
    # destinations
    effects = room.receive_data(a.sid, _packet(b"only", seq=2, dest=["carol"]), reliable=True)
    assert [e.participant_sid for e in effects] == [c.sid]
    # garbage dropped
    assert room.receive_data(a.sid, b"\xff\xff\xff", reliable=True) == []
    # no canPublishData
    d, _, _ = join(room, "dave", grant=grant(can_publish_data=False))
    assert room.receive_data(d.sid, _packet(b"no", seq=1), reliable=True) == []


def test_agent_streams_on_behalf_of_a_participant() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    g, _, _ = join(room, "agent-1", kind="agent")
    m, _, _ = join(room, "mallory")

    def stream(sender_sid: str, claimed: str, seq: int, field: str = "stream_header") -> str:
        packet = models_pb.DataPacket(participant_identity=claimed, sequence=seq)
        getattr(packet, field).stream_id = "S"
        effects = room.receive_data(sender_sid, packet.SerializeToString(), reliable=True)
        return models_pb.DataPacket.FromString(effects[0].payload).participant_identity

    # an agent may name a participant of the room as the sender of a data stream
    assert stream(g.sid, "alice", 1) == "alice"
    assert stream(g.sid, "alice", 2, "stream_chunk") == "alice"
    assert stream(g.sid, "alice", 3, "stream_trailer") == "alice"
    # not someone absent, not on other packets, and not a standard participant
    assert stream(g.sid, "nobody", 4) == "agent-1"
    user = models_pb.DataPacket(participant_identity="alice", sequence=5)
    user.user.payload = b"x"
    effects = room.receive_data(g.sid, user.SerializeToString(), reliable=True)
    assert models_pb.DataPacket.FromString(effects[0].payload).participant_identity == "agent-1"
    assert stream(m.sid, "alice", 1) == "mallory"
    assert stream(a.sid, "", 1) == "alice"


def test_manager_delete_room() -> None:
    mgr = RoomManager()
    room = mgr.get_or_create("r", NOW)
    a, _, _ = join(room, "alice")
    b, _, _ = join(room, "bob")
    effects = mgr.delete("r")
    assert Disconnect(a.sid, models_pb.DisconnectReason.ROOM_DELETED) in effects
    assert Disconnect(b.sid, models_pb.DisconnectReason.ROOM_DELETED) in effects
    assert "r" not in mgr.rooms


def test_manager_prunes_empty_rooms() -> None:
    mgr = RoomManager()
    created = mgr.get_or_create("created", NOW)  # never joined: empty_timeout (300 s)
    used = mgr.get_or_create("used", NOW)
    a, _, _ = join(used, "alice")
    assert mgr.prune(NOW) == []
    used.leave(a.sid)
    assert mgr.prune(NOW + 1) == []
    assert mgr.prune(NOW + 1 + used.departure_timeout) == ["used"]
    assert mgr.prune(NOW + created.empty_timeout - 1) == []
    assert mgr.prune(NOW + created.empty_timeout + 1) == ["created"]
    assert mgr.rooms == {}


def test_subscription_permissions() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    b, _, _ = join(room, "bob")
    c, _, _ = join(room, "carol")
    only_bob = rtc_pb.SubscriptionPermission(all_participants=False, track_permissions=[
        rtc_pb.TrackPermission(participant_identity="bob", all_tracks=True)])
    assert room.set_subscription_permission(a.sid, only_bob) == []  # nothing published yet
    sid = add_audio(room, a.sid)
    room.match_pending_track(a.sid, "audio", "x")
    effects = room.publish_track(a.sid, sid, mid="0", mime_type="audio/opus")
    assert Subscribe(b.sid, a.sid, sid) in effects
    assert not any(isinstance(e, Subscribe) and e.subscriber_sid == c.sid for e in effects)
    (upd,) = signals(effects, c.sid, "subscription_permission_update")
    assert (upd.subscription_permission_update.participant_sid,
            upd.subscription_permission_update.track_sid,
            upd.subscription_permission_update.allowed) == (a.sid, sid, False)
    # an explicit subscription is refused too
    e = room.update_subscription(c.sid, [sid], True)
    assert not any(isinstance(x, Subscribe) for x in e)
    assert signals(e, c.sid, "subscription_permission_update")
    # carol allowed for this track (by sid), bob no longer: bob unsubscribed, carol subscribed
    per_track = rtc_pb.SubscriptionPermission(track_permissions=[
        rtc_pb.TrackPermission(participant_sid=c.sid, track_sids=[sid])])
    effects = room.set_subscription_permission(a.sid, per_track)
    assert Unsubscribe(b.sid, a.sid, sid) in effects and Subscribe(c.sid, a.sid, sid) in effects
    assert signals(effects, b.sid, "subscription_permission_update")[0] \
        .subscription_permission_update.allowed is False
    assert signals(effects, c.sid, "subscription_permission_update")[0] \
        .subscription_permission_update.allowed is True
    assert room.subscribed_tracks(b.sid) == [] and room.subscribed_tracks(c.sid) == [sid]
    # everyone again
    effects = room.set_subscription_permission(
        a.sid, rtc_pb.SubscriptionPermission(all_participants=True))
    assert Subscribe(b.sid, a.sid, sid) in effects
    assert not any(isinstance(x, Unsubscribe) for x in effects)
