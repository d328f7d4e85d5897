"""Which missing audio packets to NACK, and when (RFC 4585 generic NACK), sans-I/O.

:class:`AudioNackScheduler` is told every received sequence number (``received``); a
jump forward marks the numbers in between as missing. ``poll(now, deadline)`` returns
the sequence numbers to request now: a missing packet is requested when a retransmission
sent now can still arrive before its playout deadline (``deadline(seq)``, the playout
buffer's answer; None: the buffer has a copy), at most ``max_retries``
times, ``retry_interval`` apart at least (and at least 1.5 round trips, so a second
request is not sent before the first could be answered). A packet whose deadline is too
close, or past, is given up. The round trip is estimated from requests to arrivals: the
upper part (90th percentile) of recent samples (an original that was only reordered arrives early and
gives a low sample; the retransmissions give the real round trip).

Nothing here reads a clock or sends anything; the shell (``media.jitter``) sends the
RTCP packet and calls :meth:`poll` at its pull times.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AudioNackScheduler", "NackStats"]

logger = logging.getLogger(__name__)


@dataclass
class NackStats:
    """Counters (WebRTC's ``nackCount`` is ``nack_requests``)."""

    gaps: int = 0  # jumps forward that left packets missing
    nack_requests: int = 0  # polls that returned something (one RTCP NACK each)
    nacked_packets: int = 0  # sequence numbers requested, retries included
    recovered: int = 0  # requested, then received
    given_up: int = 0  # missing, but no request could arrive in time any more
    rtt: float = 0.0  # current round-trip estimate (s)


@dataclass(slots=True)
class _Missing:
    detected: float
    sent: int = 0  # requests sent
    last_sent: float = 0.0


class AudioNackScheduler:
    """The NACK decision for one received audio stream (module doc)."""

    def __init__(self, *, max_retries: int = 3, retry_interval: float = 0.01,
                 initial_rtt: float = 0.02, min_rtt: float = 0.002, max_rtt: float = 0.3,
                 margin: float = 0.002, max_gap: int = 50, max_missing: int = 100,
                 samples: int = 16, probe_every: int = 8) -> None:
        if max_retries < 1 or retry_interval < 0 or margin < 0:
            raise ValueError("need max_retries >= 1, retry_interval >= 0, margin >= 0")
        if not 0 < min_rtt <= initial_rtt <= max_rtt:
            raise ValueError("need 0 < min_rtt <= initial_rtt <= max_rtt")
        if max_gap < 1 or max_missing < 1 or samples < 1 or probe_every < 1:
            raise ValueError("max_gap, max_missing, samples and probe_every must be >= 1")
        # every probe_every-th packet the round-trip estimate finds too late is requested
        # anyway: its answer measures the round trip (an estimate too high, the initial
        # guess included, would otherwise never be corrected: no request, no sample)
        self.probe_every = probe_every
        self._too_late = 0
        self.max_retries = max_retries
        self.retry_interval = retry_interval
        self.min_rtt, self.max_rtt = min_rtt, max_rtt
        self.margin = margin
        self.max_gap = max_gap  # a longer jump is an outage or a new stream: not NACKed
        self.max_missing = max_missing
        self._initial_rtt = initial_rtt
        self._samples: deque[float] = deque(maxlen=samples)
        self._missing: dict[int, _Missing] = {}  # unwrapped sequence number -> state
        self._highest: int | None = None  # unwrapped
        self.stats = NackStats(rtt=initial_rtt)

    # ------------------------------------------------------------ input

    @property
    def rtt(self) -> float:
        """The round trip a request takes to be answered (s): the 90th percentile of the
        recent request-to-arrival samples (most samples may be reordered originals,
        which arrive early), the initial guess before any."""
        if not self._samples:
            return self._initial_rtt
        ordered = sorted(self._samples)
        value = ordered[min(len(ordered) - 1, (len(ordered) * 9) // 10)]
        return min(self.max_rtt, max(self.min_rtt, value))

    @property
    def missing(self) -> list[int]:
        """The sequence numbers (16-bit) currently missing, oldest first."""
        return [s & 0xFFFF for s in sorted(self._missing)]

    def _unwrap(self, seq: int) -> int:
        if self._highest is None:
            return seq + (1 << 16)
        delta = (seq - self._highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        return self._highest + delta

    def received(self, seq: int, now: float) -> bool:
        """Note one received packet (a retransmission too); True when it was requested."""
        if not 0 <= seq <= 0xFFFF:
            raise ValueError("sequence number out of range")
        ext = self._unwrap(seq)
        entry = self._missing.pop(ext, None)
        if self._highest is None or ext > self._highest:
            if self._highest is not None:
                gap = ext - self._highest - 1
                if gap > self.max_gap:
                    self._missing.clear()  # an outage or a new stream
                elif gap:
                    self.stats.gaps += 1
                    for s in range(self._highest + 1, ext):
                        self._missing.setdefault(s, _Missing(now))
                    while len(self._missing) > self.max_missing:
                        del self._missing[min(self._missing)]
                        self.stats.given_up += 1
            self._highest = ext
        if entry is None or not entry.sent:
            return False
        self.stats.recovered += 1
        self._samples.append(max(0.0, now - entry.last_sent))
        self.stats.rtt = self.rtt
        return True

    def overdue(self, seq: int, now: float) -> None:
        """The playout buffer waited for ``seq`` (beyond every received one): missing
        now, before a later packet shows the gap."""
        if not 0 <= seq <= 0xFFFF:
            raise ValueError("sequence number out of range")
        ext = self._unwrap(seq)
        if self._highest is None or not 0 < ext - self._highest <= self.max_gap:
            return
        for s in range(self._highest + 1, ext + 1):
            self._missing.setdefault(s, _Missing(now))

    def reset(self) -> None:
        """Forget the stream (a new one starts at the next packet)."""
        self._missing.clear()
        self._highest = None

    # ------------------------------------------------------------ decision

    def poll(self, now: float, deadline: Callable[[int], float | None]) -> list[int]:
        """The sequence numbers (16-bit, ascending) to request now. ``deadline(seq)``:
        when the packet ``seq`` (16-bit) is played (a past time once its slot is
        played without it), None when it is no longer wanted (the buffer has a copy)."""
        if not self._missing:
            return []
        rtt = self.rtt
        interval = max(self.retry_interval, 1.5 * rtt)
        out: list[int] = []
        for ext in sorted(self._missing):
            entry = self._missing[ext]
            if entry.sent and now - entry.last_sent < interval:
                continue
            due = deadline(ext & 0xFFFF)
            late = due is not None and now + rtt + self.margin > due
            if late and not entry.sent and due is not None and due > now:
                self._too_late += 1
                late = self._too_late % self.probe_every != 0  # else: a probe
            if due is None or entry.sent >= self.max_retries or late:
                del self._missing[ext]
                if due is not None:  # None: the buffer has it (a RED copy) or needs none
                    self.stats.given_up += 1
                continue
            entry.sent += 1
            entry.last_sent = now
            out.append(ext & 0xFFFF)
        if out:
            self.stats.nack_requests += 1
            self.stats.nacked_packets += len(out)
        return out

    def next_time(self) -> float | None:
        """The earliest time a retry could be due (None: nothing requested is waiting)."""
        sent = [e.last_sent for e in self._missing.values() if e.sent]
        if not sent:
            return None
        return min(sent) + max(self.retry_interval, 1.5 * self.rtt)
