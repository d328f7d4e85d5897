"""The jitter buffer of received video: aiortc's, but a lost packet stops video for
at most :data:`MAX_GAP_WAIT`.

aiortc's video ``JitterBuffer`` hands out a frame only when every packet before it is
there; a packet that never comes (lost upstream, not recovered by NACK) holds everything
until 512 later packets have arrived: at the rates of a simulcast layer, 5-15 s of
frozen video. :class:`VideoJitterBuffer` gives such a gap up once it has held the buffer
for :data:`MAX_GAP_WAIT` (time for NACK to recover it): the incomplete frame is dropped,
the next whole frame goes on, and aiortc's receiver sends a PLI, so that a key frame
repairs the picture.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame

from .._compat import aiortc as aiortc_compat

__all__ = ["MAX_GAP_WAIT", "VideoJitterBuffer", "install_video_jitter_buffer"]

logger = logging.getLogger(__name__)

MAX_GAP_WAIT = 0.5  # seconds a missing packet may hold later frames
CAPACITY = 512  # packets, as aiortc's video buffer


class VideoJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer with a time limit on a gap (``clock``: seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(capacity=CAPACITY, is_video=True)
        self._clock = clock
        self._gap_since: float | None = None
        self.gaps_skipped = 0

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if frame is not None or self._origin is None:
            self._gap_since = None
            return pli, frame
        newest = (packet.sequence_number - self._origin) & 0xFFFF
        if newest >= CAPACITY or self._first_missing(newest) is None:
            self._gap_since = None  # nothing missing: a frame is still arriving
            return pli, frame
        now = self._clock()
        if self._gap_since is None:
            self._gap_since = now
            return pli, frame
        if now - self._gap_since < MAX_GAP_WAIT:
            return pli, frame
        self._gap_since = None
        if self._skip_gap(newest):
            self.gaps_skipped += 1
            logger.debug("video: gave up a gap after %.1f s", MAX_GAP_WAIT)
            frame = self._remove_frame(packet.sequence_number)
            return True, frame
        return pli, frame

    def _slot(self, count: int) -> Any:
        assert self._origin is not None
        return self._packets[(self._origin + count) % CAPACITY]

    def _first_missing(self, newest: int) -> int | None:
        """The first missing packet between the head and the newest, if any."""
        for count in range(newest):
            if self._slot(count) is None:
                return count
        return None

    def _skip_gap(self, newest: int) -> bool:
        """Drop everything up to the first gap, and the frame of the first packet after
        it (it may lack its start); False when nothing whole can follow yet."""
        missing = self._first_missing(newest)
        if missing is None:
            return False
        first = next((c for c in range(missing + 1, newest + 1) if self._slot(c) is not None),
                     None)
        if first is None:
            return False
        timestamp = self._slot(first).timestamp
        drop = first
        while drop <= newest:
            waiting = self._slot(drop)
            if waiting is not None and waiting.timestamp != timestamp:
                break
            drop += 1
        if drop > newest:
            return False  # only that frame waits: keep waiting for the next one
        self.remove(drop)
        return True


def install_video_jitter_buffer(receiver: Any) -> bool:
    """Give a video receiver a :class:`VideoJitterBuffer` (False: aiortc's is kept)."""
    return aiortc_compat.replace_jitter_buffer(receiver, VideoJitterBuffer())
