"""``AVSynchronizer``: publish audio and video frames in step.

Audio frames go straight to the ``AudioSource`` (whose queue paces them in real time).
Video frames wait in a small queue (``video_queue_size_ms`` worth of frames at
``video_fps``; ``push`` blocks while it is full) and a task hands them to the
``VideoSource`` one every ``1 / video_fps`` seconds. When audio is pushed too, a video
frame whose timestamp is ahead of the audio played out so far waits for it (at most
``_max_delay_tolerance_ms``), and a video frame that is more than that behind is sent at
once, without waiting for its slot, so the two drift apart by no more than the tolerance.

Timestamps are seconds of media time: given to ``push`` or, by default, counted from the
frames pushed (audio: their duration; video: ``1 / video_fps`` each).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from .audio_frame import AudioFrame
from .audio_source import AudioSource
from .video_frame import VideoFrame
from .video_source import VideoSource

__all__ = ["AVSynchronizer"]

logger = logging.getLogger(__name__)


class AVSynchronizer:
    """Pace video frames at ``video_fps`` and keep them in step with pushed audio."""

    def __init__(
        self,
        *,
        audio_source: AudioSource,
        video_source: VideoSource,
        video_fps: float,
        video_queue_size_ms: float = 100,
        _max_delay_tolerance_ms: float = 300,
    ) -> None:
        if video_fps <= 0:
            raise ValueError("video_fps must be > 0")
        if video_queue_size_ms < 0 or _max_delay_tolerance_ms < 0:
            raise ValueError("video_queue_size_ms and _max_delay_tolerance_ms must be >= 0")
        self._audio_source = audio_source
        self._video_source = video_source
        self._video_fps = float(video_fps)
        self._tolerance = _max_delay_tolerance_ms / 1000.0
        size = max(1, round(self._video_fps * video_queue_size_ms / 1000.0))
        self._video_queue: asyncio.Queue[tuple[VideoFrame, float]] = asyncio.Queue(size)
        self._loop = asyncio.get_running_loop()
        self._captures: collections.deque[float] = collections.deque(maxlen=max(2, size * 10))
        self._closed = False
        self._audio_end = 0.0
        self._audio_pushed = False
        self._video_next = 0.0
        self._last_video_time = 0.0
        self._next_slot: float | None = None
        self.reset()
        self._task = self._loop.create_task(self._video_loop())

    # ------------------------------------------------------------------ properties

    @property
    def actual_fps(self) -> float:
        """Video frames per second actually sent, over the last frames."""
        if len(self._captures) < 2:
            return 0.0
        span = self._captures[-1] - self._captures[0]
        return (len(self._captures) - 1) / span if span > 0 else 0.0

    @property
    def last_video_time(self) -> float:
        """Media time (s) of the last video frame sent to the video source."""
        return self._last_video_time

    @property
    def last_audio_time(self) -> float:
        """Media time (s) of the end of the last audio frame pushed."""
        return self._audio_end

    # ------------------------------------------------------------------ API

    async def push(self, frame: VideoFrame | AudioFrame, timestamp: float | None = None) -> None:
        """Send an audio frame now, or queue a video frame for its slot."""
        if self._closed:
            raise RuntimeError("AVSynchronizer is closed")
        if isinstance(frame, AudioFrame):
            await self._audio_source.capture_frame(frame)
            start = self._audio_end if timestamp is None else float(timestamp)
            self._audio_end = start + frame.duration
            self._audio_pushed = True
            return
        if not isinstance(frame, VideoFrame):
            raise TypeError(f"push takes an AudioFrame or a VideoFrame, not "
                            f"{type(frame).__name__}")
        ts = self._video_next if timestamp is None else float(timestamp)
        self._video_next = ts + 1.0 / self._video_fps
        await self._video_queue.put((frame, ts))

    async def clear_queue(self) -> None:
        """Drop the audio and the video frames not yet sent."""
        self._audio_source.clear_queue()
        while True:
            try:
                self._video_queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self._video_queue.task_done()

    async def wait_for_playout(self) -> None:
        """Return once the queued audio has played out and the queued video was sent."""
        await asyncio.gather(self._audio_source.wait_for_playout(), self._video_queue.join())

    def reset(self) -> None:
        """Start media time again at zero (a new clip)."""
        self._audio_end = 0.0
        self._audio_pushed = False
        self._video_next = 0.0
        self._last_video_time = 0.0
        self._next_slot = None
        self._captures.clear()

    async def aclose(self) -> None:
        """Stop the video task; frames still queued are dropped."""
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    # ------------------------------------------------------------------ internals

    def _audio_playhead(self) -> float | None:
        """Media time of the audio played out so far (``None`` without audio)."""
        if not self._audio_pushed:
            return None
        return self._audio_end - self._audio_source.queued_duration

    async def _video_loop(self) -> None:
        interval = 1.0 / self._video_fps
        while True:
            frame, ts = await self._video_queue.get()
            try:
                now = self._loop.time()
                playhead = self._audio_playhead()
                late = playhead is not None and ts < playhead - self._tolerance
                if self._next_slot is not None and not late and self._next_slot > now:
                    await asyncio.sleep(self._next_slot - now)
                playhead = self._audio_playhead()
                if playhead is not None and ts > playhead:
                    await asyncio.sleep(min(ts - playhead, self._tolerance))
                self._video_source.capture_frame(frame, timestamp_us=round(ts * 1_000_000))
                sent = self._loop.time()
                self._last_video_time = ts
                self._captures.append(sent)
                slot = self._next_slot if self._next_slot is not None else sent
                # the next slot follows the schedule, but never lags more than a frame
                self._next_slot = max(slot + interval, sent)
            finally:
                self._video_queue.task_done()
