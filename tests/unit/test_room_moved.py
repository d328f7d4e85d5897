"""The Room's handling of a RoomMovedResponse (livekit-server OSS does not implement
MoveParticipant, so this runs on the sans-I/O session's event)."""

from __future__ import annotations

from typing import Any

from livekit.protocol import models as models_pb, rtc as rtc_pb

from aiolivekit import Room
from aiolivekit.engine import signal as sig


def _pinfo(sid: str, identity: str, tracks: list[models_pb.TrackInfo] | None = None
           ) -> models_pb.ParticipantInfo:
    return models_pb.ParticipantInfo(sid=sid, identity=identity, version=1,
                                     tracks=tracks or [])


async def test_moved_replaces_room_token_and_participants() -> None:
    room = Room()
    session = sig.SignalSession()
    join = rtc_pb.JoinResponse(room=models_pb.Room(sid="RM_a", name="a"),
                               participant=_pinfo("PA_me", "me"),
                               other_participants=[_pinfo("PA_b", "bob")],
                               ping_interval=5, ping_timeout=15)
    for ev in session.receive(rtc_pb.SignalResponse(join=join), 1.0):
        room._on_engine_event(ev)
    events: list[tuple[str, Any]] = []
    for name in ("moved", "participant_connected", "participant_disconnected",
                 "track_published"):
        room.on(name, lambda *a, n=name: events.append((n, a)))
    assert list(room.remote_participants) == ["bob"]
    moved = rtc_pb.RoomMovedResponse(
        room=models_pb.Room(sid="RM_b", name="b"), token="new-token",
        participant=_pinfo("PA_me", "me"),
        other_participants=[_pinfo("PA_c", "carol", [models_pb.TrackInfo(sid="TR_c")])])
    for ev in session.receive(rtc_pb.SignalResponse(room_moved=moved), 2.0):
        room._on_engine_event(ev)
    assert [n for n, _ in events] == ["participant_disconnected", "participant_connected",
                                      "track_published", "moved"]
    assert room.name == "b" and room._token == "new-token"
    assert list(room.remote_participants) == ["carol"]
    assert list(room.remote_participants["carol"].track_publications) == ["TR_c"]
