"""Transport-wide congestion control feedback (webrtc/twcc.py): packets libwebrtc parses."""

from __future__ import annotations

import struct

import pytest

from aiolivekit.webrtc.twcc import TwccRecorder, parse_feedback, transport_sequence_number


def rtp_with_twcc(seq: int, ext_id: int, two_byte: bool = False) -> bytes:
    head = struct.pack("!BBHII", 0x90, 96, 1, 0, 0x1234)
    if two_byte:
        ext = bytes((ext_id, 2)) + struct.pack("!H", seq)
        block = struct.pack("!HH", 0x1000, 1) + ext
    else:  # a mid element (id 1) first, then the sequence number
        ext = bytes((0x10, ord("0"), (ext_id << 4) | 1)) + struct.pack("!H", seq)
        ext += bytes(-len(ext) % 4)
        block = struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    return head + block + b"payload"


@pytest.mark.parametrize("two_byte", [False, True])
def test_sequence_number_read_from_extension(two_byte: bool) -> None:
    pkt = rtp_with_twcc(0xBEEF, 5, two_byte)
    assert transport_sequence_number(pkt, 5) == 0xBEEF
    assert transport_sequence_number(pkt, 4) is None
    assert transport_sequence_number(pkt[:14], 5) is None  # truncated: no answer, no error
    assert transport_sequence_number(struct.pack("!BBHII", 0x80, 96, 1, 0, 1), 5) is None


def test_feedback_round_trip_with_losses_and_reordering() -> None:
    rec = TwccRecorder(sender_ssrc=7)
    t0 = 100.0
    arrivals = {}
    for i, seq in enumerate([10, 11, 13, 12, 14, 20]):  # 15..19 lost, 12 late
        arrivals[seq] = t0 + i * 0.004
        rec.record(seq, arrivals[seq], media_ssrc=0x1234)
    packets = rec.build()
    assert len(packets) == 1
    pkt = packets[0]
    assert pkt[1] == 205 and pkt[0] & 0x1F == 15 and len(pkt) % 4 == 0
    assert struct.unpack_from("!II", pkt, 4) == (7, 0x1234)
    base, count, times = parse_feedback(pkt)
    assert (base, count) == (10, 0)
    assert len(times) == 11
    assert [s for s, t in zip(range(10, 21), times, strict=True) if t is None] == [15, 16, 17, 18, 19]
    for seq, t in zip(range(10, 21), times, strict=True):
        if t is not None:  # 250 µs resolution, never drifting
            assert abs(t - arrivals[seq] * 1e6) < 250
    assert rec.build() == []  # nothing new
    rec.record(19, t0 + 1)  # reported lost already: dropped
    rec.record(21, t0 + 0.03)
    base, count, times = parse_feedback(rec.build()[0])
    assert (base, count, len(times)) == (21, 1, 1)


def test_sequence_wrap_large_gap_and_long_runs() -> None:
    rec = TwccRecorder(sender_ssrc=1)
    rec.record(0xFFFE, 5.0)
    rec.record(0xFFFF, 5.001)
    rec.record(0x0000, 5.002)
    rec.record(40, 5.003)  # 39 lost: run-length chunk
    rec.record(41, 14.0)  # 9 s later: no longer fits a 16-bit delta -> a second packet
    packets = rec.build()
    assert len(packets) == 2
    base, _, times = parse_feedback(packets[0])
    assert base == 0xFFFE and len(times) == 43 and times.count(None) == 39
    base, _, times = parse_feedback(packets[1])
    assert base == 41 and len(times) == 1 and abs(times[0] - 14e6) < 250


def test_negative_delta_is_a_large_symbol() -> None:
    rec = TwccRecorder(sender_ssrc=1)
    rec.record(1, 2.010)
    rec.record(2, 2.000)  # sent after 1 but arrived first in time terms: negative delta
    base, _, times = parse_feedback(rec.build()[0])
    assert base == 1 and times[1] is not None and times[0] is not None
    assert abs((times[1] - times[0]) + 10_000) < 500


def test_jumping_sequence_numbers_keep_the_work_bounded() -> None:
    """A sender whose numbers jump by ~half the space every packet (each unwraps forward)
    must not make one feedback round walk millions of numbers."""
    rec = TwccRecorder(sender_ssrc=1)
    seq = 0
    for i in range(200):
        seq = (seq + 30000) & 0xFFFF
        rec.record(seq, 1.0 + i * 0.001)
    packets = rec.build()
    covered = sum(len(parse_feedback(p)[2]) for p in packets)
    assert 1 <= covered <= (1 << 14) + 1
    assert len(packets) <= 10
