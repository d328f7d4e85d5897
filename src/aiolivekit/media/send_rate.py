"""How much video a publisher sends: a loss-based rate and its split over simulcast layers
(sans-I/O, time passed in).

The feedback both servers give a publisher is the RTCP receiver report: the fraction of
packets lost since the last one. :class:`LossBasedRate` follows libwebrtc's loss-based
rule: below 2 % loss the rate grows 8 % a second, above 10 % it is cut by half the loss,
and in between it holds; a REMB, when a server sends one, caps it. A link that cannot
carry the encoders' rate overflows a queue and loses packets, so the rate comes down to
what it carries; when the link clears, the rate climbs back.

:func:`allocate` gives the rate to simulcast layers from the lowest up: each layer that
fits at least its minimum (libwebrtc's per-resolution minimums) gets up to its maximum,
the first that does not fit and every layer above it are paused.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LossBasedRate", "allocate", "min_bitrate"]

INCREASE_LOSS = 0.02
DECREASE_LOSS = 0.10
INCREASE_PER_SECOND = 1.08
# seconds between two cuts: the loss right after a cut is still the queue that overflowed
# before it (libwebrtc waits 300 ms + RTT; a deeper queue takes longer to drain)
DECREASE_INTERVAL = 0.5
MIN_RATE = 50_000


def min_bitrate(width: int, height: int) -> int:
    """The least a layer of this size is sent with (libwebrtc's simulcast table)."""
    pixels = width * height
    for limit, rate in ((320 * 180, 30_000), (480 * 270, 150_000), (640 * 360, 150_000),
                        (960 * 540, 350_000), (1280 * 720, 600_000)):
        if pixels <= limit:
            return rate
    return 800_000


@dataclass
class LossBasedRate:
    """The send rate (bit/s) from the loss in receiver reports."""

    max_rate: int
    rate: float = 0.0
    remb: int | None = None
    _last_increase: float | None = None
    _last_decrease: float | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0:
            self.rate = float(self.max_rate)

    @property
    def target(self) -> int:
        cap = self.max_rate if self.remb is None else min(self.max_rate, self.remb)
        return int(max(MIN_RATE, min(self.rate, cap)))

    def on_remb(self, bitrate: int) -> None:
        self.remb = max(MIN_RATE, int(bitrate))

    def on_loss(self, fraction_lost: float, now: float) -> int:
        """One receiver report's loss (0..1) at ``now``; returns the new target."""
        if fraction_lost > DECREASE_LOSS:
            if self._last_decrease is None or now - self._last_decrease >= DECREASE_INTERVAL:
                self.rate = max(MIN_RATE, self.target * (1.0 - 0.5 * fraction_lost))
                self._last_decrease = now
            self._last_increase = now
        elif fraction_lost < INCREASE_LOSS:
            if self._last_increase is not None:
                elapsed = min(max(now - self._last_increase, 0.0), 2.0)
                self.rate = min(float(self.max_rate),
                                self.target * INCREASE_PER_SECOND ** elapsed + 1000 * elapsed)
            self._last_increase = now
        else:
            self._last_increase = now
        return self.target


def allocate(rate: int, layers: list[tuple[int, int]]) -> list[int]:
    """Split ``rate`` over ``layers`` (``(min, max)`` bit/s each, lowest first): the
    bitrate of each, 0 for a paused one. Lower layers are filled first; the lowest is
    always sent (with at least its minimum)."""
    out: list[int] = []
    left = rate
    for i, (low, high) in enumerate(layers):
        if i > 0 and left < low:
            out.extend([0] * (len(layers) - i))
            break
        give = min(high, max(left, low))
        out.append(int(give))
        left -= give
    return out
