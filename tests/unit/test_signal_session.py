"""SignalSession: join, participant diffs with versions, tracks, leave, requests, ping timing."""

from __future__ import annotations

from livekit.protocol import models as models_pb, rtc as rtc_pb

from aiolivekit.engine import signal as sig


def _pinfo(sid: str, identity: str, version: int, **kw: object) -> models_pb.ParticipantInfo:
    return models_pb.ParticipantInfo(sid=sid, identity=identity, version=version, **kw)  # type: ignore[arg-type]


def _track(sid: str, name: str = "t", muted: bool = False) -> models_pb.TrackInfo:
    return models_pb.TrackInfo(sid=sid, name=name, type=models_pb.TrackType.AUDIO, muted=muted)


def _join(others: tuple[models_pb.ParticipantInfo, ...] | list[models_pb.ParticipantInfo] = (),
          ping_interval: int = 5, ping_timeout: int = 15) -> rtc_pb.SignalResponse:
    return rtc_pb.SignalResponse(join=rtc_pb.JoinResponse(
        room=models_pb.Room(sid="RM_1", name="r", metadata="rm"),
        participant=_pinfo("PA_me", "me", 1, name="Me", metadata="m0"),
        other_participants=list(others), ping_interval=ping_interval, ping_timeout=ping_timeout,
        subscriber_primary=True))


def _update(*infos: models_pb.ParticipantInfo) -> rtc_pb.SignalResponse:
    return rtc_pb.SignalResponse(update=rtc_pb.ParticipantUpdate(participants=list(infos)))


def _joined(others: tuple[models_pb.ParticipantInfo, ...] | list[models_pb.ParticipantInfo] = (),
            ) -> sig.SignalSession:
    s = sig.SignalSession()
    s.receive(_join(others), 100.0)
    s.drain()
    return s


def test_messages_before_join_are_ignored() -> None:
    s = sig.SignalSession()
    assert s.receive(_update(_pinfo("PA_a", "a", 1)), 0.0) == []
    assert s.participants == {}


def test_join_stores_room_local_and_others() -> None:
    s = sig.SignalSession()
    other = _pinfo("PA_a", "alice", 3, tracks=[_track("TR_1")])
    events = s.receive(_join([other]), 10.0)
    assert len(events) == 1 and isinstance(events[0], sig.Joined)
    assert s.room.sid == "RM_1" and s.local.identity == "me"
    assert list(s.participants) == ["PA_a"]
    assert s.participants["PA_a"].tracks[0].sid == "TR_1"
    # the first ping is due right away
    assert s.next_timer() == 10.0


def test_new_participant_then_tracks_then_active() -> None:
    s = _joined()
    info = _pinfo("PA_b", "bob", 1, tracks=[_track("TR_x")], state=models_pb.ParticipantInfo.ACTIVE)
    events = s.receive(_update(info), 101.0)
    assert [type(e) for e in events] == [sig.ParticipantJoined, sig.TrackPublished,
                                         sig.ParticipantActive]
    assert events[1].track.sid == "TR_x"  # type: ignore[union-attr]


def test_stale_versions_are_ignored_and_changes_diffed() -> None:
    s = _joined([_pinfo("PA_a", "alice", 5, metadata="m", name="A", attributes={"k": "1"})])
    assert s.receive(_update(_pinfo("PA_a", "alice", 5, metadata="x")), 101.0) == []
    assert s.receive(_update(_pinfo("PA_a", "alice", 4, metadata="x")), 101.0) == []
    events = s.receive(_update(_pinfo("PA_a", "alice", 6, metadata="m2", name="A2",
                                      attributes={"k": "2", "n": "3"})), 102.0)
    assert events == [
        sig.ParticipantMetadataChanged("PA_a", "m", "m2"),
        sig.ParticipantNameChanged("PA_a", "A", "A2"),
        sig.ParticipantAttributesChanged("PA_a", {"k": "2", "n": "3"}),
    ]
    events = s.receive(_update(_pinfo("PA_a", "alice", 7, metadata="m2", name="A2",
                                      attributes={"n": "3"})), 103.0)
    assert events == [sig.ParticipantAttributesChanged("PA_a", {"k": ""})]


