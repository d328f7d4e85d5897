"""``AudioMixer``: sums several async streams of ``AudioFrame`` into fixed-size frames.

Each round the mixer takes ``blocksize`` samples per channel from every stream, waiting at
most ``stream_timeout_ms`` for streams that have not yet delivered that much: a stream
that is late is left out of this round (its samples stay buffered for the next one) and a
warning is logged; a stream that ended contributes what it has left, zero-padded, and is
removed. The sum is clipped to int16. Output frames wait in a queue of ``capacity``
frames: a full queue holds the mixer back (back-pressure, nothing is dropped).

``end_input()`` mixes until every stream has ended, then ends the iteration;
``aclose()`` stops at once. A frame whose rate or channel count differs from the mixer's
raises ``ValueError`` from the iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from .audio_frame import AudioFrame

__all__ = ["AudioMixer"]

logger = logging.getLogger(__name__)

_END = object()


class _Input:
    """One stream: its pending ``__anext__`` task and the samples not yet mixed."""

    def __init__(self, stream: AsyncIterator[AudioFrame], num_channels: int) -> None:
        self.stream = stream
        self.buffer = np.zeros((0, num_channels), dtype=np.int16)
        self.pending: asyncio.Task[Any] | None = None
        self.ended = False

    def cancel(self) -> None:
        if self.pending is not None and not self.pending.done():
            self.pending.cancel()
        self.pending = None


class AudioMixer:
    """Mix async iterators of ``AudioFrame`` (same rate and channel count) into one."""

    def __init__(
        self,
        sample_rate: int,
        num_channels: int,
        *,
        blocksize: int = 0,
        stream_timeout_ms: int = 100,
        capacity: int = 100,
    ) -> None:
        if int(sample_rate) <= 0 or int(num_channels) <= 0:
            raise ValueError("sample_rate and num_channels must be > 0")
        if int(blocksize) < 0 or int(capacity) <= 0 or stream_timeout_ms < 0:
            raise ValueError("blocksize >= 0, capacity > 0 and stream_timeout_ms >= 0 please")
        self._sample_rate = int(sample_rate)
        self._num_channels = int(num_channels)
        self._blocksize = int(blocksize) or self._sample_rate // 10
        self._timeout = stream_timeout_ms / 1000.0
        self._inputs: dict[int, _Input] = {}
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=int(capacity))
        self._changed = asyncio.Event()
        self._ending = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def add_stream(self, stream: AsyncIterator[AudioFrame]) -> None:
        """Mix ``stream`` from the next round on."""
        if self._ending or self._closed:
            raise RuntimeError("cannot add a stream after end_input() or aclose()")
        if id(stream) not in self._inputs:
            self._inputs[id(stream)] = _Input(stream, self._num_channels)
        self._changed.set()
        self._ensure_task()

    def remove_stream(self, stream: AsyncIterator[AudioFrame]) -> None:
        """Stop mixing ``stream`` (its buffered samples are dropped)."""
        entry = self._inputs.pop(id(stream), None)
        if entry is not None:
            entry.cancel()
        self._changed.set()

    def end_input(self) -> None:
        """No more streams: mix until the current ones end, then end the iteration."""
        self._ending = True
        self._changed.set()
        self._ensure_task()

    async def aclose(self) -> None:
        """Stop mixing now; the iteration ends after the frames already queued."""
        self._closed = True
        self._ending = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for entry in self._inputs.values():
            entry.cancel()
        self._inputs.clear()
        self._put_nowait_end()

    def __aiter__(self) -> AudioMixer:
        return self

    async def __anext__(self) -> AudioFrame:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # later calls end too
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ internals

    def _put_nowait_end(self) -> None:
        while True:  # a full queue of frames nobody reads: the oldest make room
            try:
                self._queue.put_nowait(_END)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()

    def _ensure_task(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                if not self._inputs:
                    if self._ending:
                        break
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                block = await self._mix_round()
                if block is not None:
                    await self._queue.put(block)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bad frame, or a stream that raised: to the reader
            logger.debug("AudioMixer stopped", exc_info=True)
            await self._queue.put(exc)
        finally:
            for entry in self._inputs.values():
                entry.cancel()
        await self._queue.put(_END)

    async def _mix_round(self) -> AudioFrame | None:
        n = self._blocksize
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            waiting = [e for e in self._inputs.values() if not e.ended and len(e.buffer) < n]
            for entry in waiting:
                if entry.pending is None:
                    entry.pending = loop.create_task(_next(entry.stream))
            tasks = {e.pending for e in waiting if e.pending is not None}
            remaining = deadline - loop.time()
            if not tasks or remaining <= 0:
                break
            done, _ = await asyncio.wait(tasks, timeout=remaining,
                                         return_when=asyncio.FIRST_COMPLETED)
            for entry in waiting:
                if entry.pending in done:
                    task, entry.pending = entry.pending, None
                    assert task is not None
                    self._take(entry, task.result())
        mix = np.zeros((n, self._num_channels), dtype=np.int32)
        contributed = 0
        for key, entry in list(self._inputs.items()):
            if entry.ended and len(entry.buffer) == 0:
                del self._inputs[key]
            elif len(entry.buffer) >= n or entry.ended:
                chunk, entry.buffer = entry.buffer[:n], entry.buffer[n:]
                mix[: len(chunk)] += chunk
                contributed += 1
                if entry.ended and len(entry.buffer) == 0:
                    del self._inputs[key]
            else:
                logger.warning("AudioMixer: a stream had %d of %d samples after %.0f ms; "
                               "left out of this block", len(entry.buffer), n,
                               self._timeout * 1000)
        if contributed == 0:
            return None
        out = np.clip(mix, -32768, 32767).astype(np.int16)
        return AudioFrame(bytearray(out.tobytes()), self._sample_rate, self._num_channels, n)

    def _take(self, entry: _Input, frame: Any) -> None:
        if frame is _END:
            entry.ended = True
            return
        if not isinstance(frame, AudioFrame):
            raise ValueError(f"AudioMixer streams must yield AudioFrame, got "
                             f"{type(frame).__name__}")
        if frame.sample_rate != self._sample_rate or frame.num_channels != self._num_channels:
            raise ValueError(
                f"AudioMixer is {self._sample_rate} Hz / {self._num_channels} channel(s); a "
                f"stream yielded {frame.sample_rate} Hz / {frame.num_channels} channel(s)")
        samples = np.frombuffer(frame.data, dtype=np.int16)[
            : frame.samples_per_channel * self._num_channels]
        entry.buffer = np.concatenate(
            [entry.buffer, samples.reshape(-1, self._num_channels)])


async def _next(stream: AsyncIterator[AudioFrame]) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return _END
