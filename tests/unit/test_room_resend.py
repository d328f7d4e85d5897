"""The Room's resend after a resume: the reliable packets the server did not receive
(``ReconnectResponse.last_message_seq``) go out again, byte for byte, in order; lossy
packets are never buffered."""

from __future__ import annotations

from typing import Any

import pytest
from livekit.protocol import models as models_pb, rtc as rtc_pb

from aiolivekit import Room, room_reconnect
from aiolivekit.data.packets import PacketEncoder
from aiolivekit.participant import LocalParticipant


class FakeEngine:
    closed = False

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []

    async def send_data(self, data: Any, *, reliable: bool) -> None:
        self.sent.append((data(65536) if callable(data) else data, reliable))


async def test_resume_resends_what_the_server_missed(monkeypatch: pytest.MonkeyPatch) -> None:
    room = Room()
    engine = FakeEngine()
    room._engine = engine  # type: ignore[assignment]
    room._local = LocalParticipant(models_pb.ParticipantInfo(sid="PA_a", identity="a"), room)
    room._encoder = PacketEncoder(identity="a", sid="PA_a")
    room._ready.set()
    for i in range(6):
        await room._publish_user_data(b"m%d" % i, reliable=True, destination_identities=[],
                                      topic="t")
    await room._publish_user_data(b"lossy", reliable=False, destination_identities=[], topic="")
    assert len(engine.sent) == 7 and len(room._resend) == 6
    originals = [data for data, _ in engine.sent[:6]]

    async def resumed(*args: Any) -> rtc_pb.ReconnectResponse:
        return rtc_pb.ReconnectResponse(last_message_seq=3)

    monkeypatch.setattr(room_reconnect, "resume_session", resumed)
    await room._attempt_resume(1)
    again = engine.sent[7:]
    assert again == [(d, True) for d in originals[3:]]
    decoded = [models_pb.DataPacket.FromString(d) for d, _ in again]
    assert [p.sequence for p in decoded] == [4, 5, 6]
    assert [p.user.payload for p in decoded] == [b"m3", b"m4", b"m5"]
    # a second resume that reports everything received sends nothing
    monkeypatch.setattr(room_reconnect, "resume_session",
                        lambda *a: _response(6))
    await room._attempt_resume(1)
    assert len(engine.sent) == 10 and len(room._resend) == 0


async def _response(seq: int) -> rtc_pb.ReconnectResponse:
    return rtc_pb.ReconnectResponse(last_message_seq=seq)
