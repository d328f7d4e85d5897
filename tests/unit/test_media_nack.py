"""AudioNackScheduler: which missing audio packets are NACKed, when (simulated clock)."""

from __future__ import annotations

import pytest

from aiolivekit.media.nack import AudioNackScheduler
from aiolivekit.webrtc.sdp import drop_send_audio_nack


def _deadlines(table: dict[int, float]):  # type: ignore[no-untyped-def]
    return lambda seq: table.get(seq)


def test_gap_is_nacked_once_then_retried_after_a_round_trip() -> None:
    s = AudioNackScheduler(initial_rtt=0.02, retry_interval=0.01, max_retries=3)
    for seq in (10, 11, 14):
        s.received(seq, 1.0)
    assert s.missing == [12, 13]
    far = _deadlines({12: 1.5, 13: 1.5})
    assert s.poll(1.0, far) == [12, 13]
    assert s.poll(1.01, far) == []  # 1.5 round trips not passed yet
    assert s.poll(1.031, far) == [12, 13]
    assert s.stats.nack_requests == 2 and s.stats.nacked_packets == 4


def test_retries_are_bounded() -> None:
    s = AudioNackScheduler(initial_rtt=0.01, retry_interval=0.01, max_retries=2)
    s.received(1, 0.0)
    s.received(3, 0.0)
    far = _deadlines({2: 10.0})
    sent = [t for t in range(20) if s.poll(t * 0.02, far)]
    assert sent == [0, 1]  # two requests, then given up
    assert s.missing == [] and s.stats.given_up == 1


def test_no_nack_when_the_retransmission_would_be_late() -> None:
    s = AudioNackScheduler(initial_rtt=0.03, margin=0.002)
    s.received(100, 5.0)
    s.received(103, 5.0)
    # 101 could come back in time (5.0 + 0.03 + 0.002 < 5.04); 102 not (5.03 < 5.032)
    assert s.poll(5.0, _deadlines({101: 5.04, 102: 5.03})) == [101]
    assert s.missing == [101] and s.stats.given_up == 1
    # a packet whose slot is played (past deadline) is dropped, not requested
    assert s.poll(5.1, _deadlines({101: float("-inf")})) == []
    assert s.missing == [] and s.stats.given_up == 2


def test_a_copy_in_the_buffer_is_not_requested() -> None:
    s = AudioNackScheduler()
    s.received(7, 0.0)
    s.received(9, 0.0)
    assert s.poll(0.0, _deadlines({})) == []  # None: the buffer holds it (RED copy)
    assert s.missing == [] and s.stats.given_up == 0


def test_recovery_is_counted_and_measures_the_round_trip() -> None:
    s = AudioNackScheduler(initial_rtt=0.05, samples=4)
    s.received(1, 0.0)
    s.received(4, 0.0)
    assert s.poll(0.0, _deadlines({2: 1.0, 3: 1.0})) == [2, 3]
    assert s.received(2, 0.008) and s.received(3, 0.012)
    assert s.stats.recovered == 2
    assert s.rtt == pytest.approx(0.012)  # the upper samples: retransmissions, not reorders
    assert not s.received(3, 0.02)  # a duplicate is not a second recovery


def test_reordered_packet_before_any_request_is_not_a_recovery() -> None:
    s = AudioNackScheduler()
    s.received(1, 0.0)
    s.received(3, 0.0)
    assert not s.received(2, 0.001)
    assert s.missing == [] and s.stats.recovered == 0


def test_wrap_and_large_jumps() -> None:
    s = AudioNackScheduler(max_gap=10)
    s.received(0xFFFE, 0.0)
    s.received(1, 0.0)  # wraps: 0xFFFF and 0 missing
    assert s.missing == [0xFFFF, 0]  # oldest first
    assert s.poll(0.0, _deadlines({0xFFFF: 1.0, 0: 1.0})) == [0xFFFF, 0]
    s.received(500, 0.0)  # a jump: an outage or a new stream, nothing requested
    assert s.missing == []


