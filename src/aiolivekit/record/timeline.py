"""Sans-I/O timing of a recording: RTP timestamps -> presentation timestamps of the files.

* :class:`RtpUnwrapper`: 32-bit RTP timestamps -> a monotonic 64-bit count;
* :class:`AudioTimeline`: Opus packets (48 kHz) -> ``(pts, packet)`` in order; a small
  reorder window, duplicates (RED) dropped, gaps (loss, DTX, mute) filled with TOC-only
  packets so a file's timeline keeps the sender's clock;
* :class:`VideoTimeline`: frames (90 kHz) -> pts; starts at a key frame and waits for
  one again after a discontinuity (new SSRC, dropped frames), asking for it at most every
  ``KEYFRAME_INTERVAL`` seconds;
* :class:`RecordingClock`: when the recording started (its first media) and when it ends.

Every file starts at pts 0 with its track's first frame; a new SSRC (the sender's stream
restarted) continues the file's timeline from the wall-clock time that passed.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from .bitstream import opus_samples, opus_silence

__all__ = [
    "AUDIO_RATE",
    "VIDEO_RATE",
    "AudioTimeline",
    "RecordingClock",
    "RtpUnwrapper",
    "TimedFrame",
    "VideoTimeline",
]

AUDIO_RATE = 48000
VIDEO_RATE = 90000


class RtpUnwrapper:
    """32-bit RTP timestamps -> a 64-bit count that keeps going across wraps."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._ext = 0

    def unwrap(self, ts: int) -> int:
        ts &= 0xFFFFFFFF
        if self._last is None:
            self._last = self._ext = ts
            return ts
        delta = (ts - self._last) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000  # older than the newest one seen
        ext = self._ext + delta
        if delta > 0:
            self._last, self._ext = ts, ext
        return ext


@dataclass(frozen=True)
class TimedFrame:
    pts: int  # in the track's clock (48 kHz / 90 kHz), from 0
    duration: int  # audio: samples; video: 0 (unknown until the next frame)
    data: bytes
    keyframe: bool = True


