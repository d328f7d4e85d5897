"""The publisher's send rate (loss-based, split over simulcast layers) and the received
video's jitter buffer giving up a gap (issue 16)."""

from __future__ import annotations

from typing import Any

from aiolivekit.media.send_rate import LossBasedRate, allocate, min_bitrate
from aiolivekit.media.video_jitter import MAX_GAP_WAIT, VideoJitterBuffer

LAYERS = [(min_bitrate(320, 180), 160_000), (min_bitrate(640, 360), 450_000),
          (min_bitrate(1280, 720), 1_500_000)]


def test_layers_are_filled_from_the_lowest_and_paused_from_the_top() -> None:
    assert [low for low, _ in LAYERS] == [30_000, 150_000, 600_000]
    assert allocate(2_500_000, LAYERS) == [160_000, 450_000, 1_500_000]
    assert allocate(1_300_000, LAYERS) == [160_000, 450_000, 690_000]
    assert allocate(600_000, LAYERS) == [160_000, 440_000, 0]  # f does not fit its minimum
    assert allocate(250_000, LAYERS) == [160_000, 0, 0]
    assert allocate(10_000, LAYERS) == [30_000, 0, 0]  # the lowest always goes


def test_the_rate_cuts_on_loss_holds_in_between_and_climbs_when_clean() -> None:
    rate = LossBasedRate(2_000_000)
    assert rate.on_loss(0.5, 0.0) == 1_500_000  # cut by half the loss
    assert rate.on_loss(0.5, 0.2) == 1_500_000  # the queue is still draining: no second cut
    assert rate.on_loss(0.4, 0.6) == 1_200_000
    assert rate.on_loss(0.05, 1.6) == 1_200_000  # between 2 % and 10 %: hold
    grown = rate.on_loss(0.0, 2.6)
    assert 1_290_000 <= grown <= 1_300_000  # 8 % a second
    for t in range(3, 40):
        top = rate.on_loss(0.0, float(t))
    assert top == 2_000_000  # never above the cap
    rate.on_remb(700_000)
    assert rate.target == 700_000


class Pkt:
    def __init__(self, seq: int, ts: int, data: bytes = b"x") -> None:
        self.sequence_number, self.timestamp, self._data = seq, ts, data


def test_a_lost_packet_holds_video_only_until_the_gap_is_given_up() -> None:
    now = [100.0]
    jb = VideoJitterBuffer(clock=lambda: now[0])
    out: list[Any] = []

    def add(seq: int, ts: int) -> bool:
        pli, frame = jb.add(Pkt(seq, ts))
        if frame is not None:
            out.append(frame.timestamp)
        return pli

    for seq, ts in ((0, 0), (1, 0), (2, 3000), (3, 3000)):
        add(seq, ts)
    assert out == [0]  # frame 0 complete (frame 3000 waits for the next one)
    # seq 5 (second packet of frame 6000) is lost: 6000 and everything after it waits
    add(4, 6000)
    assert out == [0, 3000]
    for seq, ts in ((6, 9000), (7, 9000), (8, 12000)):
        now[0] += 0.1
        assert not add(seq, ts)
    assert out == [0, 3000]  # held by the gap
    now[0] += MAX_GAP_WAIT
    assert add(9, 12000)  # given up: a PLI is asked for
    # frame 6000 is dropped, and 9000 too (after a gap a frame may lack its start)
    assert jb.gaps_skipped == 1
    add(10, 15000)
    assert out == [0, 3000, 12000]  # video goes on