def test_track_mute_unpublish_and_leave_order() -> None:
    s = _joined([_pinfo("PA_a", "alice", 1, tracks=[_track("TR_1"), _track("TR_2")])])
    events = s.receive(_update(_pinfo("PA_a", "alice", 2,
                                      tracks=[_track("TR_1", muted=True), _track("TR_2")])), 1.0)
    assert len(events) == 1 and isinstance(events[0], sig.TrackMuted) and events[0].muted
    events = s.receive(_update(_pinfo("PA_a", "alice", 3, tracks=[_track("TR_1", muted=True)])), 1.0)
    assert [type(e) for e in events] == [sig.TrackUnpublished]
    assert events[0].track.sid == "TR_2"  # type: ignore[union-attr]
    left = _pinfo("PA_a", "alice", 4, state=models_pb.ParticipantInfo.DISCONNECTED,
                  disconnect_reason=models_pb.DisconnectReason.CLIENT_INITIATED)
    events = s.receive(_update(left), 2.0)
    assert [type(e) for e in events] == [sig.TrackUnpublished, sig.ParticipantLeft]
    assert events[1].reason == models_pb.DisconnectReason.CLIENT_INITIATED  # type: ignore[union-attr]
    assert events[1].info.identity == "alice"  # type: ignore[union-attr]
    assert s.participants == {}
    # a repeated DISCONNECTED update for an unknown sid is ignored
    assert s.receive(_update(left), 3.0) == []


def test_same_identity_new_sid_replaces_old_session() -> None:
    s = _joined([_pinfo("PA_a", "alice", 1)])
    events = s.receive(_update(_pinfo("PA_a2", "alice", 1)), 1.0)
    assert [type(e) for e in events] == [sig.ParticipantLeft, sig.ParticipantJoined]
    assert events[0].info.sid == "PA_a" and events[1].info.sid == "PA_a2"  # type: ignore[union-attr]
    assert list(s.participants) == ["PA_a2"]


def test_local_updates_are_reported_as_local() -> None:
    s = _joined()
    events = s.receive(_update(_pinfo("PA_me", "me", 2, name="Me", metadata="new")), 1.0)
    assert events == [sig.ParticipantMetadataChanged("PA_me", "m0", "new", local=True)]
    assert s.local.metadata == "new"


def test_update_metadata_request_and_response() -> None:
    s = _joined()
    rid = s.update_metadata(metadata="x", attributes={"a": "b"})
    (req,) = s.drain()
    assert req.WhichOneof("message") == "update_metadata"
    assert req.update_metadata.request_id == rid
    assert req.update_metadata.metadata == "x"
    assert req.update_metadata.name == "Me"  # current name is sent along
    assert dict(req.update_metadata.attributes) == {"a": "b"}
    rr = rtc_pb.SignalResponse(request_response=rtc_pb.RequestResponse(
        request_id=rid, reason=rtc_pb.RequestResponse.NOT_ALLOWED, message="nope",
        update_metadata=req.update_metadata))
    (ev,) = s.receive(rr, 1.0)
    assert ev == sig.RequestAnswered(rid, rtc_pb.RequestResponse.NOT_ALLOWED, "nope",
                                     "update_metadata")
    assert s.update_metadata(name="n") == rid + 1


def test_offer_answer_trickle_events_and_requests() -> None:
    s = _joined()
    off = rtc_pb.SignalResponse(offer=rtc_pb.SessionDescription(
        type="offer", sdp="v=0", id=7, mid_to_track_id={"0": "TR_a"}))
    assert s.receive(off, 1.0) == [sig.OfferReceived("v=0", 7, {"0": "TR_a"})]
    tr = rtc_pb.SignalResponse(trickle=rtc_pb.TrickleRequest(
        candidateInit='{"candidate":""}', target=rtc_pb.SignalTarget.SUBSCRIBER, final=True))
    assert s.receive(tr, 1.0) == [sig.TrickleReceived('{"candidate":""}', sig.SUBSCRIBER, True)]
    s.send_answer("ans", 7)
    assert s.send_offer("o1") == 1 and s.send_offer("o2") == 2
    s.send_trickle("{}", sig.PUBLISHER)
    reqs = s.drain()
    assert [r.WhichOneof("message") for r in reqs] == ["answer", "offer", "offer", "trickle"]
    assert reqs[0].answer.id == 7 and reqs[2].offer.id == 2
    assert reqs[3].trickle.target == sig.PUBLISHER


