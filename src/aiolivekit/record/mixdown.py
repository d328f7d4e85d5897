"""Sans-I/O mix of decoded audio tracks on the recording's clock (``--mix``).

Each track's frames are placed where they arrived: the first frame of a run ends at its
arrival time, later ones follow it sample by sample; a track that drifts more than
``RESYNC`` seconds from its arrival times (it paused: mute, DTX, loss) is placed again.
Samples are summed in int32 and clipped to int16. :meth:`Mixdown.take` hands out what is
older than ``latency`` seconds (frames arriving later than that lose their early part);
:meth:`Mixdown.finish` the rest, silence included, up to the end of the recording.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

__all__ = ["Mixdown"]


class Mixdown:
    """Mono mix at ``rate`` Hz; time in seconds on any monotonic clock."""

    RESYNC = 0.1

    def __init__(self, start: float, rate: int = 48000, latency: float = 0.5) -> None:
        self.rate = rate
        self.start = start
        self.latency = latency
        self._buffer = np.zeros(0, dtype=np.int32)
        self._base = 0  # sample index of _buffer[0] (everything before went out)
        self._cursors: dict[Hashable, int] = {}
        self.late_samples = 0  # samples that arrived after their place went out

    def _position(self, now: float) -> int:
        return max(0, round((now - self.start) * self.rate))

    def add(self, key: Hashable, samples: np.ndarray, now: float) -> None:
        """Mono int16 ``samples`` of track ``key`` that arrived at ``now``."""
        n = len(samples)
        if n == 0:
            return
        expected = max(0, self._position(now) - n)
        cursor = self._cursors.get(key)
        if cursor is None or abs(cursor - expected) > self.RESYNC * self.rate:
            cursor = expected
        self._cursors[key] = cursor + n
        data = samples.astype(np.int32)
        if cursor < self._base:
            skip = min(n, self._base - cursor)
            self.late_samples += skip
            data, cursor = data[skip:], cursor + skip
            if len(data) == 0:
                return
        end = cursor - self._base + len(data)
        if end > len(self._buffer):
            self._buffer = np.concatenate(
                [self._buffer, np.zeros(end - len(self._buffer), dtype=np.int32)])
        self._buffer[cursor - self._base:end] += data

    def remove(self, key: Hashable) -> None:
        """Track ``key`` ended (a later track with the same key is placed anew)."""
        self._cursors.pop(key, None)

    def _out(self, upto: int) -> np.ndarray:
        count = max(0, upto - self._base)
        if count > len(self._buffer):
            self._buffer = np.concatenate(
                [self._buffer, np.zeros(count - len(self._buffer), dtype=np.int32)])
        chunk, self._buffer = self._buffer[:count], self._buffer[count:]
        self._base += count
        return np.clip(chunk, -32768, 32767).astype(np.int16)

    def take(self, now: float) -> np.ndarray:
        """The mixed samples older than ``latency`` not handed out yet (int16)."""
        return self._out(self._position(now - self.latency))

    def finish(self, now: float) -> np.ndarray:
        """Everything up to ``now`` (silence where nothing was added; later samples are
        dropped): the mix ends with the recording."""
        out = self._out(self._position(now))
        self._buffer = self._buffer[:0]
        return out

    @property
    def samples_out(self) -> int:
        return self._base
