"""The announce test hook: candidates the server signals rewritten, everything else kept."""

from __future__ import annotations

import json

from livekit.protocol import rtc as rtc_pb

from aiolivekit.server.announce import announce_candidates, rewrite_candidate

SDP = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.4\r\n"
       "a=candidate:1 1 udp 2130706431 127.0.0.4 40000 typ host\r\n"
       "a=candidate:2 1 udp 2130706431 127.0.0.4 40001 typ host\r\n"
       "a=end-of-candidates\r\n")
CALLS: list[tuple[str, int, str]] = []


def _hook(host: str, port: int, label: str) -> tuple[str, int]:
    CALLS.append((host, port, label))
    return "127.0.0.2", port + 1000


def test_answer_offer_and_trickle_point_at_the_announced_address() -> None:
    CALLS.clear()
    answer = rtc_pb.SignalResponse(answer=rtc_pb.SessionDescription(type="answer", sdp=SDP))
    announce_candidates(answer, _hook, "alice")
    lines = answer.answer.sdp.split("\r\n")
    assert "a=candidate:1 1 udp 2130706431 127.0.0.2 41000 typ host" in lines
    assert "a=candidate:2 1 udp 2130706431 127.0.0.2 41001 typ host" in lines
    assert "c=IN IP4 127.0.0.4" in lines and "a=end-of-candidates" in lines
    offer = rtc_pb.SignalResponse(offer=rtc_pb.SessionDescription(type="offer", sdp=SDP))
    announce_candidates(offer, _hook, "bob")
    init = json.dumps({"candidate": "candidate:3 1 udp 1 127.0.0.4 40002 typ host",
                       "sdpMid": "0", "sdpMLineIndex": 0})
    trickle = rtc_pb.SignalResponse(trickle=rtc_pb.TrickleRequest(
        candidateInit=init, target=rtc_pb.SignalTarget.SUBSCRIBER))
    announce_candidates(trickle, _hook, "bob")
    got = json.loads(trickle.trickle.candidateInit)
    assert got["candidate"] == "candidate:3 1 udp 1 127.0.0.2 41002 typ host"
    assert got["sdpMid"] == "0"
    assert [label for _, _, label in CALLS] == [
        "alice:publisher", "alice:publisher", "bob:subscriber", "bob:subscriber",
        "bob:subscriber"]


def test_other_messages_and_malformed_candidates_are_left_alone() -> None:
    CALLS.clear()
    leave = rtc_pb.SignalResponse(leave=rtc_pb.LeaveRequest())
    before = leave.SerializeToString()
    announce_candidates(leave, _hook, "alice")
    assert leave.SerializeToString() == before
    assert rewrite_candidate("a=candidate:1 1 udp 1 127.0.0.4 notaport typ host", _hook,
                             "x") == "a=candidate:1 1 udp 1 127.0.0.4 notaport typ host"
    assert rewrite_candidate("a=candidate:short", _hook, "x") == "a=candidate:short"
    bad = rtc_pb.SignalResponse(trickle=rtc_pb.TrickleRequest(candidateInit="{not json"))
    announce_candidates(bad, _hook, "alice")
    assert bad.trickle.candidateInit == "{not json"
    assert CALLS == []
