"""The benchmarks' playout buffer (bench/playout.py): release times, order, underruns."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from playout import PlayoutBuffer

RATE = 48000
PACKET = 960  # 20 ms
CHUNK_B = 480 * 2  # 10 ms of mono 16-bit


def packet(n: int) -> bytes:
    """20 ms of PCM whose every sample is ``n`` (so chunks can be traced to packets)."""
    return n.to_bytes(2, "little", signed=True) * PACKET


def run(arrivals: list[tuple[float, int]], buf: PlayoutBuffer, until: float,
        step: float = 0.0005) -> list[tuple[float, int, bool]]:
    """Push packets at their arrival times, pop every ``step`` s; returns
    (release time, first sample value, silence) per released chunk."""
    out = []
    pending = sorted(arrivals)
    now = pending[0][0]
    while now <= until:
        while pending and pending[0][0] <= now:
            t, n = pending.pop(0)
            buf.push(packet(n), t)
        for ch in buf.pop_due(now):
            out.append((now, int.from_bytes(ch.pcm[:2], "little", signed=True), ch.silence))
        now += step
    return out


def test_steady_packets_are_held_exactly_the_target() -> None:
    buf = PlayoutBuffer(0.030)
    t0 = 100.0
    arrivals = [(t0 + 0.020 * n, n + 1) for n in range(20)]
    out = run(arrivals, buf, t0 + 0.020 * 19 + 0.045)  # before the buffer runs dry
    # every packet comes out as two chunks, in order, nothing lost, repeated or inserted
    assert [(v, s) for _, v, s in out] == [(n + 1, False) for n in range(20) for _ in (0, 1)]
    first = {v: t for t, v, s in reversed(out) if not s}  # first chunk of each packet
    for n in range(20):
        assert first[n + 1] - (t0 + 0.020 * n) == pytest.approx(0.030, abs=0.0006)
    assert buf.underruns == 0
    assert buf.mean_hold == pytest.approx(0.035, abs=0.0006)  # target + half a chunk
    assert buf.dropped_samples == 0


def test_a_late_first_packet_does_not_delay_the_rest() -> None:
    buf = PlayoutBuffer(0.030)
    t0 = 100.0
    # packet 1 arrives 6 ms late; 2.. on the timeline t0 + 20 ms x n
    arrivals = [(t0 + 0.006, 1)] + [(t0 + 0.020 * n, n + 1) for n in range(1, 10)]
    out = run(arrivals, buf, t0 + 0.020 * 9 + 0.045)  # before the buffer runs dry
    first = {v: t for t, v, s in reversed(out) if not s}
    for n in range(1, 10):  # on the fastest packets' timeline: the target after arrival
        assert first[n + 1] - (t0 + 0.020 * n) == pytest.approx(0.030, abs=0.0006)
    # packet 2 (on time) moved the schedule 6 ms earlier before packet 1 was due: the
    # late packet 1 is released in its slot on that timeline, held 6 ms less
    assert first[1] - t0 == pytest.approx(0.030, abs=0.0006)
    assert buf.underruns == 0 and buf.dropped_samples == 0


def test_a_stall_longer_than_the_target_underruns_then_catches_up() -> None:
    buf = PlayoutBuffer(0.020)
    t0 = 100.0
    # packets 5 and 6 are stalled and arrive together, 35 ms after packet 5 was sent
    stall_end = t0 + 0.020 * 4 + 0.035
    arrivals = [(max(t0 + 0.020 * n, stall_end) if n in (4, 5) else t0 + 0.020 * n, n + 1)
                for n in range(12)]
    out = run(arrivals, buf, t0 + 0.020 * 11 + 0.035)  # before the buffer runs dry
    values = [(v, s) for _, v, s in out]
    # two ticks of silence where packet 5 was due; then one chunk dropped per silent tick
    # (the oldest queued: the first halves of packets 5 and 6) to get back on schedule
    expected = [(n, False) for n in (1, 1, 2, 2, 3, 3, 4, 4)] + [(0, True), (0, True)]
    expected += [(5, False), (6, False)] + [(n, False) for n in range(7, 13) for _ in (0, 1)]
    assert values == expected
    assert buf.underruns == 2 and buf.dropped_samples == 2 * 480
    # back on schedule: every later packet's first chunk exactly the target after arrival
    first = {v: t for t, v, s in reversed(out) if not s}
    for n in range(6, 12):
        assert first[n + 1] - (t0 + 0.020 * n) == pytest.approx(0.020, abs=0.0006)


def test_a_lost_packet_shifts_the_timeline_within_the_window() -> None:
    buf = PlayoutBuffer(0.030, window=0.2)
    t0 = 100.0
    # packet 11 (n = 10) never arrives: later packets sit 20 ms earlier in the stream
    arrivals = [(t0 + 0.020 * n, n + 1) for n in range(40) if n != 10]
    out = run(arrivals, buf, t0 + 0.020 * 39 + 0.045)
    first = {v: t for t, v, s in reversed(out) if not s}
    hold = {n: first[n + 1] - (t0 + 0.020 * n) for n in range(40) if n != 10}
    for n in range(11, 20):  # the old anchor still in the window: released 20 ms early
        assert hold[n] == pytest.approx(0.010, abs=0.0006)
    for n in range(22, 40):  # the window moved on: the target again, not drained
        assert hold[n] == pytest.approx(0.030, abs=0.0006)
    assert buf.underruns == 0
    played = [v for _, v, s in out if not s]
    assert played == [n + 1 for n in range(40) if n != 10 for _ in (0, 1)]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        PlayoutBuffer(-0.01)
    with pytest.raises(ValueError):
        PlayoutBuffer(0.03, channels=3)
    with pytest.raises(ValueError):
        PlayoutBuffer(0.03, window=0)
    buf = PlayoutBuffer(0.03)
    with pytest.raises(ValueError):
        buf.push(b"\x00\x01\x02", 1.0)
    assert buf.next_due() is None
    assert buf.pop_due(5.0) == []
