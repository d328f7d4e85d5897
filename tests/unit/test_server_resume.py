"""Sans-I/O signal loss, departure timeout, resume, SimulateScenario, speaker detection
and connection-quality scoring of the embedded server (time passed in)."""

from __future__ import annotations

import pytest
from livekit.protocol import models as models_pb, rtc as rtc_pb

from aiolivekit.server.auth import VideoGrant
from aiolivekit.server.effects import CloseSignal, CloseTrack, Disconnect, IceRestart, SendSignal
from aiolivekit.server.quality import LinkSample, QualityScorer, quality_for, score
from aiolivekit.server.rooms import RoomManager, RoomState
from aiolivekit.server.speakers import AudioLevelMeter, SpeakerObserver, linear_level

NOW = 1_800_000_000.0
Reason = models_pb.DisconnectReason
Action = rtc_pb.LeaveRequest.Action
Quality = models_pb.ConnectionQuality


def _join(room: RoomState, identity: str, protocol: int = 17) -> str:
    g = VideoGrant(room_join=True, room=room.name)
    p, _, _ = room.join(identity, g, NOW, protocol=protocol)
    room.set_active(p.sid)
    return p.sid


def _publish_audio(room: RoomState, sid: str) -> str:
    req = rtc_pb.AddTrackRequest(cid="c1", type=models_pb.TrackType.AUDIO,
                                 source=models_pb.TrackSource.MICROPHONE)
    (resp,) = [e for e in room.add_track(sid, req, NOW) if isinstance(e, SendSignal)]
    track_sid = resp.response.track_published.track.sid
    room.publish_track(sid, track_sid, mid="0", mime_type="audio/opus")
    return track_sid


def _to(effects: list, sid: str) -> list[str | None]:
    return [e.response.WhichOneof("message") for e in effects
            if isinstance(e, SendSignal) and e.participant_sid == sid]


def test_signal_loss_keeps_the_participant_until_the_departure_deadline() -> None:
    room = RoomState("r", NOW, departure_timeout=2.5)
    alice, bob = _join(room, "alice"), _join(room, "bob")
    track = _publish_audio(room, alice)
    assert room.signal_lost(alice, NOW + 1) == []  # the others see nothing
    assert room.next_departure() == NOW + 3.5
    assert room.expire_departures(NOW + 3.4) == []
    assert alice in room.participants and track in room.subscriptions
    effects = room.expire_departures(NOW + 3.5)
    assert effects[0] == Disconnect(alice, Reason.CONNECTION_TIMEOUT, Action.DISCONNECT,
                                    send_leave=False)
    assert CloseTrack(alice, track) in effects
    (update,) = [e.response.update for e in effects
                 if isinstance(e, SendSignal) and e.participant_sid == bob]
    assert update.participants[0].sid == alice
    assert update.participants[0].state == models_pb.ParticipantInfo.State.DISCONNECTED
    assert update.participants[0].disconnect_reason == Reason.CONNECTION_TIMEOUT
    assert alice not in room.participants and room.next_departure() is None


def test_resume_messages_in_livekit_server_order() -> None:
    room = RoomState("r", NOW)
    alice, bob, carol = _join(room, "alice"), _join(room, "bob"), _join(room, "carol")
    dave = _join(room, "dave")
    room.leave(dave)                       # left before alice's signal loss: not resent
    room.participants[alice].last_reliable_seq = 41
    room.signal_lost(alice, NOW + 1)
    room.leave(carol)                      # left while alice had no signal
    effects = room.resume(alice, NOW + 2)
    assert _to(effects, alice) == ["reconnect", "update", "update", "room_update"]
    assert _to(effects, bob) == []
    assert effects[-1] == IceRestart(alice)
    sent = [e.response for e in effects if isinstance(e, SendSignal)]
    reconnect = sent[0].reconnect
    assert reconnect.last_message_seq == 41
    assert reconnect.server_info.version and reconnect.server_info.protocol > 0
    assert reconnect.client_configuration.resume_connection != \
        models_pb.ClientConfigSetting.DISABLED
    gone = sent[1].update.participants
    assert [(p.sid, p.state) for p in gone] == [
        (carol, models_pb.ParticipantInfo.State.DISCONNECTED)]
    assert {p.sid for p in sent[2].update.participants} == {alice, bob}
    p = room.participants[alice]
    assert p.signal_connected and p.departure_deadline is None


