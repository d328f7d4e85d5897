"""Sans-I/O network impairment: given a datagram and the current time, drop it or say when to
deliver it.

:class:`Impairment` holds one direction's configuration (:class:`ImpairmentConfig`), a seeded
random generator and statistics. It never reads a clock: the caller passes ``now`` (seconds,
any monotonic origin) and receives a :class:`Verdict`. Two instances built with the same seed
and fed the same (time, size, flow) sequence give the same verdicts.

Order of the decisions for one datagram: blackhole, then the loss model (independent loss with
optional bursts, or Gilbert-Elliott), then the rate limiter (tail drop when its queue holds
more than ``queue_limit`` seconds), then delay + jitter. Without ``reorder`` a datagram is never
delivered before an earlier datagram of the same flow (delivery times are kept monotonic).
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = [
    "DEFAULT_DELAY_BUCKETS",
    "GilbertElliott",
    "Impairment",
    "ImpairmentConfig",
    "ImpairmentStats",
    "Verdict",
]

logger = logging.getLogger(__name__)

# upper bounds (seconds) of the delay histogram's buckets; the last bucket is open
DEFAULT_DELAY_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.010, 0.020, 0.030, 0.040, 0.050, 0.060, 0.080, 0.100, 0.150, 0.200, 0.500,
    1.0,
)
MAX_FLOWS = 4096
DropReason = Literal["blackhole", "loss", "burst", "queue"]


@dataclass(frozen=True)
class GilbertElliott:
    """Two-state loss model: a good and a bad state, with per-datagram transition chances."""

    p_good_to_bad: float
    p_bad_to_good: float
    loss_good: float = 0.0
    loss_bad: float = 1.0

    def __post_init__(self) -> None:
        for name in ("p_good_to_bad", "p_bad_to_good", "loss_good", "loss_bad"):
            _check_probability(name, getattr(self, name))


@dataclass(frozen=True)
class ImpairmentConfig:
    """One direction's impairments. Times are seconds; ``rate_bps`` is bits per second.

    ``loss`` is the chance that a loss event starts at a datagram; each event drops
    ``burst`` datagrams in a row (``burst=3``: three lost in a row). ``gilbert`` replaces that
    model when given. ``jitter`` is the half-width of the uniform distribution added to
    ``delay`` (``jitter_dist="normal"``: a normal with sigma ``jitter / 2``, clipped to
    ``± jitter``); a delivery time is never before ``now``.
    """

    loss: float = 0.0
    burst: int = 1
    gilbert: GilbertElliott | None = None
    delay: float = 0.0
    jitter: float = 0.0
    jitter_dist: Literal["uniform", "normal"] = "uniform"
    reorder: bool = True
    blackhole: bool = False
    rate_bps: float | None = None
    queue_limit: float = 0.5

    def __post_init__(self) -> None:
        _check_probability("loss", self.loss)
        if not isinstance(self.burst, int) or not 1 <= self.burst <= 1000:
            raise ValueError(f"burst must be an int in 1..1000, got {self.burst!r}")
        if self.gilbert is not None and (self.loss or self.burst != 1):
            raise ValueError("give either loss/burst or gilbert, not both")
        for name in ("delay", "jitter", "queue_limit"):
            value = getattr(self, name)
            if not 0.0 <= value <= 60.0:
                raise ValueError(f"{name} must be within 0..60 s, got {value!r}")
        if self.jitter_dist not in ("uniform", "normal"):
            raise ValueError(f"jitter_dist must be 'uniform' or 'normal', got {self.jitter_dist!r}")
        if self.rate_bps is not None and not self.rate_bps > 0:
            raise ValueError(f"rate_bps must be positive, got {self.rate_bps!r}")

    def with_(self, **changes: object) -> ImpairmentConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Verdict:
    """What to do with one datagram: drop it (``reason`` says why) or deliver it at a time."""

    deliver_at: float | None
    reason: DropReason | None = None
    reordered: bool = False

    @property
    def dropped(self) -> bool:
        return self.deliver_at is None


@dataclass
class ImpairmentStats:
    """Counts since creation (or the last :meth:`Impairment.reset_stats`)."""

    offered: int = 0
    delivered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    reordered: int = 0
    bytes_offered: int = 0
    delay_buckets: tuple[float, ...] = DEFAULT_DELAY_BUCKETS
    delay_histogram: list[int] = field(default_factory=list)
    delay_min: float | None = None
    delay_max: float | None = None
    delay_sum: float = 0.0

    def __post_init__(self) -> None:
        if not self.delay_histogram:
            self.delay_histogram = [0] * (len(self.delay_buckets) + 1)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def loss_ratio(self) -> float:
        return self.dropped_total / self.offered if self.offered else 0.0

    @property
    def delay_mean(self) -> float | None:
        return self.delay_sum / self.delivered if self.delivered else None

    def add_delay(self, delay: float) -> None:
        index = len(self.delay_buckets)
        for i, edge in enumerate(self.delay_buckets):
            if delay <= edge:
                index = i
                break
        self.delay_histogram[index] += 1
        self.delay_sum += delay
        self.delay_min = delay if self.delay_min is None else min(self.delay_min, delay)
        self.delay_max = delay if self.delay_max is None else max(self.delay_max, delay)


class Impairment:
    """One direction's impairment decisions (sans-I/O, deterministic for a seed)."""

    def __init__(self, config: ImpairmentConfig | None = None, *, seed: int = 0,
                 delay_buckets: Sequence[float] = DEFAULT_DELAY_BUCKETS) -> None:
        self._config = config or ImpairmentConfig()
        self._rng = random.Random(seed)
        self._buckets = tuple(delay_buckets)
        if list(self._buckets) != sorted(self._buckets):
            raise ValueError("delay_buckets must be sorted")
        self.stats = ImpairmentStats(delay_buckets=self._buckets)
        self._burst_left = 0
        self._gilbert_bad = False
        self._link_free_at = 0.0
        # per flow: the latest delivery time handed out (reordering detection and prevention)
        self._last_delivery: OrderedDict[Hashable, float] = OrderedDict()

    @property
    def config(self) -> ImpairmentConfig:
        return self._config

    def configure(self, config: ImpairmentConfig) -> None:
        """Switch to a new configuration; takes effect from the next datagram."""
        if not isinstance(config, ImpairmentConfig):
            raise TypeError(f"expected ImpairmentConfig, got {type(config).__name__}")
        if config.gilbert is None:
            self._gilbert_bad = False
        if config.burst == 1 or config.loss == 0.0:
            self._burst_left = 0
        self._config = config
        logger.debug("impairment now %s", config)

    def reset_stats(self) -> None:
        self.stats = ImpairmentStats(delay_buckets=self._buckets)

    def decide(self, now: float, size: int = 0, flow: Hashable = None) -> Verdict:
        """The verdict for one datagram of ``size`` bytes arriving at ``now``."""
        cfg = self._config
        st = self.stats
        st.offered += 1
        st.bytes_offered += size
        if cfg.blackhole:
            return self._drop("blackhole")
        reason = self._loss(cfg)
        if reason is not None:
            return self._drop(reason)
        start = now
        if cfg.rate_bps is not None:
            begin = max(now, self._link_free_at)
            if begin - now > cfg.queue_limit:
                return self._drop("queue")
            self._link_free_at = begin + size * 8.0 / cfg.rate_bps
            start = self._link_free_at
        # the delay is summed on its own (not deliver_at - now) so that the histogram sees
        # exactly the configured values
        delay = max(0.0, (start - now) + cfg.delay + self._jitter(cfg))
        deliver_at = now + delay
        last = self._last_delivery.get(flow)
        reordered = False
        if last is not None and deliver_at < last:
            if cfg.reorder:
                reordered = True
                st.reordered += 1
            else:
                deliver_at, delay = last, last - now
        self._remember(flow, max(deliver_at, last) if last is not None else deliver_at)
        st.delivered += 1
        st.add_delay(delay)
        return Verdict(deliver_at, None, reordered)

    # ------------------------------------------------------------------ internals

    def _drop(self, reason: DropReason) -> Verdict:
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + 1
        return Verdict(None, reason)

    def _loss(self, cfg: ImpairmentConfig) -> DropReason | None:
        rng = self._rng
        if cfg.gilbert is not None:
            g = cfg.gilbert
            if self._gilbert_bad:
                if rng.random() < g.p_bad_to_good:
                    self._gilbert_bad = False
            elif rng.random() < g.p_good_to_bad:
                self._gilbert_bad = True
            chance = g.loss_bad if self._gilbert_bad else g.loss_good
            if chance and rng.random() < chance:
                return "burst" if self._gilbert_bad else "loss"
            return None
        if self._burst_left > 0:
            self._burst_left -= 1
            return "burst"
        if cfg.loss and rng.random() < cfg.loss:
            self._burst_left = cfg.burst - 1
            return "loss"
        return None

    def _jitter(self, cfg: ImpairmentConfig) -> float:
        if not cfg.jitter:
            return 0.0
        if cfg.jitter_dist == "uniform":
            return self._rng.uniform(-cfg.jitter, cfg.jitter)
        value = self._rng.gauss(0.0, cfg.jitter / 2.0)
        return min(cfg.jitter, max(-cfg.jitter, value))

    def _remember(self, flow: Hashable, deliver_at: float) -> None:
        self._last_delivery[flow] = deliver_at
        self._last_delivery.move_to_end(flow)
        if len(self._last_delivery) > MAX_FLOWS:
            self._last_delivery.popitem(last=False)


def _check_probability(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in 0..1, got {value!r}")