def test_track_published_ack_and_subscription_requests() -> None:
    s = _joined()
    s.add_track(rtc_pb.AddTrackRequest(cid="c1", name="mic"))
    s.mute_track("TR_1", True)
    s.update_subscription(["TR_9"], False, "PA_a")
    reqs = s.drain()
    assert [r.WhichOneof("message") for r in reqs] == ["add_track", "mute", "subscription"]
    sub = reqs[2].subscription
    assert list(sub.track_sids) == ["TR_9"] and not sub.subscribe
    assert sub.participant_tracks[0].participant_sid == "PA_a"
    ack = rtc_pb.SignalResponse(track_published=rtc_pb.TrackPublishedResponse(
        cid="c1", track=models_pb.TrackInfo(sid="TR_1")))
    (ev,) = s.receive(ack, 1.0)
    assert isinstance(ev, sig.TrackPublishedAck) and ev.cid == "c1" and ev.track.sid == "TR_1"
    (ev,) = s.receive(rtc_pb.SignalResponse(track_subscribed=rtc_pb.TrackSubscribed(
        track_sid="TR_1")), 1.0)
    assert ev == sig.LocalTrackSubscribed("TR_1")


def test_leave_from_server_closes_session() -> None:
    s = _joined()
    leave = rtc_pb.SignalResponse(leave=rtc_pb.LeaveRequest(
        reason=models_pb.DisconnectReason.PARTICIPANT_REMOVED))
    assert s.receive(leave, 1.0) == [
        sig.LeaveReceived(models_pb.DisconnectReason.PARTICIPANT_REMOVED,
                          rtc_pb.LeaveRequest.DISCONNECT)]
    assert s.closed and s.next_timer() is None and s.handle_timer(1000.0) == []


def test_client_leave_is_sent_once() -> None:
    s = _joined()
    s.leave()
    s.leave()
    reqs = s.drain()
    assert len(reqs) == 1
    assert reqs[0].leave.reason == models_pb.DisconnectReason.CLIENT_INITIATED
    assert reqs[0].leave.action == rtc_pb.LeaveRequest.DISCONNECT


def test_ping_schedule_and_timeout_with_fake_time() -> None:
    s = sig.SignalSession()
    s.receive(_join(ping_interval=5, ping_timeout=15), 100.0)
    assert s.next_timer() == 100.0
    s.handle_timer(100.0)
    (ping,) = s.drain()
    assert ping.WhichOneof("message") == "ping_req" and ping.ping_req.timestamp == 100000
    assert s.next_timer() == 105.0
    assert s.handle_timer(104.9) == [] and s.drain() == []
    # the pong measures the RTT, and resets the silence timer
    pong = rtc_pb.SignalResponse(pong_resp=rtc_pb.Pong(last_ping_timestamp=100000,
                                                       timestamp=1))
    assert s.receive(pong, 100.25) == [sig.PongReceived(250)]
    s.handle_timer(105.0)
    (ping,) = s.drain()
    assert ping.ping_req.rtt == 250
    # a long stall: pings are not bursted, the timeout fires once at last_received + 15
    assert s.next_timer() == 110.0
    assert s.handle_timer(114.0) == []
    assert len(s.drain()) == 1
    assert s.next_timer() == 115.25
    events = s.handle_timer(115.25)
    assert len(events) == 1 and isinstance(events[0], sig.PingTimeout)
    assert events[0].silent_for == 15.0
    assert s.handle_timer(200.0) == []  # reported once
    # any message re-arms it
    s.receive(pong, 300.0)
    assert any(isinstance(e, sig.PingTimeout) for e in s.handle_timer(315.0))


