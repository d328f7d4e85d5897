"""Simulcast in the embedded SFU (issue 16), the parts without a network: the answer,
the layer a subscriber's settings pick, the munger's switch, NACKs per SSRC, and the
layer router with real fan-outs and mungers and recording down-tracks."""

from __future__ import annotations

from typing import Any

import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from livekit.protocol import models as models_pb, rtc as rtc_pb

from aiolivekit._compat.aiortc import _NackPerSsrc
from aiolivekit.server import simulcast as simulcast_module
from aiolivekit.server.auth import VideoGrant
from aiolivekit.server.config import ForwardingOptions
from aiolivekit.server.downtrack import DownTrack
from aiolivekit.server.forwarder import TrackForwarder
from aiolivekit.server.participant_state import quality_for_size
from aiolivekit.server.receiver import InPacket
from aiolivekit.server.rooms import RoomState, SendSignal, SetPaused
from aiolivekit.server.rtpmunger import RtpMunger
from aiolivekit.webrtc.simulcast_sdp import RID_URI, answer_simulcast

NOW = 1_800_000_000.0


def join(room: RoomState, identity: str) -> Any:
    grant = VideoGrant(room_join=True, room="r")
    return room.join(identity, grant, NOW, name=identity)

LOW, MEDIUM, HIGH = (int(models_pb.VideoQuality.LOW), int(models_pb.VideoQuality.MEDIUM),
                     int(models_pb.VideoQuality.HIGH))

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\n"
    f"a=extmap:10 {RID_URI}\r\na=rtpmap:96 VP8/90000\r\n"
    "a=rid:f send\r\na=rid:h send\r\na=rid:q send\r\na=simulcast:send f;h;q\r\n"
)
ANSWER = (
    "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\n"
    f"a=extmap:10 {RID_URI}\r\na=rtpmap:96 VP8/90000\r\n"
)


def test_the_answer_receives_every_offered_layer() -> None:
    answer = answer_simulcast(OFFER, ANSWER)
    assert answer.endswith("a=rid:f recv\r\na=rid:h recv\r\na=rid:q recv\r\n"
                           "a=simulcast:recv f;h;q\r\n")
    assert answer_simulcast(OFFER, answer) == answer  # once
    # without the RID extension the layers could not be told apart: one layer
    no_rid = ANSWER.replace(f"a=extmap:10 {RID_URI}\r\n", "")
    assert answer_simulcast(OFFER, no_rid) == no_rid
    plain = OFFER.replace("a=simulcast:send f;h;q\r\n", "")
    assert answer_simulcast(plain, ANSWER) == ANSWER


def _video_track(room: RoomState, sid: str, layers: bool = True) -> str:
    req = rtc_pb.AddTrackRequest(cid="v", name="cam", type=models_pb.TrackType.VIDEO,
                                 source=models_pb.TrackSource.CAMERA, width=1280, height=720)
    if layers:
        for q, w, h in ((HIGH, 1280, 720), (LOW, 320, 180), (MEDIUM, 640, 360)):
            req.layers.append(models_pb.VideoLayer(quality=q, width=w, height=h))  # type: ignore[arg-type]
    (resp,) = [e.response for e in room.add_track(sid, req, NOW) if isinstance(e, SendSignal)]
    track_sid = resp.track_published.track.sid
    room.publish_track(sid, track_sid, mime_type="video/VP8")
    return track_sid


def test_track_settings_pick_a_layer_by_quality_or_size() -> None:
    room = RoomState("r", NOW)
    a, _, _ = join(room, "alice")
    b, _, _ = join(room, "bob")
    sid = _video_track(room, a.sid)
    info = room.participants[a.sid].tracks[sid].info
    assert [layer.quality for layer in info.layers] == [LOW, MEDIUM, HIGH]
    assert quality_for_size(info, 300, 100) == LOW
    assert quality_for_size(info, 321, 180) == MEDIUM
    assert quality_for_size(info, 640, 360) == MEDIUM
    assert quality_for_size(info, 1920, 1080) == HIGH  # larger than any: the largest

    def settings(**kw: Any) -> list[Any]:
        setting = rtc_pb.UpdateTrackSettings(track_sids=[sid], **kw)
        return room.update_track_settings(b.sid, [sid], setting.disabled, setting)

    assert settings(quality=models_pb.VideoQuality.LOW) == [
        SetPaused(b.sid, a.sid, sid, False, LOW)]
    assert settings(width=600, height=300) == [SetPaused(b.sid, a.sid, sid, False, MEDIUM)]
    assert settings(disabled=True) == [SetPaused(b.sid, a.sid, sid, True, None)]
    assert settings(disabled=True) == []
    # a single-layer track: only the pause matters
    c, _, _ = join(room, "carol")
    single = _video_track(room, c.sid, layers=False)
    setting = rtc_pb.UpdateTrackSettings(track_sids=[single], quality=models_pb.VideoQuality.LOW)
    assert room.update_track_settings(b.sid, [single], False, setting) == []


def test_the_munger_switches_source_at_once_and_continues() -> None:
    m = RtpMunger(90000, initial_sequence=100, initial_timestamp=5000, wait_for_keyframe=True)
    assert m.rewrite(0xA, 7, 1000, 1.0, keyframe_start=True) == (100, 5000)
    assert m.rewrite(0xA, 8, 4000, 1.033) == (101, 8000)
    m.switch_to(0xB, 1.05)
    assert m.rewrite(0xA, 9, 7000, 1.06) is None  # the old layer: dropped
    assert m.rewrite(0xB, 500, 90, 1.066) is None  # not a key frame: waits
    assert m.rewrite(0xB, 501, 3090, 1.1, keyframe_start=True) == (102, 8000 + 6030)
    assert m.rewrite(0xB, 502, 6090, 1.133) == (103, 8000 + 6030 + 3000)
    m.switch_to(0xB, 1.2)  # the same source: nothing changes
    assert m.rewrite(0xB, 503, 9090, 1.166) == (104, 8000 + 6030 + 6000)


