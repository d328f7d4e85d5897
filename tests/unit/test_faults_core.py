"""The sans-I/O impairment core: loss, bursts, delay, jitter, reordering, determinism."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

from aiolivekit.testing.faults import (
    ForbiddenAddressError,
    GilbertElliott,
    Impairment,
    ImpairmentConfig,
    check_address,
    rewrite_candidates,
)
from aiolivekit.testing.faults.sdp import candidate_address

PACKET_INTERVAL = 0.02  # one datagram every 20 ms, like Opus


def run(imp: Impairment, n: int, size: int = 100, flow: object = None) -> list[float | None]:
    return [imp.decide(i * PACKET_INTERVAL, size, flow).deliver_at for i in range(n)]


def test_no_impairment_delivers_everything_now() -> None:
    imp = Impairment()
    out = run(imp, 100)
    assert out == [i * PACKET_INTERVAL for i in range(100)]
    assert imp.stats.offered == imp.stats.delivered == 100
    assert imp.stats.dropped_total == 0 and imp.stats.reordered == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loss_rate_within_tolerance(seed: int) -> None:
    n, p = 20000, 0.05
    imp = Impairment(ImpairmentConfig(loss=p), seed=seed)
    out = run(imp, n)
    lost = sum(1 for t in out if t is None)
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(lost - n * p) < 4 * sigma, lost
    assert imp.stats.dropped == {"loss": lost}
    assert imp.stats.loss_ratio == pytest.approx(lost / n)


def test_burst_drops_runs_of_exactly_n() -> None:
    imp = Impairment(ImpairmentConfig(loss=0.02, burst=3), seed=7)
    out = run(imp, 20000)
    runs: list[int] = []
    current = 0
    for t in out:
        if t is None:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    assert runs, "no loss at all"
    # every loss event drops 3 in a row; two events can touch, giving multiples of 3
    assert all(r % 3 == 0 for r in runs), sorted(set(runs))
    assert runs.count(3) > 0.9 * len(runs)
    assert imp.stats.dropped["burst"] == 2 * imp.stats.dropped["loss"]


def test_gilbert_elliott_loses_in_long_runs() -> None:
    ge = GilbertElliott(p_good_to_bad=0.01, p_bad_to_good=0.25)
    imp = Impairment(ImpairmentConfig(gilbert=ge), seed=3)
    out = run(imp, 40000)
    lost = sum(1 for t in out if t is None)
    # stationary share of the bad state: 0.01 / (0.01 + 0.25) ~ 3.8 %
    assert 0.025 < lost / len(out) < 0.055
    runs, current = [], 0
    for t in out:
        if t is None:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    assert sum(runs) / len(runs) > 2.5  # mean bad sojourn is 4 datagrams


def test_fixed_delay() -> None:
    imp = Impairment(ImpairmentConfig(delay=0.040))
    out = run(imp, 50)
    assert out == [pytest.approx(i * PACKET_INTERVAL + 0.040) for i in range(50)]
    assert imp.stats.delay_min == pytest.approx(0.040)
    assert imp.stats.delay_max == pytest.approx(0.040)
    assert imp.stats.delay_histogram[imp.stats.delay_buckets.index(0.040)] == 50


@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_jitter_bounds_and_spread(dist: str) -> None:
    imp = Impairment(ImpairmentConfig(delay=0.040, jitter=0.020, jitter_dist=dist),  # type: ignore[arg-type]
                     seed=11)
    n = 5000
    delays = [t - i * PACKET_INTERVAL for i, t in enumerate(run(imp, n)) if t is not None]
    assert len(delays) == n
    assert min(delays) >= 0.020 - 1e-9 and max(delays) <= 0.060 + 1e-9
    mean = sum(delays) / n
    assert mean == pytest.approx(0.040, abs=0.002)
    spread = max(delays) - min(delays)
    assert spread > (0.035 if dist == "uniform" else 0.025)


def test_jitter_with_reordering_reorders() -> None:
    # 40 +- 20 ms on a 20 ms stream: later datagrams often overtake earlier ones
    imp = Impairment(ImpairmentConfig(delay=0.040, jitter=0.020, reorder=True), seed=5)
    out = [t for t in run(imp, 2000) if t is not None]
    inversions = sum(1 for a, b in pairwise(out) if b < a)
    assert inversions > 100
    assert imp.stats.reordered >= inversions


def test_jitter_without_reordering_is_monotonic() -> None:
    imp = Impairment(ImpairmentConfig(delay=0.040, jitter=0.020, reorder=False), seed=5)
    out = [t for t in run(imp, 2000) if t is not None]
    assert all(b >= a for a, b in pairwise(out))
    assert imp.stats.reordered == 0
    # still jittered: the gaps between deliveries vary
    gaps = {round(b - a, 4) for a, b in pairwise(out)}
    assert len(gaps) > 50


def test_monotonic_per_flow_only() -> None:
    imp = Impairment(ImpairmentConfig(delay=0.040, jitter=0.020, reorder=False), seed=9)
    per_flow: dict[str, list[float]] = {"a": [], "b": []}
    for i in range(2000):
        flow = "a" if i % 2 else "b"
        t = imp.decide(i * 0.01, 100, flow).deliver_at
        assert t is not None
        per_flow[flow].append(t)
    for times in per_flow.values():
        assert all(y >= x for x, y in pairwise(times))


def test_same_seed_same_verdicts_other_seed_differs() -> None:
    cfg = ImpairmentConfig(loss=0.1, burst=2, delay=0.03, jitter=0.01)
    a = run(Impairment(cfg, seed=42), 3000)
    b = run(Impairment(cfg, seed=42), 3000)
    c = run(Impairment(cfg, seed=43), 3000)
    assert a == b
    assert a != c


def test_blackhole_then_heal_at_run_time() -> None:
    imp = Impairment(ImpairmentConfig(delay=0.01))
    assert imp.decide(0.0).deliver_at == pytest.approx(0.01)
    imp.configure(imp.config.with_(blackhole=True))
    assert all(imp.decide(0.02 * i).reason == "blackhole" for i in range(1, 51))
    imp.configure(imp.config.with_(blackhole=False))
    assert imp.decide(2.0).deliver_at == pytest.approx(2.01)
    assert imp.stats.dropped == {"blackhole": 50}
    assert imp.stats.delivered == 2


def test_rate_limit_serialises_and_tail_drops() -> None:
    # 80 kbit/s = 10 kB/s: a 1000-byte datagram takes 100 ms on the wire
    imp = Impairment(ImpairmentConfig(rate_bps=80_000, queue_limit=0.25))
    verdicts = [imp.decide(0.0, 1000) for _ in range(6)]
    times = [v.deliver_at for v in verdicts]
    assert times[:3] == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)]
    # the fourth would wait 0.3 s > 0.25 s of queue: tail drop
    assert [v.reason for v in verdicts[3:]] == ["queue", "queue", "queue"]
    # once the link has drained, a datagram goes straight through again
    assert imp.decide(1.0, 1000).deliver_at == pytest.approx(1.1)


def test_bad_configuration_raises() -> None:
    with pytest.raises(ValueError):
        ImpairmentConfig(loss=1.5)
    with pytest.raises(ValueError):
        ImpairmentConfig(burst=0)
    with pytest.raises(ValueError):
        ImpairmentConfig(jitter=-0.01)
    with pytest.raises(ValueError):
        ImpairmentConfig(loss=0.1, gilbert=GilbertElliott(0.1, 0.1))
    with pytest.raises(ValueError):
        ImpairmentConfig(jitter_dist="pareto")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Impairment().configure({"loss": 0.1})  # type: ignore[arg-type]


def test_address_guard() -> None:
    assert check_address("127.0.0.2") == "127.0.0.2"
    assert check_address("localhost") == "127.0.0.1"
    assert check_address("10.203.0.1") == "10.203.0.1"
    assert check_address("::1") == "::1"
    for bad in ("0.0.0.0", "10.203.1.1", "192.168.1.1", "8.8.8.8", "example.com", "", "::"):
        with pytest.raises(ForbiddenAddressError):
            check_address(bad)


def test_rewrite_candidates() -> None:
    sdp = "\r\n".join([
        "v=0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host",
        "a=candidate:2 1 udp 2130706431 10.203.0.1 40002 typ host",
        "a=end-of-candidates",
        "",
    ])
    out, n = rewrite_candidates(sdp, {("127.0.0.1", 40001): ("127.0.0.2", 50001)})
    assert n == 1
    assert "a=candidate:1 1 udp 2130706431 127.0.0.2 50001 typ host\r\n" in out
    assert "10.203.0.1" not in out and "a=end-of-candidates" in out
    assert candidate_address("candidate:1 1 udp 1 ::1 5 typ host") == ("::1", 5)
    with pytest.raises(ForbiddenAddressError):
        rewrite_candidates(sdp, {("127.0.0.1", 40001): ("192.0.2.1", 1)})


async def test_relayed_server_names_its_two_kinds() -> None:
    from aiolivekit.testing.faults import relayed_server

    with pytest.raises(ValueError, match="unknown server kind 'livekit'"):
        async with relayed_server("livekit"):
            pass  # pragma: no cover
