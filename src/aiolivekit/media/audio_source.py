"""``AudioSource``: a real-time pacing buffer between the application and local tracks.

The source owns a playout clock. While it holds audio, one task ticks every 20 ms,
takes 20 ms of samples and hands them to the sinks (the local tracks publishing it);
with no sink the samples are simply played out into the void, as in ``livekit.rtc``.
``capture_frame`` appends samples and then blocks while more than ``queue_size_ms`` is
buffered: this back-pressure is what paces producers that generate audio faster than
real time. The ticker stops after a few idle ticks and restarts on the next capture, so
an idle source costs nothing. Sinks receive ``(pcm_bytes, pts)`` where ``pts`` counts
48 kHz ticks of the source clock (it keeps advancing across idle gaps).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .._tasks import cancel_and_wait
from .audio_frame import AudioFrame

__all__ = ["AudioSource"]

logger = logging.getLogger(__name__)

TICK = 0.02  # seconds of audio handed to sinks per tick
_IDLE_TICKS = 5  # the ticker stops after this many ticks without audio
_MAX_LATE = 0.2  # resynchronise the clock after a stall longer than this

AudioSink = Callable[[bytes, int], None]


class AudioSource:
    """Push PCM audio for publication; see the module docstring for the pacing model."""

    def __init__(
        self,
        sample_rate: int,
        num_channels: int,
        queue_size_ms: int = 1000,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if sample_rate < 1000:
            raise ValueError("sample_rate must be >= 1000 Hz")
        if num_channels not in (1, 2):
            raise ValueError("num_channels must be 1 or 2")
        if queue_size_ms < 0:
            raise ValueError("queue_size_ms must be >= 0")
        self._sample_rate = int(sample_rate)
        self._num_channels = int(num_channels)
        self._queue_size_ms = int(queue_size_ms)
        self._loop = loop
        self._bytes_per_sample = 2 * self._num_channels
        self._chunk_samples = max(1, round(self._sample_rate / 50))
        self._chunk_bytes = self._chunk_samples * self._bytes_per_sample
        self._buf = bytearray()
        self._sinks: list[AudioSink] = []
        self._task: asyncio.Task[None] | None = None
        self._progress: asyncio.Event | None = None
        self._epoch: float | None = None
        self._tick = 0
        self._closed = False

    # ------------------------------------------------------------------ properties

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def num_channels(self) -> int:
        return self._num_channels

    @property
    def queued_duration(self) -> float:
        """Seconds of audio buffered and not yet played out."""
        return len(self._buf) / self._bytes_per_sample / self._sample_rate

    # ------------------------------------------------------------------ sinks (tracks)

    def _add_sink(self, sink: AudioSink) -> None:
        if sink not in self._sinks:
            self._sinks.append(sink)

    def _remove_sink(self, sink: AudioSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    # ------------------------------------------------------------------ producer API

    def clear_queue(self) -> None:
        """Drop all buffered audio and release ``wait_for_playout`` / ``capture_frame``."""
        self._buf.clear()
        self._notify()

    async def capture_frame(self, frame: AudioFrame) -> None:
        """Queue ``frame``; blocks while more than ``queue_size_ms`` of audio is buffered."""
        if self._closed or frame.samples_per_channel == 0:
            return
        if frame.sample_rate != self._sample_rate or frame.num_channels != self._num_channels:
            raise ValueError(
                f"frame is {frame.sample_rate} Hz/{frame.num_channels} ch, source is "
                f"{self._sample_rate} Hz/{self._num_channels} ch"
            )
        self._buf += frame.data.cast("B")
        self._ensure_running()
        limit = self._queue_size_ms * self._sample_rate // 1000 * self._bytes_per_sample
        while len(self._buf) > limit and not self._closed:
            await self._wait_progress()

    async def wait_for_playout(self) -> None:
        """Return once everything captured so far has been played out (or cleared)."""
        while self._buf and not self._closed:
            self._ensure_running()
            await self._wait_progress()

    async def aclose(self) -> None:
        """Stop the clock and drop buffered audio; later captures are ignored."""
        self._closed = True
        self._buf.clear()
        self._notify()
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._sinks.clear()

    # ------------------------------------------------------------------ internals

    async def _wait_progress(self) -> None:
        if self._progress is None:
            self._progress = asyncio.Event()
        self._progress.clear()
        await self._progress.wait()

    def _notify(self) -> None:
        if self._progress is not None:
            self._progress.set()

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            loop = self._loop or asyncio.get_running_loop()
            self._loop = loop
            self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._epoch is None:
            self._epoch = now
        # keep the clock monotonic across idle gaps
        self._tick = max(self._tick, int((now - self._epoch) / TICK))
        deadline = now
        idle = 0
        partial = False
        chunk_bytes = self._chunk_bytes
        pts_step = 960  # 20 ms at 48 kHz
        try:
            while not self._closed:
                avail = len(self._buf)
                if avail >= chunk_bytes or (avail and partial):
                    data = bytes(self._buf[:chunk_bytes])
                    del self._buf[:chunk_bytes]
                    if len(data) < chunk_bytes:
                        data += bytes(chunk_bytes - len(data))
                    partial = False
                    idle = 0
                    pts = self._tick * pts_step
                    for sink in tuple(self._sinks):
                        try:
                            sink(data, pts)
                        except Exception:  # a broken sink must not stop the clock
                            logger.exception("audio sink failed")
                    self._notify()
                elif avail:
                    partial = True  # give the producer one tick to complete the chunk
                else:
                    idle += 1
                    if idle >= _IDLE_TICKS:
                        break
                self._tick += 1
                deadline += TICK
                delay = deadline - loop.time()
                if delay < -_MAX_LATE:
                    skipped = int(-delay / TICK)
                    self._tick += skipped
                    deadline += skipped * TICK
                    delay = deadline - loop.time()
                await asyncio.sleep(max(0, delay))
        finally:
            if self._task is asyncio.current_task():
                self._task = None
            self._notify()