def test_nack_generation_is_per_ssrc() -> None:
    nack = _NackPerSsrc()

    class P:
        def __init__(self, ssrc: int, seq: int) -> None:
            self.ssrc, self.sequence_number = ssrc, seq

    for seq in range(10, 20):  # two interleaved layers, both complete
        assert not nack.add(P(1, seq)) and not nack.add(P(2, 5000 + seq))
    assert nack.add(P(1, 22)) and nack.missing == {20, 21}
    assert not nack.add(P(2, 5020)) and nack.missing == set()


VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
KEY = bytes([0x10, 0x00])  # VP8 descriptor S=1, payload header P=0: a key frame starts
DELTA = bytes([0x10, 0x01])


class _Down(DownTrack):
    """A down-track that records what it forwards (seq numbers after its munger)."""

    __slots__ = ("got",)

    def __init__(self, forwarder: TrackForwarder) -> None:
        super().__init__(None, forwarder, True)  # type: ignore[arg-type]
        self.got: list[tuple[int, int]] = []  # (source ssrc, outgoing seq)
        self.munger = RtpMunger(90000, wait_for_keyframe=True)
        self.mime = "video/vp8"

    def forward(self, packet: InPacket, now: float, send_time: int, ntp: int) -> bytes | None:
        mapped = self.munger.rewrite(packet.ssrc, packet.sequence_number, packet.timestamp,
                                     now, packet.payload[:1] == KEY[:1]
                                     and packet.payload[1:2] == KEY[1:2])
        if mapped is not None:
            self.got.append((packet.ssrc, mapped[0]))
        return None


class _Clock:
    now = 1000.0

    @classmethod
    def time(cls) -> float:
        return cls.now


SSRC = {"q": 111, "h": 222, "f": 333}


def test_the_router_gives_each_subscriber_its_layer_switching_at_key_frames(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulcast_module.time, "time", _Clock.time)
    fw = TrackForwarder(None, "video", ForwardingOptions(fanout=False))  # type: ignore[arg-type]
    fw.receiver.codecs = {96: VP8}
    fw.receiver.codec, fw.receiver.mime_type = VP8, "video/VP8"
    plis: list[int] = []
    reported: list[dict[int, bool]] = []
    fw._send_layer_pli = plis.append  # type: ignore[method-assign]
    fw.on_subscribed_qualities = reported.append
    a, b = _Down(fw), _Down(fw)
    fw.fanout.add(a)
    fw.fanout.add(b)  # both run (parked: the track's own fan-out is never fed)
    seq = {"q": 0, "h": 1000, "f": 2000}

    def frame(rid: str, key: bool = False) -> None:
        for i in range(2):
            seq[rid] += 1
            payload = (KEY if key and i == 0 else DELTA) + bytes(10)
            fw.receiver.dispatch(InPacket(i, 96, seq[rid], seq[rid] * 100, SSRC[rid],
                                          payload, None))

    def tick(key: set[str] | None = None) -> None:
        _Clock.now += 0.05
        for rid in ("q", "h", "f"):
            frame(rid, key=rid in (key or set()))

    for rid in ("q", "h", "f"):
        fw._on_rid(SSRC[rid], rid)
    layers = fw.layers
    assert layers is not None and layers.rids() == ["q", "h", "f"]
    tick()
    tick()
    # both want the highest by default, nothing forwarded before its key frame; PLIs asked
    assert not a.got and not b.got and SSRC["f"] in plis
    assert reported[-1] == {LOW: True, MEDIUM: True, HIGH: True}
    tick(key={"f"})
    assert {s for s, _ in a.got} == {SSRC["f"]} and {s for s, _ in b.got} == {SSRC["f"]}
    # b asks for the low layer: it stays on f until q's key frame, then gets q only
    fw._subscriptions = {"pc-b": type("S", (), {"sender": type("X", (), {"_lk_down": b})})}  # type: ignore[dict-item]
    fw.set_quality("pc-b", LOW)  # type: ignore[arg-type]
    assert SSRC["q"] in plis
    tick()
    assert b.got[-1][0] == SSRC["f"]
    before = len(b.got)
    tick(key={"q"})
    assert {s for s, _ in b.got[before:]} == {SSRC["q"]}
    seqs = [s for _, s in b.got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # continuous over the switch
    assert layers.current == {a: "f", b: "q"}
    assert reported[-1] == {LOW: True, MEDIUM: True, HIGH: True}  # a still wants HIGH
    # a leaves: only LOW is wanted
    fw._subscriptions["pc-a"] = type("S", (), {"sender": type("X", (), {"_lk_down": a}),  # type: ignore[assignment]
                                               "transceiver": type("T", (), {"stopped": True})})
    fw.remove_subscriber("pc-a")  # type: ignore[arg-type]
    assert reported[-1] == {LOW: True, MEDIUM: False, HIGH: False}
    # the low layer stops arriving: b falls back to a live layer at the next key frame
    for _ in range(30):
        _Clock.now += 0.05
        frame("h", key=True)
        frame("f")
    assert layers.current[b] == "h"
