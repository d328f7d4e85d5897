"""``AudioSource``: a real-time pacing buffer between the application and local tracks.

The source owns a playout clock: chunk ``k`` (20 ms of samples) may be played out from
``epoch + k * 20 ms`` (minus 10 ms of tolerance) on, and is then handed to the sinks (the
local tracks publishing it); with no sink the samples are simply played out into the
void, as in ``livekit.rtc``. A producer that keeps pace with real time gets each chunk
played out (encoded and sent) from inside its own ``capture_frame`` call: no task, no
queue hop, no added latency. Audio that is not due yet (a producer ahead of real time)
or a partial chunk waits for the loop's shared :mod:`.playout_clock`, which serves every
source on one timer. Late audio is never held back: after a stall the producer may catch
up at once, by at most 250 ms (the schedule lags real time by no more than that).
``capture_frame`` appends samples and then blocks while more than ``queue_size_ms`` is
buffered: this back-pressure is what paces producers that generate audio faster than
real time. A partial chunk is padded with silence one tick after it was due (or seen).
Sinks receive ``(pcm_bytes, pts)`` where ``pts`` counts 48 kHz ticks of the source clock;
a pause of the producer (40 ms or more with nothing queued) advances it by the pause.

When the producer stops (nothing queued a tick after the next chunk was due), the sinks
get ``TAIL_CHUNKS`` chunks of silence, so that the stream ends in silence as
``livekit.rtc``'s (which sends silence while nothing is captured): a receiver that hears
the packets stop conceals from the last audio it got, and a talkspurt cut off mid-tone
would ring on in every receiver's concealment. The next talkspurt after such a pause is
paced from its first chunk (no catch-up burst: a fresh talkspurt is not late audio).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .audio_frame import AudioFrame
from .playout_clock import COALESCE, PlayoutClock, clock_for

__all__ = ["AudioSource"]

logger = logging.getLogger(__name__)

TICK = 0.02  # seconds of audio handed to sinks per chunk
EARLY = 0.01  # a complete chunk may be played out this much before it is due
_CREDIT = 0.25  # the schedule lags real time by at most this: late audio is not held back
_GAP = 2 * TICK  # a producer this late (nothing queued) paused: pts jump by the pause
_PTS_STEP = 960  # 20 ms at 48 kHz
TAIL_CHUNKS = 3  # silence chunks after the producer stops (60 ms)

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
        self._clock: PlayoutClock | None = None
        self._progress: asyncio.Event | None = None
        self._next_due: float | None = None  # loop time the next chunk may be played out
        self._pts_due = 0.0  # loop time the next pts stands for (follows pauses)
        self._waited_partial: float | None = None  # pad a partial chunk at this time
        self._tail_left = 0  # silence chunks still to send if the producer stays quiet
        self._quiet_from = 0.0  # loop time the queue ran dry (then of the last tail chunk)
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
            self._sinks = [*self._sinks, sink]  # copy-on-write: safe while iterating

    def _remove_sink(self, sink: AudioSink) -> None:
        if sink in self._sinks:
            self._sinks = [s for s in self._sinks if s != sink]

    # ------------------------------------------------------------------ producer API

    def clear_queue(self) -> None:
        """Drop all buffered audio and release ``wait_for_playout`` / ``capture_frame``."""
        self._buf.clear()
        self._waited_partial = None
        if self._loop is not None:  # (a clock exists only once there is a loop)
            # no chunk left to wait for: only the silence tail after what was played
            self._service(self._loop.time())
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
        underrun = len(self._buf) < self._chunk_bytes
        raw = frame._data  # the frame's own buffer: appended without a memoryview chain
        n = frame._num_channels * frame._samples_per_channel * 2
        self._buf += raw if len(raw) == n else memoryview(raw).cast("B")[:n]
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._service(self._loop.time(), underrun)
        limit = self._queue_size_ms * self._sample_rate // 1000 * self._bytes_per_sample
        while len(self._buf) > limit and not self._closed:
            await self._wait_progress()

    async def wait_for_playout(self) -> None:
        """Return once everything captured so far has been played out (or cleared)."""
        while self._buf and not self._closed:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._service(self._loop.time())
            if self._buf:
                await self._wait_progress()

    async def aclose(self) -> None:
        """Stop the clock and drop buffered audio; later captures are ignored."""
        self._closed = True
        self._buf.clear()
        if self._clock is not None:
            self._clock.cancel(self)
        self._notify()
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

    def _service(self, now: float, underrun: bool = False) -> None:
        """Play out every chunk due at ``now``; ask the clock for a call when one is pending.

        ``underrun``: called from ``capture_frame`` while no complete chunk was queued
        before this capture (the producer, not the clock, is late).
        """
        if self._closed:
            return
        buf = self._buf
        chunk_bytes = self._chunk_bytes
        played = False
        wake: float | None = None
        while buf:
            due = self._next_due
            if due is None:  # first chunk ever: the clock starts now
                due = self._next_due = self._pts_due = now
            if underrun:
                # the producer (not the clock) is late: a pause shows up in pts
                gap = now - self._pts_due
                if gap >= _GAP:
                    skipped = int(gap / TICK)
                    self._tick += skipped
                    self._pts_due += skipped * TICK
                if not self._tail_left:
                    # a new talkspurt after a pause (its whole silence tail went out):
                    # paced from its first chunk
                    due = self._next_due = max(due, now)
                underrun = False
            if now - due > _CREDIT:
                # late audio is played at once (no standing queue after a stall), but
                # never more than _CREDIT of it faster than real time
                due = self._next_due = now - _CREDIT
            if now + COALESCE < due - EARLY:
                wake = due - EARLY  # ahead of real time: wait for the clock
                break
            if len(buf) < chunk_bytes:
                pad_at = self._waited_partial
                if pad_at is None:  # one tick for the rest of the chunk
                    pad_at = self._waited_partial = max(due, now) + TICK
                if now + COALESCE < pad_at:
                    wake = pad_at
                    break
                data = bytes(buf) + bytes(chunk_bytes - len(buf))
                buf.clear()
            elif len(buf) == chunk_bytes:
                data = bytes(buf)
                buf.clear()
            else:
                data = bytes(buf[:chunk_bytes])
                del buf[:chunk_bytes]
            self._waited_partial = None
            self._tail_left, self._quiet_from = TAIL_CHUNKS, now
            self._emit(data, due)
            played = True
        if not buf and self._tail_left and self._sinks and wake is None:
            wake = self._silence_tail(now)
        clock = self._clock
        if wake is not None:
            if clock is None:
                assert self._loop is not None
                clock = self._clock = clock_for(self._loop)
            clock.schedule(self, wake)
        elif clock is not None:
            clock.cancel(self)
        if played:
            self._notify()

    def _emit(self, data: bytes, due: float) -> None:
        """Hand the chunk due at ``due`` to the sinks and advance the clock by a tick."""
        pts = self._tick * _PTS_STEP
        self._tick += 1
        self._next_due = due + TICK
        self._pts_due += TICK
        for sink in self._sinks:
            try:
                sink(data, pts)
            except Exception:  # a broken sink must not stop the clock
                logger.exception("audio sink failed")

    def _silence_tail(self, now: float) -> float | None:
        """Nothing queued: send the silence chunks that are a tick overdue; the loop time
        of the next one (None when the tail is done)."""
        while self._tail_left and self._next_due is not None:
            due = self._next_due
            # a producer keeping pace has delivered by then (catching up after a stall,
            # the schedule lags: the tick counts from when the queue ran dry)
            at = max(due, self._quiet_from) + TICK
            if now + COALESCE < at:
                return at
            self._quiet_from = at
            self._tail_left -= 1
            self._emit(bytes(self._chunk_bytes), due)
        return None
