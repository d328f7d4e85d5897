"""Unit tests for the sans-I/O RTP rewriting core of the forwarder."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from aiolivekit.server.rtpmunger import (
    KeyframeRequestLimiter,
    RtpMunger,
    h264_fmtp_score,
    is_keyframe_start,
)
from aiolivekit.webrtc.rtp import (
    RtpHeaderWriter,
    abs_send_time,
    ntp_time,
    parse_rtp_header,
    rtx_wrap,
    seq_newer,
)


def test_seq_newer_wraps() -> None:
    assert seq_newer(1, 0)
    assert seq_newer(0, 65535)
    assert not seq_newer(65535, 0)
    assert not seq_newer(5, 5)
    assert seq_newer(0x7FFF, 0)
    assert not seq_newer(0x8000, 0)


def test_first_packet_maps_to_initial_values() -> None:
    m = RtpMunger(48000, initial_sequence=1000, initial_timestamp=5000)
    assert m.rewrite(0xAAAA, 40000, 123456, now=10.0) == (1000, 5000)
    assert m.rewrite(0xAAAA, 40001, 123456 + 960, now=10.02) == (1001, 5960)


def test_gaps_and_reordering_preserved() -> None:
    m = RtpMunger(90000, initial_sequence=100, initial_timestamp=0)
    assert m.rewrite(1, 10, 0, 0.0) == (100, 0)
    # 11 and 12 lost/late, 13 arrives first: the gap stays visible
    assert m.rewrite(1, 13, 3000, 0.1) == (103, 3000)
    # late packets map into the hole, in their own order
    assert m.rewrite(1, 12, 3000, 0.11) == (102, 3000)
    assert m.rewrite(1, 11, 0, 0.12) == (101, 0)
    assert m.last_sequence == 103  # late packets do not move the head


def test_sequence_and_timestamp_wraparound() -> None:
    m = RtpMunger(48000, initial_sequence=65534, initial_timestamp=0xFFFFFC00)
    out = [m.rewrite(7, s, t, 0.0) for s, t in [(500, 100), (501, 1060), (502, 2020), (503, 2980)]]
    assert out == [(65534, 0xFFFFFC00), (65535, 0xFFFFFC00 + 960), (0, 896), (1, 896 + 960)]


def test_input_wraparound() -> None:
    m = RtpMunger(48000, initial_sequence=10, initial_timestamp=10)
    assert m.rewrite(7, 65535, 0xFFFFFFFF, 0.0) == (10, 10)
    assert m.rewrite(7, 0, 959, 0.02) == (11, 970)
    assert m.rewrite(7, 1, 1919, 0.04) == (12, 1930)


def test_new_source_continues_sequence_and_advances_timestamp() -> None:
    m = RtpMunger(48000, initial_sequence=0, initial_timestamp=0)
    assert m.rewrite(1, 100, 1000, 1.0) == (0, 0)
    assert m.rewrite(1, 101, 1960, 1.02) == (1, 960)
    # publisher restarts with a new SSRC and random numbering, 0.5 s later
    assert m.rewrite(2, 9000, 777777, 1.52) == (2, 960 + 24000)
    assert m.rewrite(2, 9001, 777777 + 960, 1.54) == (3, 960 + 24000 + 960)


def test_switch_timestamps_exact() -> None:
    m = RtpMunger(90000, initial_sequence=0, initial_timestamp=0, source_timeout=0.05)
    m.rewrite(1, 100, 0, 0.0)
    assert m.rewrite(2, 500, 42, 0.1) == (1, 9000)
    assert m.rewrite(2, 501, 42 + 3000, 0.13) == (2, 12000)
    assert m.rewrite(2, 499, 0, 0.13) is None
    assert m.dropped == 1


def test_interleaved_ssrcs_lock_onto_first_until_it_goes_quiet() -> None:
    m = RtpMunger(90000, initial_sequence=0, initial_timestamp=0, source_timeout=0.5)
    out = []
    for i in range(10):  # two streams interleaved (e.g. simulcast layers in one receiver)
        out.append(m.rewrite(0xA, 100 + i, 3000 * i, i * 0.033))
        out.append(m.rewrite(0xB, 7000 + i, 5 + 3000 * i, i * 0.033 + 0.001))
    assert out[0::2] == [(i, 3000 * i) for i in range(10)]
    assert out[1::2] == [None] * 10
    # stream A stops; B takes over after the timeout and continues the numbering
    assert m.rewrite(0xB, 7010, 30005, 0.6) is None
    assert m.rewrite(0xB, 7020, 60005, 0.8) == (10, 27000 + int((0.8 - 0.297) * 90000))


def test_pause_drops_and_resume_resyncs_without_gap() -> None:
    m = RtpMunger(48000, initial_sequence=50, initial_timestamp=0)
    assert m.rewrite(1, 1, 0, 0.0) == (50, 0)
    m.set_paused(True)
    for i in range(2, 52):
        assert m.rewrite(1, i, (i - 1) * 960, (i - 1) * 0.02) is None
    m.set_paused(False)
    # no sequence gap the subscriber would NACK, timestamp follows wall clock
    assert m.rewrite(1, 52, 51 * 960, 1.02) == (51, 48960)
    assert m.rewrite(1, 53, 52 * 960, 1.04) == (52, 48960 + 960)


def test_video_waits_for_keyframe_then_passes_everything() -> None:
    m = RtpMunger(90000, initial_sequence=0, initial_timestamp=0, wait_for_keyframe=True)
    assert m.needs_keyframe()
    assert m.rewrite(1, 10, 0, 0.0, keyframe_start=False) is None
    assert m.rewrite(1, 11, 3000, 0.03, keyframe_start=True) == (0, 0)
    assert not m.needs_keyframe()
    assert m.rewrite(1, 12, 3000, 0.031, keyframe_start=False) == (1, 0)
    # resume after pause needs a new keyframe
    m.set_paused(True)
    m.set_paused(False)
    assert m.needs_keyframe()
    assert m.rewrite(1, 20, 9000, 0.1) is None
    assert m.rewrite(1, 21, 12000, 0.2, keyframe_start=True) == (2, int(0.169 * 90000))


def test_keyframe_wait_times_out() -> None:
    m = RtpMunger(90000, wait_for_keyframe=True, keyframe_timeout=1.0)
    assert m.rewrite(1, 1, 0, 5.0) is None
    assert m.rewrite(1, 2, 0, 5.5) is None
    assert m.rewrite(1, 3, 0, 6.0) == (0, 0)


def test_bad_clock_rate() -> None:
    with pytest.raises(ValueError):
        RtpMunger(0)


def _ext_map(**ids: int) -> HeaderExtensionsMap:
    uris = {
        "mid": "urn:ietf:params:rtp-hdrext:sdes:mid",
        "ast": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "al": "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    }
    m = HeaderExtensionsMap()
    m.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=v, uri=uris[k]) for k, v in ids.items()
            ]
        )
    )
    return m


def test_header_writer_round_trips_through_aiortc_parser() -> None:
    w = RtpHeaderWriter(0xDEADBEEF, 111, mid="3", mid_id=1, abs_send_time_id=3, audio_level_id=2)
    payload = bytes(range(50))
    data, hl = w.build(
        1, 65535, 0xFFFFFFFE, payload, csrc=[7, 8], audio_level=(True, 42), send_time=0x123456
    )
    p = RtpPacket.parse(data, _ext_map(mid=1, ast=3, al=2))
    assert (p.marker, p.payload_type, p.sequence_number, p.timestamp, p.ssrc) == (
        1,
        111,
        65535,
        0xFFFFFFFE,
        0xDEADBEEF,
    )
    assert p.csrc == [7, 8]
    assert p.extensions.mid == "3"
    assert p.extensions.abs_send_time == 0x123456
    assert p.extensions.audio_level == (True, 42)
    assert p.payload == payload
    assert data[hl:] == payload


def test_header_writer_without_extensions_and_with_padding() -> None:
    w = RtpHeaderWriter(1, 96)
    data, hl = w.build(0, 1, 2, b"abc", padding_size=4, audio_level=(False, 10), send_time=5)
    assert hl == 12
    assert data[0] == 0xA0  # V=2, P=1, X=0
    assert data[-1] == 4 and len(data) == 12 + 3 + 4
    p = RtpPacket.parse(data)
    assert p.payload == b"abc" and p.padding_size == 4


def test_header_writer_rejects_bad_ids() -> None:
    with pytest.raises(ValueError):
        RtpHeaderWriter(1, 96, mid="0", mid_id=15)
    with pytest.raises(ValueError):
        RtpHeaderWriter(1, 96, mid="x" * 17, mid_id=1)


def test_rtx_wrap() -> None:
    w = RtpHeaderWriter(1111, 97, mid="1", mid_id=1)
    data, hl = w.build(1, 4242, 90000, b"payload", padding_size=3)
    rtx = rtx_wrap(data, hl, 98, 7, 2222)
    p = RtpPacket.parse(rtx, _ext_map(mid=1))
    assert (p.payload_type, p.sequence_number, p.ssrc, p.timestamp, p.marker) == (
        98,
        7,
        2222,
        90000,
        1,
    )
    assert p.payload == struct.pack("!H", 4242) + b"payload"
    assert p.padding_size == 0
    assert p.extensions.mid == "1"


def test_vp8_keyframe_detection() -> None:
    # S=1, PID=0, no X; VP8 header byte with P=0 -> key frame
    assert is_keyframe_start("video/VP8", bytes([0x10, 0x00, 0x00, 0x00]))
    assert not is_keyframe_start("video/VP8", bytes([0x10, 0x01, 0x00]))  # P=1 interframe
    assert not is_keyframe_start("video/VP8", bytes([0x00, 0x00]))  # not a partition start
    # X with I (15-bit picture id) + L + T: header starts at offset 6
    desc = bytes([0x90, 0xE0, 0x80 | 0x12, 0x34, 0x05, 0x40])
    assert is_keyframe_start("video/vp8", desc + bytes([0x00]))
    assert not is_keyframe_start("video/vp8", desc + bytes([0x01]))
    assert not is_keyframe_start("video/vp8", desc)  # truncated
    assert not is_keyframe_start("video/vp8", b"")


def test_h264_keyframe_detection() -> None:
    assert is_keyframe_start("video/H264", bytes([0x65, 0x88]))  # IDR
    assert is_keyframe_start("video/H264", bytes([0x67, 0x42]))  # SPS
    assert not is_keyframe_start("video/H264", bytes([0x41, 0x9A]))  # non-IDR slice
    stap = bytes([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE])
    assert is_keyframe_start("video/H264", stap)
    assert is_keyframe_start("video/H264", bytes([0x7C, 0x85, 0x00]))  # FU-A start IDR
    assert not is_keyframe_start("video/H264", bytes([0x7C, 0x05, 0x00]))  # FU-A middle
    assert not is_keyframe_start("video/H264", bytes([0x7C, 0x81, 0x00]))  # FU-A non-IDR
    assert is_keyframe_start("audio/opus", b"\x00")


def test_keyframe_limiter() -> None:
    lim = KeyframeRequestLimiter(0.5)
    assert lim.allow(10.0)
    assert not lim.allow(10.2)
    assert lim.allow(10.5)


def test_time_helpers() -> None:
    assert abs_send_time(1.0) == 1 << 18
    assert abs_send_time(64.0) == 0  # 6-bit seconds wrap
    assert ntp_time(0.0) >> 32 == 2208988800
    assert ntp_time(0.5) & 0xFFFFFFFF == 1 << 31


def test_h264_fmtp_score() -> None:
    pub = {"profile-level-id": "42e01f", "packetization-mode": 1}
    assert h264_fmtp_score(pub, {"profile-level-id": "42e01f", "packetization-mode": "1"}) == 2
    assert h264_fmtp_score(pub, {"profile-level-id": "42001f", "packetization-mode": "1"}) == 1
    assert h264_fmtp_score(pub, {"profile-level-id": "42e01f", "packetization-mode": "0"}) == 0


def test_long_stream_across_many_wraps_keeps_mapping() -> None:
    m = RtpMunger(48000, initial_sequence=300, initial_timestamp=7)
    start_seq, start_ts = 65000, 0xFFFF0000
    for i in range(200_000):  # > 3 sequence wraps, timestamp wraps too
        seq = (start_seq + i) & 0xFFFF
        ts = (start_ts + 960 * i) & 0xFFFFFFFF
        out = m.rewrite(9, seq, ts, i * 0.02)
        assert out == ((300 + i) & 0xFFFF, (7 + 960 * i) & 0xFFFFFFFF), i
    # a late packet from just before the current head still maps, the head stays
    late = 199_990
    late_ts = (start_ts + 960 * late) & 0xFFFFFFFF
    expected = ((300 + late) & 0xFFFF, (7 + 960 * late) & 0xFFFFFFFF)
    assert m.rewrite(9, (start_seq + late) & 0xFFFF, late_ts, 4000.0) == expected
    assert m.last_sequence == (300 + 199_999) & 0xFFFF


# header-extension id sets the writers are checked with
EXTENSION_IDS: list[dict[str, int]] = [
    {},
    {"mid_id": 1},
    {"mid_id": 1, "abs_send_time_id": 3},
    {"mid_id": 1, "audio_level_id": 2},
    {"mid_id": 4, "abs_send_time_id": 3, "audio_level_id": 2},
    {"abs_send_time_id": 3},
    {"audio_level_id": 2},
]
AUDIO_LEVELS = [None, (True, 42), (False, 127)]


@pytest.mark.parametrize("ids", EXTENSION_IDS)
@pytest.mark.parametrize("level", AUDIO_LEVELS)
def test_build_simple_matches_build(ids: dict[str, int], level: tuple[bool, int] | None) -> None:
    w = RtpHeaderWriter(0x01020304, 111, mid="12", **ids)
    payload = b"\x01\x02\x03payload"
    for marker in (0, 1):
        full, hl = w.build(
            marker, 65535, 0xFFFFFFFF, payload, audio_level=level, send_time=0xABCDEF
        )
        fast = w.build_simple(marker, 65535, 0xFFFFFFFF, payload, level, 0xABCDEF)
        assert fast == full
        assert fast[hl:] == payload


@pytest.mark.parametrize("ids", EXTENSION_IDS)
@pytest.mark.parametrize("level", AUDIO_LEVELS)
def test_write_into_matches_build_simple(
    ids: dict[str, int], level: tuple[bool, int] | None
) -> None:
    w = RtpHeaderWriter(0x01020304, 111, mid="12", **ids)
    payload = b"\x01\x02\x03payload"
    for marker in (0, 1):
        buf = bytearray(b"\xee" * 100)  # stale bytes must not leak into the packet
        n = w.write_into(buf, marker, 65535, 0xFFFFFFFF, payload, level, 0xABCDEF)
        assert bytes(buf[:n]) == w.build_simple(marker, 65535, 0xFFFFFFFF, payload, level,
                                                0xABCDEF)
        assert buf[n:] == b"\xee" * (100 - n)


def test_parse_rtp_header_reads_what_the_writer_wrote() -> None:
    w = RtpHeaderWriter(0xDEADBEEF, 96, mid="7", mid_id=1, abs_send_time_id=3, audio_level_id=2)
    payload = bytes(range(40))
    data = w.build_simple(1, 4242, 0x12345678, payload, (True, 17), 0x010203)
    marker, pt, seq, ts, ssrc, start, end, level = parse_rtp_header(data, 2)
    assert (marker, pt, seq, ts, ssrc, level) == (1, 96, 4242, 0x12345678, 0xDEADBEEF, (True, 17))
    assert data[start:end] == payload
    # unknown id: no level; CSRCs and padding excluded from the payload
    data, hl = w.build(0, 1, 2, payload, csrc=[5, 6, 7], audio_level=(False, 99), padding_size=4)
    marker, pt, seq, ts, ssrc, start, end, level = parse_rtp_header(data, 9)
    assert (marker, seq, ts, level, start) == (0, 1, 2, None, hl)
    assert data[start:end] == payload
    assert parse_rtp_header(data, 2)[7] == (False, 99)
    # no extension at all
    plain = RtpHeaderWriter(1, 0).build_simple(0, 9, 9, b"xyz", None, 0)
    assert parse_rtp_header(plain, 2)[5:] == (12, 15, None)


def test_parse_rtp_header_two_byte_extensions() -> None:
    # RFC 8285 two-byte form (0x100X): id 5 = audio level, after a 3-byte element id 1
    ext = bytes([1, 3, 0xAA, 0xBB, 0xCC, 5, 1, 0x80 | 33, 0, 0, 0])  # padded to 12 below
    ext += bytes((-len(ext)) % 4)
    header = struct.pack("!BBHII", 0x90, 111, 1, 2, 3) + b"\x10\x00" + struct.pack(
        "!H", len(ext) // 4
    )
    data = header + ext + b"opus"
    parsed = parse_rtp_header(data, 5)
    assert parsed[7] == (True, 33)
    assert data[parsed[5] : parsed[6]] == b"opus"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(11),
        bytes([0x40]) + bytes(11),  # version 1
        bytes([0x90]) + bytes(11) + b"\xbe\xde",  # extension header cut
        bytes([0x90]) + bytes(11) + b"\xbe\xde\x00\x05" + bytes(4),  # extension too long
        bytes([0xA0]) + bytes(11) + b"x\x00",  # padding length 0
        bytes([0xA0]) + bytes(11) + b"\x09",  # padding longer than the packet
        bytes([0x8F]) + bytes(11),  # 15 CSRCs announced, none present
    ],
)
def test_parse_rtp_header_rejects_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_rtp_header(data, 1)


def test_steady_state_and_catch_up_match_rewrite() -> None:
    """Mapping in-order packets by the steady offsets, then ``catch_up``, leaves the
    munger exactly where ``rewrite`` of each packet would, and later packets (a
    reordered one, a re-sync after pause) map the same way."""
    a = RtpMunger(48000, initial_sequence=65530, initial_timestamp=0xFFFFF000)
    b = RtpMunger(48000, initial_sequence=65530, initial_timestamp=0xFFFFF000)
    assert a.steady_state(7) is None  # not started
    for m in (a, b):
        assert m.rewrite(7, 100, 5000, 1.0) == (65530, 0xFFFFF000)
    state = b.steady_state(7)
    assert state is not None and b.steady_state(8) is None
    seq_off, ts_off, highest = state
    assert highest == 100
    seq, ts, advanced, t = 100, 5000, 0, 1.0
    for step in (1, 1, 3, 1):  # a gap of two lost packets included
        seq, ts, t = (seq + step) & 0xFFFF, ts + 960 * step, t + 0.02 * step
        advanced += step
        assert a.rewrite(7, seq, ts, t) == ((seq + seq_off) & 0xFFFF, (ts + ts_off) & 0xFFFFFFFF)
    b.catch_up(seq, ts, advanced, t)
    b.catch_up(seq, ts, 0, t + 5)  # nothing new: no change
    assert {k: getattr(a, k) for k in RtpMunger.__slots__} == {
        k: getattr(b, k) for k in RtpMunger.__slots__}
    # the late packet 103 (one of the gap) and a pause/resume behave identically
    assert a.rewrite(7, 103, 5000 + 3 * 960, t) == b.rewrite(7, 103, 5000 + 3 * 960, t)
    for m in (a, b):
        m.set_paused(True)
        assert m.steady_state(7) is None
        m.set_paused(False)
    assert b.steady_state(7) is None  # a re-sync is pending
    assert a.rewrite(7, seq + 1, ts + 960, t + 1.0) == b.rewrite(7, seq + 1, ts + 960, t + 1.0)
    assert b.steady_state(7) is not None


def test_steady_state_closed_while_waiting_for_keyframe() -> None:
    m = RtpMunger(90000, wait_for_keyframe=True)
    assert m.rewrite(1, 10, 0, 0.0, keyframe_start=False) is None
    assert m.steady_state(1) is None
    assert m.rewrite(1, 11, 0, 0.01, keyframe_start=True) is not None
    assert m.steady_state(1) is not None