def test_old_protocol_gets_no_disconnected_update_and_can_reconnect_leave() -> None:
    room = RoomState("r", NOW)
    old = _join(room, "old", protocol=8)
    room.signal_lost(old, NOW)
    assert _to(room.resume(old, NOW + 1), old) == ["reconnect", "update", "room_update"]
    leave = room.leave_request(room.participants[old], Reason.STATE_MISMATCH, Action.RECONNECT)
    assert leave.can_reconnect and leave.action == Action.RECONNECT
    new = _join(room, "new", protocol=17)
    leave = room.leave_request(room.participants[new], Reason.STATE_MISMATCH, Action.RECONNECT)
    assert not leave.can_reconnect and leave.action == Action.RECONNECT


def test_simulated_node_failure_server_leave_and_full_reconnect() -> None:
    room = RoomState("r", NOW)
    a, b, c = _join(room, "a"), _join(room, "b"), _join(room, "c")
    sim = rtc_pb.SimulateScenario
    effects = room.simulate(a, sim(node_failure=True), NOW)
    assert effects[0] == Disconnect(a, Reason.SERVER_SHUTDOWN, Action.DISCONNECT,
                                    send_leave=False)
    assert a not in room.participants and _to(effects, b) == ["update"]
    effects = room.simulate(b, sim(server_leave=True), NOW)
    assert effects[0] == Disconnect(b, Reason.SERVER_SHUTDOWN, Action.DISCONNECT)
    effects = room.simulate(c, sim(leave_request_full_reconnect=True), NOW)
    assert effects[0] == Disconnect(c, Reason.CLIENT_INITIATED, Action.RECONNECT)
    assert room.participants == {}


def test_simulated_disconnect_signal_on_resume() -> None:
    room = RoomState("r", NOW, departure_timeout=20)
    a = _join(room, "a")
    room.simulate(a, rtc_pb.SimulateScenario(disconnect_signal_on_resume=True), NOW)
    room.signal_lost(a, NOW + 1)
    effects = room.resume(a, NOW + 2)
    assert _to(effects, a) == ["reconnect", "update", "update", "room_update"]
    assert effects[-1] == CloseSignal(a, "simulated disconnect on resume")
    assert room.participants[a].departure_deadline == NOW + 22
    # armed once: the next resume goes through
    assert not [e for e in room.resume(a, NOW + 3) if isinstance(e, CloseSignal)]


def test_simulated_disconnect_on_resume_without_messages_three_times() -> None:
    room = RoomState("r", NOW)
    a = _join(room, "a")
    room.simulate(a, rtc_pb.SimulateScenario(disconnect_signal_on_resume_no_messages=True), NOW)
    for i in range(3):
        assert room.resume(a, NOW + 1 + i) == [CloseSignal(
            a, "simulated disconnect on resume (no messages)")]
    assert _to(room.resume(a, NOW + 5), a)[0] == "reconnect"


def test_simulate_after_the_timeout_is_not_applied() -> None:
    room = RoomState("r", NOW)
    a = _join(room, "a")
    room.simulate(a, rtc_pb.SimulateScenario(disconnect_signal_on_resume=True), NOW)
    assert not [e for e in room.resume(a, NOW + 11) if isinstance(e, CloseSignal)]


def test_manager_departures_and_room_timeout_field() -> None:
    rooms = RoomManager(departure_timeout=1.5)
    room = rooms.get_or_create("r", NOW)
    assert room.departure_timeout == 1.5 and room.info().departure_timeout == 2
    other = rooms.get_or_create("o", NOW, departure_timeout=7)
    assert other.departure_timeout == 7
    a = _join(room, "a")
    room.signal_lost(a, NOW)
    assert rooms.next_departure() == NOW + 1.5
    assert [e for e in rooms.expire_departures(NOW + 1.5) if isinstance(e, Disconnect)]
    with pytest.raises(ValueError):
        RoomState("x", NOW, departure_timeout=-1)