def test_missing_set_is_bounded() -> None:
    s = AudioNackScheduler(max_gap=50, max_missing=5)
    s.received(0, 0.0)
    s.received(20, 0.0)
    assert s.missing == [15, 16, 17, 18, 19] and s.stats.given_up == 14


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        AudioNackScheduler(max_retries=0)
    with pytest.raises(ValueError):
        AudioNackScheduler(initial_rtt=0.5, max_rtt=0.3)
    with pytest.raises(ValueError):
        AudioNackScheduler().received(70000, 0.0)


def test_next_time() -> None:
    s = AudioNackScheduler(initial_rtt=0.02, retry_interval=0.01)
    assert s.next_time() is None
    s.received(1, 0.0)
    s.received(3, 0.0)
    s.poll(0.5, _deadlines({2: 2.0}))
    assert s.next_time() == pytest.approx(0.53)


def test_offer_keeps_nack_on_received_audio_only() -> None:
    offer = "\r\n".join([
        "v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=sendonly", "a=rtcp-fb:111 nack",
        "a=rtcp-fb:111 nack pli", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=recvonly",
        "a=rtcp-fb:111 nack", "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=sendonly",
        "a=rtcp-fb:96 nack", ""])
    out = drop_send_audio_nack(offer).split("\r\n")
    assert out == [
        "v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=sendonly", "a=rtcp-fb:111 nack pli",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=recvonly", "a=rtcp-fb:111 nack",
        "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=sendonly", "a=rtcp-fb:96 nack", ""]


def test_an_overdue_packet_is_missing_before_the_gap_shows() -> None:
    """The playout buffer waited for 21 (nothing later has come): it can be requested at
    once; when it arrives (beyond the highest seen) it is a recovery."""
    s = AudioNackScheduler(initial_rtt=0.004, samples=4)
    s.received(20, 1.0)
    s.overdue(21, 1.025)
    assert s.missing == [21]
    assert s.poll(1.025, _deadlines({21: 1.045})) == [21]
    assert s.received(21, 1.029) is True
    assert s.missing == [] and s.stats.recovered == 1 and s.stats.gaps == 0
    assert abs(s.rtt - 0.004) < 1e-9
    # overdue entries keep their request state when the gap then shows
    s.overdue(22, 1.05)
    assert s.poll(1.05, _deadlines({22: 1.07})) == [22]
    s.received(23, 1.055)
    assert s.missing == [22] and s.stats.gaps == 1
    assert s.poll(1.055, _deadlines({22: 1.07})) == []  # already requested, not yet due again
    # what is not beyond the highest, too far ahead, or before any packet: ignored
    s.overdue(23, 1.1)
    s.overdue(23 + 51, 1.1)
    assert s.missing == [22]
    fresh = AudioNackScheduler()
    fresh.overdue(5, 0.0)
    assert fresh.missing == []
    with pytest.raises(ValueError):
        s.overdue(70000, 1.0)


def test_an_estimate_too_high_is_corrected_by_a_probe() -> None:
    """The initial guess (20 ms) finds every request too late on a path whose real round
    trip is 2 ms; every 4th such packet is requested anyway and its answer measures the
    round trip, after which requests go out when they fit."""
    s = AudioNackScheduler(initial_rtt=0.02, probe_every=4, samples=4)
    sent = []
    for k in range(6):
        t = 1.0 + k
        s.received(100 + 2 * k, t)
        s.received(102 + 2 * k, t)  # 101 + 2k missing, due in 10 ms
        out = s.poll(t, _deadlines({(101 + 2 * k) & 0xFFFF: t + 0.01}))
        sent.append(out)
        if out:
            assert s.received(out[0], t + 0.002) is True
    assert sent[:4] == [[], [], [], [107]]  # three given up, the fourth a probe
    assert abs(s.rtt - 0.002) < 1e-9
    assert sent[4:] == [[109], [111]]  # now they fit
    with pytest.raises(ValueError):
        AudioNackScheduler(probe_every=0)
