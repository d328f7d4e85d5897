"""The playout buffer's delay measurement (:mod:`.playout`), sans-I/O: each packet's
transit ``arrival - timestamp / clock`` over a sliding window gives the fastest path seen
(``expected``: when audio of a timestamp arrives at best), the spread (the ``percentile``
of the transits minus their minimum: the target delay) and RFC 3550's jitter."""

from __future__ import annotations

import bisect
import math
from collections import deque

__all__ = ["DelayEstimator"]


class DelayEstimator:
    """Transit times over a sliding window: base (fastest) path, percentile, RFC 3550 jitter."""

    def __init__(self, clock: int, window: float, percentile: float) -> None:
        self.clock = clock
        self.window = window
        self.percentile = percentile
        self._samples: deque[tuple[float, float]] = deque()  # (arrival, transit), arrival order
        self._sorted: list[float] = []  # the same transits, sorted
        self._last_transit: float | None = None
        self._ref: tuple[float, int] | None = None
        self.jitter = 0.0

    def add(self, arrival: float, ts: int) -> None:
        if self._ref is None:
            self._ref = (arrival, ts)  # transits are relative to the first packet (precision)
        transit = (arrival - self._ref[0]) - (ts - self._ref[1]) / self.clock
        if self._last_transit is not None:
            self.jitter += (abs(transit - self._last_transit) - self.jitter) / 16
        self._last_transit = transit
        self._samples.append((arrival, transit))
        bisect.insort(self._sorted, transit)
        while len(self._samples) > 1 and arrival - self._samples[0][0] > self.window:
            _, old = self._samples.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def _compute(self) -> tuple[float, float]:
        values = self._sorted
        k = max(0, math.ceil(self.percentile * len(values)) - 1)
        return values[0], values[k] - values[0]

    @property
    def empty(self) -> bool:
        return not self._samples

    def expected(self, ts: int) -> float:
        """When ``ts`` arrives on the fastest path seen in the window."""
        assert self._ref is not None
        return self._ref[0] + self._compute()[0] + (ts - self._ref[1]) / self.clock

    def spread(self) -> float:
        return self._compute()[1]

    def tail(self) -> float:
        """How much later than the percentile the latest transit in the window is."""
        values = self._sorted
        return values[-1] - values[0] - self._compute()[1] if values else 0.0
