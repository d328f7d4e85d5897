"""A bench-side playout buffer: the point where a receiving application can play audio out.

aiolivekit's ``AudioStream`` yields each decoded packet the moment it arrives (its jitter
buffer holds nothing). The official SDK's ``AudioStream`` yields 10 ms frames pulled
from libwebrtc's NetEq, which first holds packets to an adaptive target delay. To compare
the two at the same point, the benchmark worker puts this buffer after our stream. It is
a fixed-delay buffer releasing one ``chunk`` (10 ms) of PCM per tick, in arrival order:

* every pushed frame has a stream position (the samples pushed before it); the earliest
  ``arrival - position`` among the frames of the last ``window`` (1 s) is the stream's
  *anchor*, the timeline of the fastest recent packet. (Our frames carry no RTP
  timestamp, so a lost packet shifts the positions after it by 20 ms: an all-time
  minimum would then schedule every later chunk 20 ms earlier and drain the buffer;
  the window lets the anchor follow within a second, the clock pausing for the gap.)
* the chunk starting at position ``p`` is due at ``anchor + p + target + lag``: a packet
  that arrives no later than ``target`` after the fastest one is released exactly
  ``target`` after the anchor says it could have arrived. Ticks are 10 ms apart; when a
  later packet improves the anchor (the first one arrived late), the next tick comes
  sooner, once;
* a tick with less than one chunk queued releases silence (an ``underrun``) and the
  schedule falls one chunk behind (``lag``); while behind, a tick that finds two or more
  chunks queued drops the oldest one (``dropped_samples``) to get back on schedule (NetEq
  would stretch or compress time instead; on an idle loopback neither happens).

The mean hold per released sample (``mean_hold``, arrival -> release) is the quantity
libwebrtc reports as ``jitterBufferDelay / jitterBufferEmittedCount``: for 20 ms packets
it is about ``target`` + 5 ms (a packet's second 10 ms chunk waits one more tick).

Sans-I/O: time is passed in (``push(pcm, now)``, ``pop_due(now)``); the worker owns the
clock. Used by ``bench/sdk_worker.py`` (modes ``latency`` and ``ttff``) for aiolivekit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["Chunk", "PlayoutBuffer"]

@dataclass
class Chunk:
    """One released chunk: ``due`` is its scheduled tick, ``arrived`` when its first
    sample arrived (None for silence); ``silence`` marks an underrun."""

    due: float
    pcm: bytes
    silence: bool
    arrived: float | None = None


class PlayoutBuffer:
    """Fixed-delay playout buffer releasing ``chunk_ms`` of 16-bit PCM per tick."""

    def __init__(
        self, target: float, rate: int = 48000, channels: int = 1, chunk_ms: int = 10,
        window: float = 1.0,
    ) -> None:
        if target < 0:
            raise ValueError("target must be >= 0 seconds")
        if window <= 0:
            raise ValueError("window must be > 0 seconds")
        if rate <= 0 or channels not in (1, 2) or chunk_ms <= 0:
            raise ValueError("bad rate, channels or chunk_ms")
        self.target = float(target)
        self.rate = rate
        self.period = chunk_ms / 1000.0
        self.frame_bytes = channels * 2
        self.chunk_bytes = rate * chunk_ms // 1000 * self.frame_bytes
        self._pcm = bytearray()
        self._segments: deque[list[float]] = deque()  # [arrival, bytes left] per frame
        self._pushed = 0  # samples pushed (stream position of the next frame)
        self._pos = 0  # stream position of the next sample to release (or drop)
        self._anchor: float | None = None
        self.window = float(window)
        # (arrival, arrival - position) of recent frames, candidates increasing: the first
        # is the minimum over the window (a monotonic queue)
        self._recent: deque[tuple[float, float]] = deque()
        self._lag = 0  # chunks of silence released and not yet made up by a drop
        self._hold_sum = 0.0  # seconds x samples released
        self.underruns = 0
        self.dropped_samples = 0
        self.released = 0  # chunks, silence included
        self.released_samples = 0  # received samples released (no silence)

    def push(self, pcm: bytes, now: float) -> None:
        """Queue decoded PCM that arrived at ``now`` (the first push sets the first tick at
        ``now + target``)."""
        if len(pcm) % self.frame_bytes:
            raise ValueError("PCM must be whole 16-bit sample frames")
        if not pcm:
            return
        cand = now - self._pushed / self.rate
        while self._recent and self._recent[-1][1] >= cand:
            self._recent.pop()
        self._recent.append((now, cand))
        while self._recent[0][0] < now - self.window:
            self._recent.popleft()
        self._anchor = self._recent[0][1]
        self._pcm += pcm
        self._segments.append([now, float(len(pcm))])
        self._pushed += len(pcm) // self.frame_bytes

    def next_due(self) -> float | None:
        """Time of the next tick, or None before the first push."""
        if self._anchor is None:
            return None
        return self._anchor + self._pos / self.rate + self.target + self._lag * self.period

    def queued_seconds(self) -> float:
        return len(self._pcm) / self.frame_bytes / self.rate

    @property
    def mean_hold(self) -> float:
        """Mean seconds from a sample's arrival to its release (released samples only)."""
        return self._hold_sum / self.released_samples if self.released_samples else 0.0

    def _consume(self, nbytes: int, now: float | None) -> bytes:
        """Take ``nbytes`` from the queue; with ``now``, count each sample's hold."""
        out = bytes(self._pcm[:nbytes])
        del self._pcm[:nbytes]
        left = nbytes
        while left > 0 and self._segments:
            seg = self._segments[0]
            take = min(left, seg[1])
            if now is not None:
                self._hold_sum += (now - seg[0]) * take / self.frame_bytes
            seg[1] -= take
            left -= int(take)
            if seg[1] <= 0:
                self._segments.popleft()
        self._pos += nbytes // self.frame_bytes
        return out

    def pop_due(self, now: float) -> list[Chunk]:
        """Every chunk whose tick is at or before ``now``, oldest first."""
        out: list[Chunk] = []
        while True:
            due = self.next_due()
            if due is None or due > now:
                return out
            if self._lag and len(self._pcm) >= 2 * self.chunk_bytes:
                self._consume(self.chunk_bytes, None)
                self.dropped_samples += self.chunk_bytes // self.frame_bytes
                self._lag -= 1
            if len(self._pcm) >= self.chunk_bytes:
                arrived = self._segments[0][0]
                out.append(Chunk(due, self._consume(self.chunk_bytes, now), False, arrived))
                self.released_samples += self.chunk_bytes // self.frame_bytes
            else:
                self.underruns += 1
                self._lag += 1
                out.append(Chunk(due, bytes(self.chunk_bytes), True))
            self.released += 1