class _Anchor:
    """Where a stream (SSRC) sits on the file's timeline."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.ssrc: int | None = None
        self.unwrap = RtpUnwrapper()
        self.offset = 0  # pts = unwrapped timestamp - offset
        self.end_pts = 0  # end of the last frame emitted (file timeline)
        self.end_arrival: float | None = None

    def start(self, ssrc: int, ts: int, arrival: float, first: bool) -> None:
        """A new stream: its first timestamp lands where wall-clock time says."""
        self.ssrc = ssrc
        self.unwrap = RtpUnwrapper()
        ext = self.unwrap.unwrap(ts)
        if first or self.end_arrival is None:
            at = 0
        else:
            at = self.end_pts + max(0, round((arrival - self.end_arrival) * self.rate))
        self.offset = ext - at


class AudioTimeline:
    """Opus packets of one track in, ``TimedFrame`` s of its file out."""

    WINDOW = 3  # packets held back to put late ones in order (60 ms at 20 ms packets)
    MAX_GAP = AUDIO_RATE * 3600  # a jump further than this is a new timeline

    def __init__(self, channels: int = 1) -> None:
        self.channels = channels
        self._anchor = _Anchor(AUDIO_RATE)
        self._held: list[tuple[int, int, bytes]] = []  # (pts, order, packet)
        self._order = 0
        self._started = False
        self.written_end = 0  # pts after the last packet out
        self.packets = 0
        self.filled = 0  # silence packets inserted
        self.dropped = 0  # late, duplicate or malformed packets

    def push(self, data: bytes, timestamp: int, ssrc: int, arrival: float) -> list[TimedFrame]:
        """One Opus packet; returns the packets now ready, in order, gaps filled."""
        try:
            opus_samples(data)
        except ValueError:
            self.dropped += 1
            return []
        anchor = self._anchor
        if ssrc != anchor.ssrc:
            out = self.flush() if self._started else []
            anchor.start(ssrc, timestamp, arrival, not self._started)
            self._started = True
        else:
            out = []
        pts = anchor.unwrap.unwrap(timestamp) - anchor.offset
        if pts < self.written_end or pts - self.written_end > self.MAX_GAP:
            self.dropped += 1
            return out
        heapq.heappush(self._held, (pts, self._order, bytes(data)))
        self._order += 1
        anchor.end_arrival = arrival
        while len(self._held) > self.WINDOW:
            out.extend(self._release(*heapq.heappop(self._held)[::2]))
        return out

    def flush(self) -> list[TimedFrame]:
        """Everything held (at the end of the track, or before a new stream)."""
        out: list[TimedFrame] = []
        while self._held:
            out.extend(self._release(*heapq.heappop(self._held)[::2]))
        return out

    def _release(self, pts: int, data: bytes) -> list[TimedFrame]:
        if pts < self.written_end:
            self.dropped += 1  # a duplicate (RED block already written) or too late
            return []
        out = self._fill(pts)
        samples = opus_samples(data)
        out.append(TimedFrame(pts, samples, data))
        self.packets += 1
        self.written_end = pts + samples
        self._anchor.end_pts = self.written_end
        return out

    def _fill(self, pts: int) -> list[TimedFrame]:
        out: list[TimedFrame] = []
        at = self.written_end
        while pts - at >= 120:
            size = next(s for s in (960, 480, 240, 120) if pts - at >= s)
            out.append(TimedFrame(at, size, opus_silence(size, self.channels)))
            at += size
            self.filled += 1
        return out


class VideoTimeline:
    """Video frames of one track in, ``TimedFrame`` s of its file out (90 kHz)."""

    KEYFRAME_INTERVAL = 0.5  # s between key-frame requests while waiting for one

    def __init__(self) -> None:
        self._anchor = _Anchor(VIDEO_RATE)
        self._started = False
        self._need_key = True
        self._last_pts: int | None = None
        self._asked: float | None = None
        self.frames = 0
        self.skipped = 0  # frames not written while waiting for a key frame
        self.dropped = 0  # frames whose timestamp went backwards

    @property
    def waiting_for_keyframe(self) -> bool:
        return self._need_key

    def push(self, data: bytes, timestamp: int, ssrc: int, arrival: float, keyframe: bool,
             discontinuity: bool = False) -> TimedFrame | None:
        """One frame; None when it is not written (see :meth:`keyframe_request`)."""
        anchor = self._anchor
        if ssrc != anchor.ssrc or discontinuity:
            self._need_key = True
        if self._need_key and not keyframe:
            self.skipped += 1
            return None
        if ssrc != anchor.ssrc:
            if self._last_pts is not None:
                anchor.end_pts = self._last_pts + 1
            anchor.start(ssrc, timestamp, arrival, not self._started)
            self._started = True
        pts = anchor.unwrap.unwrap(timestamp) - anchor.offset
        if self._last_pts is not None and pts <= self._last_pts:
            self.dropped += 1
            return None
        self._need_key = False
        self._asked = None
        self._last_pts = pts
        anchor.end_arrival = arrival
        anchor.end_pts = pts
        self.frames += 1
        return TimedFrame(pts, 0, data, keyframe)

    def keyframe_request(self, now: float) -> bool:
        """True when a key frame should be asked for now (waiting for one, rate-limited)."""
        if not self._need_key:
            return False
        if self._asked is not None and now - self._asked < self.KEYFRAME_INTERVAL:
            return False
        self._asked = now
        return True

    @property
    def duration_pts(self) -> int:
        return self._last_pts or 0


class RecordingClock:
    """The recording's time zero (its first media) and its end.

    With a ``duration`` the recording ends ``duration`` seconds after its first media;
    when no media arrives within ``duration`` seconds of joining, it ends then (empty).
    """

    def __init__(self, duration: float | None = None) -> None:
        if duration is not None and not duration > 0:
            raise ValueError("duration must be > 0 seconds")
        self.duration = duration
        self.joined_at: float | None = None
        self.started_at: float | None = None

    def joined(self, now: float) -> None:
        if self.joined_at is None:
            self.joined_at = now

    def media(self, now: float) -> bool:
        """Media arrived at ``now``; True if it is the recording's first."""
        if self.started_at is not None:
            return False
        self.started_at = now
        return True

    def elapsed(self, now: float) -> float:
        return 0.0 if self.started_at is None else max(0.0, now - self.started_at)

    def deadline(self) -> float | None:
        """When the recording ends (None: no duration, or not joined yet)."""
        if self.duration is None or self.joined_at is None:
            return None
        if self.started_at is not None and self.started_at < self.joined_at + self.duration:
            return self.started_at + self.duration
        return self.joined_at + self.duration
