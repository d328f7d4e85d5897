"""Simulcast publishing, the sans-I/O parts (issue 16): which layers, the SDP, the RID
header extension, each layer's frame-rate cap and its NACK answers."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import RTCP_RTPFB_NACK, HeaderExtensionsMap, RtcpRtpfbPacket, RtpPacket

from aiolivekit.media.simulcast_layers import simulcast_layers, video_layers
from aiolivekit.webrtc.rtp import RtpHeaderWriter
from aiolivekit.webrtc.simulcast_sdp import RID_URI, answered_simulcast, offer_simulcast


@pytest.mark.parametrize(("size", "want"), [
    ((1280, 720), [("q", 320, 180, 160_000), ("h", 640, 360, 450_000),
                   ("f", 1280, 720, 1_000_000)]),
    ((1920, 1080), [("q", 320, 180, 160_000), ("h", 640, 360, 450_000),
                    ("f", 1920, 1080, 1_000_000)]),
    ((960, 720), [("q", 240, 180, 100_000), ("h", 480, 360, 225_000),
                  ("f", 960, 720, 1_000_000)]),  # 4:3 presets
    ((640, 480), [("q", 240, 180, 100_000), ("h", 640, 480, 1_000_000)]),  # two layers
    ((640, 360), [("q", 320, 180, 160_000), ("h", 640, 360, 1_000_000)]),
    ((320, 240), [("q", 320, 240, 1_000_000)]),  # too small: one layer
    ((720, 1280), [("q", 180, 320, 160_000), ("h", 360, 640, 450_000),
                   ("f", 720, 1280, 1_000_000)]),  # portrait
])
def test_layers_follow_the_official_presets(size: tuple[int, int],
                                            want: list[tuple[str, int, int, int]]) -> None:
    layers = simulcast_layers(*size, 1_000_000, 30.0)
    assert [(x.rid, x.width, x.height, x.max_bitrate) for x in layers] == want
    assert [x.quality for x in layers] == list(range(len(want)))  # LOW, MEDIUM, HIGH
    rates = [x.max_framerate for x in layers]
    assert rates[-1] == 30.0
    if len(layers) == 3:
        assert rates == [15.0, 20.0, 30.0]
    proto = video_layers(layers)
    assert [(p.rid, p.width, p.height, p.bitrate) for p in proto] == want
    with pytest.raises(ValueError):
        simulcast_layers(0, 720, 1_000_000, 30.0)


OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=msid:s audio-track\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=sendonly\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"
    "a=mid:1\r\na=msid:s video-track\r\na=rtpmap:97 VP8/90000\r\n"
)


def test_the_offer_gets_rids_simulcast_and_a_free_rid_extension_id() -> None:
    text = offer_simulcast(OFFER, "video-track", ["q", "h", "f"])
    video = text.split("m=video")[1]
    assert f"a=extmap:4 {RID_URI}" in video  # 1, 2, 3 are taken across the bundle
    assert video.index("a=extmap:4") == video.index("a=extmap:3") + len(
        "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n")
    assert video.endswith("a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\n"
                          "a=simulcast:send q;h;f\r\n")
    assert "a=rid" not in text.split("m=video")[0]
    assert offer_simulcast(text, "video-track", ["q", "h", "f"]) == text  # once only
    with pytest.raises(ValueError):
        offer_simulcast(OFFER, "another-track", ["q", "h"])


def test_the_answer_says_which_rids_are_received() -> None:
    answer = OFFER.replace("a=sendonly", "a=recvonly") + (
        f"a=extmap:4 {RID_URI}\r\na=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\n"
        "a=simulcast:recv q;h;~f\r\n")
    taken = answered_simulcast(answer, "1")
    assert taken is not None and taken.rids == ("q", "h", "f") and taken.rid_extension_id == 4
    assert answered_simulcast(OFFER, "1") is None  # no a=simulcast: one layer
    assert answered_simulcast(answer.replace(f"a=extmap:4 {RID_URI}\r\n", ""), "1") is None
    assert answered_simulcast(answer, "7") is None


def test_a_layer_header_carries_mid_and_rid() -> None:
    writer = RtpHeaderWriter(0x1234, 97, mid="1", mid_id=1, abs_send_time_id=3,
                             rid="h", rid_id=4)
    packet = writer.build_simple(1, 7, 90000, b"payload", None, 0x123456)
    ext_map = HeaderExtensionsMap()
    ext_map.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(
            id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
        RTCRtpHeaderExtensionParameters(id=4, uri=RID_URI)]))
    parsed = RtpPacket.parse(packet, ext_map)
    assert (parsed.ssrc, parsed.sequence_number, parsed.timestamp, parsed.marker) == (
        0x1234, 7, 90000, 1)
    assert parsed.extensions.mid == "1" and parsed.extensions.rtp_stream_id == "h"
    assert parsed.extensions.abs_send_time == 0x123456 and parsed.payload == b"payload"
    assert writer.build(1, 7, 90000, b"payload", send_time=0x123456)[0] == packet
    with pytest.raises(ValueError):
        RtpHeaderWriter(1, 97, rid="h", rid_id=15)


class FakeWriter:
    """What SimulcastLayer uses of DirectRtpWriter, recording the packets."""

    def __init__(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.timestamp_origin = 1000
        self.sequence_number = 65534
        self.sent: list[bytes] = []
        self.header = RtpHeaderWriter(ssrc, 97, mid="1", mid_id=1, rid="q", rid_id=4)

    def build(self, marker: int, ts: int, payload: bytes) -> bytes:
        seq = self.sequence_number
        self.sequence_number = (seq + 1) & 0xFFFF
        return self.header.build_simple(marker, seq, ts, payload, None, 0)

    def send_packet(self, packet: bytes, now: float, ts: int, payload_size: int) -> bool:
        self.sent.append(packet)
        return True


class VP8:
    mimeType = "video/VP8"
    payloadType = 97
    clockRate = 90000


def _layer(fps: float) -> Any:
    from aiolivekit.media.simulcast_layers import LayerSpec
    from aiolivekit.media.simulcast_send import SimulcastLayer

    spec = LayerSpec("q", 0, 320, 180, 160_000, fps)
    top = LayerSpec("f", 2, 1280, 720, 1_000_000, 30.0)
    return SimulcastLayer(spec, top, FakeWriter(0x42), VP8())  # type: ignore[arg-type]


def test_a_layer_keeps_its_frame_rate_cap() -> None:
    layer = _layer(20.0)
    sent = [pts for pts in range(0, 90000 * 3, 3000) if layer.due(pts)]  # 3 s at 30 fps
    assert len(sent) == 60  # 20 fps
    gaps = {b - a for a, b in itertools.pairwise(sent)}
    assert gaps <= {3000, 6000}
    assert _layer(0).due(0) and _layer(0).due(1)
    layer.wanted = False  # dynacast
    assert not layer.due(90000 * 4)
    layer.wanted = True
    layer.set_bitrate(0)  # no bandwidth for it
    assert not layer.due(90000 * 5)


def test_a_layer_answers_nack_from_its_history_and_pli_with_a_key_frame() -> None:
    layer = _layer(30.0)
    layer.keyframe_wanted = False
    payload = bytes([0x10, 0, 0, 0]) + bytes(3000)  # a VP8 key frame start, three packets
    layer.send(payload, 9000)
    writer = layer.writer
    first = writer.sent[:]
    assert len(first) >= 2
    seqs = [int.from_bytes(p[2:4], "big") for p in first]
    assert seqs[:3] == [65534, 65535, 0][:len(seqs)]  # wraps
    assert [p[1] >> 7 for p in first] == [0] * (len(first) - 1) + [1]  # marker on the last
    assert {int.from_bytes(p[4:8], "big") for p in first} == {1000 + 9000}
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0x42)
    nack.lost = [seqs[1], 12345]  # one we sent, one we never did
    asyncio.run(layer._handle_rtcp_packet(nack))
    assert writer.sent[len(first):] == [first[1]] and layer.nacks == 1
    from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket

    asyncio.run(layer._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1,
                                                         media_ssrc=0x42)))
    assert layer.keyframe_wanted
