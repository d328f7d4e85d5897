"""The sans-I/O reconnection policy (retry delays, resume -> full escalation, give-up)
and the reliable-data resend buffer."""

from __future__ import annotations

import pytest

from aiolivekit.data.packets import PacketEncoder, ResendBuffer
from aiolivekit.engine.reconnect import ReconnectPlan, RetryPolicy


def test_delays_double_from_300_ms_to_a_7_s_cap_without_jitter() -> None:
    policy = RetryPolicy()
    delays = [policy.delay(n, rand=0.0) for n in range(10)]
    assert delays == [0.0, 0.3, 0.6, 1.2, 2.4, 4.8, 7.0, 7.0, 7.0, 7.0]
    assert delays == [policy.nominal(n) for n in range(10)]


def test_delays_are_full_jitter_between_zero_and_the_nominal_wait() -> None:
    policy = RetryPolicy()  # the Rust core's full jitter: uniform in [0, nominal]
    assert policy.delay(1, rand=0.5) == pytest.approx(0.15)
    assert policy.delay(1, rand=0.999999) == pytest.approx(0.0, abs=1e-5)
    assert policy.delay(5, rand=0.25) == pytest.approx(4.8 * 0.75)
    assert policy.delay(9, rand=0.5) == pytest.approx(3.5)  # half the 7 s cap
    assert 0.0 <= min(policy.delay(n, rand=r / 10) for n in range(10) for r in range(10))
    assert max(policy.delay(n, rand=r / 10) for n in range(10) for r in range(10)) == 7.0
    partial = RetryPolicy(jitter=0.2)
    assert partial.delay(1, rand=0.999999) == pytest.approx(0.24, abs=1e-5)


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(first_delay=8.0, max_delay=7.0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.5)


def test_ten_attempts_then_give_up() -> None:
    plan = ReconnectPlan(rand=lambda: 0.0)
    attempts = []
    while (a := plan.next()) is not None:
        attempts.append((a.number, a.kind, a.delay))
        plan.failed("unreachable")
    assert [n for n, _, _ in attempts] == list(range(10))
    assert {k for _, k, _ in attempts} == {"resume"}  # unreachable: resume again
    assert sum(d for _, _, d in attempts) == pytest.approx(0.3 + 0.6 + 1.2 + 2.4 + 4.8 + 4 * 7)
    assert plan.gave_up and plan.next() is None


def test_a_refused_resume_turns_into_full_reconnects() -> None:
    plan = ReconnectPlan(rand=lambda: 0.0)
    first = plan.next()
    assert first is not None and (first.kind, first.delay) == ("resume", 0.0)
    plan.failed("refused")
    second = plan.next()
    # the server answered (it does not know the session): the full join goes out at once
    assert second is not None and second.kind == "full" and second.delay == 0.0
    plan.failed("unreachable")
    third = plan.next()
    assert third is not None and third.kind == "full"  # never back to resume
    assert third.delay == pytest.approx(0.6)  # then the schedule again


def test_broken_peer_connection_and_escalation_mean_full() -> None:
    plan = ReconnectPlan(rand=lambda: 0.0)
    assert plan.next().kind == "resume"  # type: ignore[union-attr]
    plan.failed("broken")
    assert plan.next().kind == "full"  # type: ignore[union-attr]
    other = ReconnectPlan(rand=lambda: 0.0)
    other.escalate()
    assert other.next().kind == "full"  # type: ignore[union-attr]
    assert ReconnectPlan(full=True).next().kind == "full"  # type: ignore[union-attr]


def test_fatal_failure_stops_at_once() -> None:
    plan = ReconnectPlan()
    assert plan.next() is not None
    plan.failed("fatal")
    assert plan.next() is None and plan.attempts == 1 and plan.last_outcome == "fatal"


# ---------------------------------------------------------------------- resend buffer


def _sent(encoder: PacketEncoder, buf: ResendBuffer, payload: bytes) -> int:
    packet = encoder.user_packet(payload)
    data = encoder.encode(packet, reliable=True)
    buf.add(packet.sequence, data)
    return packet.sequence


def test_resend_after_the_servers_last_sequence_in_order_with_original_bytes() -> None:
    enc = PacketEncoder(identity="a", sid="PA_a")
    buf = ResendBuffer()
    seqs = [_sent(enc, buf, b"m%d" % i) for i in range(10)]
    assert seqs == list(range(1, 11))
    again = buf.after(6)
    assert [s for s, _ in again] == [7, 8, 9, 10]
    from livekit.protocol import models as models_pb

    decoded = [models_pb.DataPacket.FromString(d) for _, d in again]
    assert [p.sequence for p in decoded] == [7, 8, 9, 10]
    assert [p.user.payload for p in decoded] == [b"m6", b"m7", b"m8", b"m9"]
    assert len(buf) == 4  # 1..6 are confirmed and forgotten
    assert buf.after(10) == [] and len(buf) == 0
    assert buf.size == 0


def test_resend_buffer_is_bounded_and_reports_evictions(caplog: pytest.LogCaptureFixture) -> None:
    buf = ResendBuffer(max_packets=3, max_bytes=1000)
    for seq in range(1, 6):
        buf.add(seq, b"x" * 10)
    assert [s for s, _ in buf.after(0)] == [3, 4, 5]
    assert buf.evicted == 2 and buf.evicted_up_to == 2
    assert "evicted" in caplog.text
    by_bytes = ResendBuffer(max_packets=100, max_bytes=25)
    for seq in range(1, 4):
        by_bytes.add(seq, b"y" * 10)
    assert len(by_bytes) == 2 and by_bytes.size == 20


def test_resend_buffer_refuses_unsequenced_or_decreasing() -> None:
    buf = ResendBuffer()
    with pytest.raises(ValueError):
        buf.add(0, b"x")
    buf.add(5, b"x")
    with pytest.raises(ValueError):
        buf.add(5, b"y")
    with pytest.raises(ValueError):
        ResendBuffer(max_packets=0)