# ---------------------------------------------------------------------- speakers


def _meter(levels: list[int]) -> tuple[int, int, float]:
    m = AudioLevelMeter()
    for level in levels:
        m.add(level)
    return m.take()


def test_audio_level_meter() -> None:
    m = AudioLevelMeter()
    for level in (20, 30, 40, 127):
        m.add(level)
    total, loud, loud_sum = m.take()
    assert (total, loud) == (4, 2)
    assert loud_sum == pytest.approx(linear_level(20) + linear_level(30))
    assert m.take() == (0, 0, 0.0)
    assert linear_level(0) == 1.0 and linear_level(127) < 1e-6


def test_speaker_observer_deltas() -> None:
    obs = SpeakerObserver()
    loud, quiet = _meter([20] * 25), _meter([90] * 25)
    (d,) = obs.update(NOW, {"PA_a": [loud], "PA_b": [quiet]})
    assert d.sid == "PA_a" and d.active and d.level == pytest.approx(0.1, abs=0.01)
    assert obs.update(NOW + 0.5, {"PA_a": [_meter([20] * 24 + [21])], "PA_b": []}) == []
    # 40 % loud packets is enough, fewer is not
    assert obs.update(NOW + 1, {"PA_a": [_meter([20] * 10 + [90] * 15)]}) == []
    (stop,) = obs.update(NOW + 1.5, {"PA_a": [_meter([20] * 9 + [90] * 16)]})
    assert stop.sid == "PA_a" and not stop.active and stop.level == 0
    # two loud speakers: loudest first
    ds = obs.update(NOW + 2, {"PA_a": [_meter([30] * 10)], "PA_b": [_meter([10] * 10)]})
    assert [d.sid for d in ds] == ["PA_b", "PA_a"]


def test_forced_speaker_for_a_time() -> None:
    obs = SpeakerObserver()
    obs.force("PA_a", NOW, 3)
    (d,) = obs.update(NOW, {"PA_a": []})
    assert d.active and d.level == pytest.approx(0.9)
    assert obs.update(NOW + 2.9, {"PA_a": []}) == []
    (d,) = obs.update(NOW + 3.0, {"PA_a": []})
    assert not d.active


# ---------------------------------------------------------------------- quality


def test_quality_scores() -> None:
    assert quality_for(LinkSample()) == (Quality.EXCELLENT, 5.0)
    assert quality_for(LinkSample(expected=100, lost=1))[0] == Quality.EXCELLENT
    assert score(LinkSample(expected=100, lost=4)) == pytest.approx(4.0)
    assert quality_for(LinkSample(expected=100, lost=4))[0] == Quality.GOOD
    assert quality_for(LinkSample(fraction_lost=[0.0, 0.1]))[0] == Quality.POOR
    assert quality_for(LinkSample(rtt=0.35))[0] == Quality.GOOD     # 5 - 1
    assert quality_for(LinkSample(expected=50, lost=50)) == (Quality.LOST, 1.0)
    assert score(LinkSample(expected=10, lost=9)) == 1.0


def test_quality_scorer_sends_changes_only() -> None:
    scorer = QualityScorer()
    first = scorer.update({"PA_a": LinkSample(), "PA_b": LinkSample(expected=100, lost=20)})
    assert [(i.participant_sid, i.quality) for i in first] == [
        ("PA_a", Quality.EXCELLENT), ("PA_b", Quality.POOR)]
    assert scorer.update({"PA_a": LinkSample(), "PA_b": LinkSample(expected=100, lost=20)}) \
        == []
    (change,) = scorer.update({"PA_a": LinkSample(), "PA_b": LinkSample(expected=100)})
    assert change.participant_sid == "PA_b" and change.quality == Quality.EXCELLENT
    assert scorer.update({"PA_a": LinkSample()}) == [] and "PA_b" not in scorer.sent