def test_room_update_keeps_sid() -> None:
    s = _joined()
    (ev,) = s.receive(rtc_pb.SignalResponse(room_update=rtc_pb.RoomUpdate(
        room=models_pb.Room(name="r", metadata="new"))), 1.0)
    assert isinstance(ev, sig.RoomUpdated)
    assert ev.old.metadata == "rm" and ev.new.metadata == "new" and s.room.sid == "RM_1"


def test_stream_state_and_subscription_failure_events() -> None:
    s = _joined()
    upd = rtc_pb.SignalResponse(stream_state_update=rtc_pb.StreamStateUpdate(stream_states=[
        rtc_pb.StreamStateInfo(participant_sid="PA_a", track_sid="TR_1",
                               state=rtc_pb.StreamState.PAUSED)]))
    assert s.receive(upd, 1.0) == [sig.StreamStateChanged({"TR_1": rtc_pb.StreamState.PAUSED})]
    resp = rtc_pb.SignalResponse(subscription_response=rtc_pb.SubscriptionResponse(
        track_sid="TR_2", err=models_pb.SubscriptionError.SE_TRACK_NOTFOUND))
    assert s.receive(resp, 1.0) == [sig.SubscriptionFailed("TR_2", "SE_TRACK_NOTFOUND")]


# ---------------------------------------------------------------------- resume


def test_requests_are_held_while_the_signal_is_down_except_pass_through() -> None:
    s = _joined()
    s.signal_lost()
    assert s.next_timer() is None  # no ping, no ping timeout without a connection
    s.mute_track("TR_a", True)
    s.send_trickle('{"candidate": "c"}', sig.PUBLISHER)
    s.update_metadata(metadata="x")
    s.sync_state(rtc_pb.SyncState())
    assert s.has_outgoing()
    assert [r.WhichOneof("message") for r in s.drain()] == ["trickle", "sync_state"]
    assert not s.has_outgoing()
    s.signal_reopened(200.0)
    assert s.next_timer() == 200.0  # ping at once on the new connection
    assert [r.WhichOneof("message") for r in s.drain()] == []
    s.resume_done()
    assert [r.WhichOneof("message") for r in s.drain()] == ["mute", "update_metadata"]


def test_leave_actions() -> None:
    for action, closed in ((rtc_pb.LeaveRequest.DISCONNECT, True),
                           (rtc_pb.LeaveRequest.RESUME, False),
                           (rtc_pb.LeaveRequest.RECONNECT, False)):
        s = _joined()
        events = s.receive(rtc_pb.SignalResponse(leave=rtc_pb.LeaveRequest(
            reason=models_pb.DisconnectReason.CONNECTION_TIMEOUT, action=action)), 101.0)
        assert [(type(e), e.action) for e in events] == [(sig.LeaveReceived, action)]  # type: ignore[union-attr]
        assert s.closed is closed
    legacy = _joined()
    events = legacy.receive(rtc_pb.SignalResponse(leave=rtc_pb.LeaveRequest(
        can_reconnect=True, reason=models_pb.DisconnectReason.STATE_MISMATCH)), 101.0)
    assert events[0].action == rtc_pb.LeaveRequest.RECONNECT  # type: ignore[union-attr]
    assert not legacy.closed


def test_reconnect_response_and_room_moved() -> None:
    s = _joined([_pinfo("PA_b", "bob", 1)])
    events = s.receive(rtc_pb.SignalResponse(reconnect=rtc_pb.ReconnectResponse(
        last_message_seq=42)), 101.0)
    assert isinstance(events[0], sig.ResumeAccepted)
    assert events[0].response.last_message_seq == 42
    moved = rtc_pb.RoomMovedResponse(room=models_pb.Room(sid="RM_2", name="r2"), token="tok",
                                     participant=_pinfo("PA_me", "me", 3),
                                     other_participants=[_pinfo("PA_c", "carol", 1)])
    events = s.receive(rtc_pb.SignalResponse(room_moved=moved), 102.0)
    assert len(events) == 1 and isinstance(events[0], sig.RoomMoved)
    ev = events[0]
    assert ev.room.name == "r2" and ev.token == "tok"
    assert [p.identity for p in ev.left] == ["bob"]
    assert [p.identity for p in ev.joined] == ["carol"]
    assert list(s.participants) == ["PA_c"] and s.room.sid == "RM_2"
