"""Received media before decoding: :class:`EncodedFrameStream` yields a remote track's
encoded frames as they came off the wire (depacketized, not decoded).

* audio: one :class:`ReceivedEncodedFrame` per Opus packet, in arrival order (a RED
  packet gives its redundant blocks first, then its primary; the same RTP timestamp can
  therefore come twice: keep the first);
* video: one frame per complete VP8 frame or H.264 access unit (Annex B start codes),
  reassembled in order by aiortc's video jitter buffer; ``keyframe`` is read from the
  payload.

Timestamps are the RTP timestamps (48 kHz for Opus, 90 kHz for video) of the sender's
stream, ``ssrc`` says which stream; a new SSRC is a new timeline. Frames of an end-to-end
encrypted track are the encrypted ones. The frames are taken at the receiver's jitter
buffer (:class:`EncodedFrameTap`, wrapped around it; the ``_compat`` layer reaches it):
decoding is untouched for audio; for video, while frames are tapped and no
``VideoStream`` reads the track, aiortc's decoder gets nothing (a ``VideoStream`` opened
later gets frames from the next key frame on, asked for with a PLI).

The stream's queue holds ``capacity`` frames; when it is full a new frame is dropped,
counted in ``dropped`` and the next frame queued carries ``discontinuity=True`` (a video
consumer then waits for a key frame: :meth:`EncodedFrameStream.request_keyframe`). The
iteration ends when the track ends (unsubscribed, unpublished, disconnected) or after
:meth:`EncodedFrameStream.aclose`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._compat import aiortc as aiortc_compat
from ..types import TrackKind
from ..webrtc.red import parse_red

__all__ = [
    "EncodedFrameStream",
    "EncodedFrameTap",
    "ReceivedEncodedFrame",
    "h264_is_keyframe",
    "own_jitter_buffer",
    "replace_own_jitter_buffer",
    "vp8_is_keyframe",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedEncodedFrame:
    """One encoded frame of a remote track (see the module docstring)."""

    kind: str  # "audio" | "video"
    codec: str  # "opus", "vp8", "h264" (the MIME subtype, lower case)
    data: bytes
    timestamp: int  # RTP timestamp
    ssrc: int
    sequence_number: int  # of the frame's last packet
    keyframe: bool  # video: decodable on its own; audio: always True
    arrival: float  # the event loop's time when the frame was complete
    discontinuity: bool = False  # frames were dropped before this one (queue full)


def vp8_is_keyframe(data: bytes) -> bool:
    """A VP8 frame whose frame tag says key frame (RFC 6386 9.1: P bit clear)."""
    return len(data) >= 10 and not data[0] & 0x01 and data[3:6] == b"\x9d\x01\x2a"


def h264_is_keyframe(data: bytes) -> bool:
    """An Annex B access unit holding an IDR slice (NAL unit type 5)."""
    i = data.find(b"\x00\x00\x01")
    while 0 <= i < len(data) - 3:
        if data[i + 3] & 0x1F == 5:
            return True
        i = data.find(b"\x00\x00\x01", i + 3)
    return False


def own_jitter_buffer(receiver: Any) -> Any | None:
    """The receiver's jitter buffer with any :class:`EncodedFrameTap` looked through."""
    buffer = aiortc_compat.jitter_buffer(receiver)
    while isinstance(buffer, EncodedFrameTap):
        buffer = buffer.inner
    return buffer


def replace_own_jitter_buffer(receiver: Any, buffer: Any) -> bool:
    """Install ``buffer`` under the receiver's tap (if any) or as its jitter buffer."""
    current = aiortc_compat.jitter_buffer(receiver)
    if isinstance(current, EncodedFrameTap):
        while isinstance(current.inner, EncodedFrameTap):
            current = current.inner
        current.inner = buffer
        return True
    return aiortc_compat.replace_jitter_buffer(receiver, buffer)


class EncodedFrameTap:
    """Wraps a receiver's jitter buffer; hands encoded frames to its sinks."""

    KEYFRAME_INTERVAL = 1.0  # s between PLIs while waiting to decode again

    def __init__(self, inner: Any, receiver: Any, kind: str, listener: Any = None) -> None:
        self.inner = inner
        self.kind = kind
        self.listener = listener  # the remote track (its ``_streams``: decoded readers)
        self._receiver = receiver
        self._sinks: list[Callable[[ReceivedEncodedFrame], None]] = []
        self._codecs: dict[int, str] = {}
        self._decoding = True  # frames go to aiortc's decoder (False: skipped)
        self._asked_at: float | None = None  # when a key frame was asked for, to decode
        self.last_ssrc: int | None = None

    @classmethod
    def install(cls, receiver: Any, kind: str, listener: Any = None) -> EncodedFrameTap | None:
        """The receiver's tap (installed now if it has none); None without a hook."""
        current = aiortc_compat.jitter_buffer(receiver)
        if current is None:
            return None
        if isinstance(current, EncodedFrameTap):
            current.listener = listener if listener is not None else current.listener
            return current
        tap = cls(current, receiver, kind, listener)
        if not aiortc_compat.replace_jitter_buffer(receiver, tap):
            return None
        return tap

    def add_sink(self, sink: Callable[[ReceivedEncodedFrame], None]) -> None:
        if sink not in self._sinks:
            self._sinks.append(sink)

    def remove_sink(self, sink: Callable[[ReceivedEncodedFrame], None]) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)
        # out of the way again, unless decoding is off (it resumes at a key frame)
        if (not self._sinks and self._decoding
                and aiortc_compat.jitter_buffer(self._receiver) is self):
            aiortc_compat.replace_jitter_buffer(self._receiver, self.inner)

    def _codec(self, pt: int) -> str:
        codec = self._codecs.get(pt)
        if codec is None:
            mime = getattr(aiortc_compat.receiver_codecs(self._receiver).get(pt), "mimeType", "")
            codec = self._codecs[pt] = str(mime).lower().partition("/")[2] or "unknown"
        return codec

    def _emit(self, frame: ReceivedEncodedFrame) -> None:
        for sink in tuple(self._sinks):
            try:
                sink(frame)
            except Exception:
                logger.exception("an encoded-frame sink failed; detached")
                self.remove_sink(sink)

    def _now(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return 0.0

    def add(self, packet: Any) -> tuple[bool, Any]:
        """aiortc's ``JitterBuffer.add``: tap, then hand the packet to the inner buffer."""
        if self.kind == "audio":
            if self._sinks:
                self._tap_audio(packet)
            return self.inner.add(packet)  # type: ignore[no-any-return]
        pli, frame = self.inner.add(packet)
        if frame is None or (self._decoding and not self._sinks):
            return pli, frame
        codec = self._codec(int(packet.payload_type))
        data = bytes(frame.data)
        key = vp8_is_keyframe(data) if codec == "vp8" else (
            h264_is_keyframe(data) if codec == "h264" else False)
        if self._sinks:
            self.last_ssrc = int(packet.ssrc)
            self._emit(ReceivedEncodedFrame("video", codec, data, int(frame.timestamp),
                                            int(packet.ssrc), int(packet.sequence_number),
                                            key, self._now()))
        listener = self.listener
        if listener is not None and getattr(listener, "_ended", False):
            # its track ended; a recycled receiver may carry another one now
            self.listener = listener = None
        readers = listener is None or bool(listener._streams)
        if not readers:
            self._decoding = False  # nobody reads decoded frames: aiortc decodes nothing
            return pli, None
        if not self._decoding:
            # a VideoStream (came back): its decoder starts at a key frame (asked for)
            if not key:
                now = self._now()
                if self._asked_at is None or now - self._asked_at >= self.KEYFRAME_INTERVAL:
                    self._asked_at = now
                    pli = True
                return pli, None
            self._decoding = True
            self._asked_at = None
            if not self._sinks and aiortc_compat.jitter_buffer(self._receiver) is self:
                aiortc_compat.replace_jitter_buffer(self._receiver, self.inner)
        return pli, frame

    def _tap_audio(self, packet: Any) -> None:
        payload = aiortc_compat.depayloaded(packet)
        if not payload:
            return
        codec = self._codec(int(packet.payload_type))
        ssrc, seq, ts = int(packet.ssrc), int(packet.sequence_number), int(packet.timestamp)
        self.last_ssrc = ssrc
        now = self._now()
        if codec == "red":
            try:
                red = parse_red(payload)
            except ValueError:
                logger.debug("malformed RED packet %d not tapped", seq)
                return
            for block in red.redundant:
                if block.data:
                    self._emit(ReceivedEncodedFrame(
                        "audio", "opus", block.data, (ts - block.timestamp_offset) & 0xFFFFFFFF,
                        ssrc, seq, True, now))
            if red.primary:
                self._emit(ReceivedEncodedFrame("audio", "opus", red.primary, ts, ssrc, seq,
                                                True, now))
            return
        self._emit(ReceivedEncodedFrame("audio", codec, bytes(payload), ts, ssrc, seq, True, now))

    def remove(self, count: int) -> None:
        self.inner.remove(count)

    def smart_remove(self, count: int) -> bool:
        return bool(self.inner.smart_remove(count))

    def __getattr__(self, name: str) -> Any:  # capacity, counters...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


_END = object()


class EncodedFrameStream:
    """Async iterator of a remote track's :class:`ReceivedEncodedFrame` s."""

    DEFAULT_CAPACITY = 1000

    def __init__(self, track: Any, *, capacity: int = 0) -> None:
        receiver = getattr(track, "_receiver", None)
        kind = "audio" if int(track.kind) == TrackKind.KIND_AUDIO else "video"
        if receiver is None:
            raise ValueError("EncodedFrameStream needs a subscribed remote track")
        self._track = track
        self._receiver = receiver
        self._capacity = int(capacity) or self.DEFAULT_CAPACITY
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._gap = False
        self._tasks: set[asyncio.Future[None]] = set()
        self.dropped = 0
        self.frames = 0
        tap = EncodedFrameTap.install(receiver, kind, track)
        if tap is None:
            raise RuntimeError("this receiver has no jitter buffer to tap (aiortc moved)")
        self._tap = tap
        tap.add_sink(self._on_frame)
        track._add_encoded_stream(self)

    @property
    def track(self) -> Any:
        return self._track

    def _on_frame(self, frame: ReceivedEncodedFrame) -> None:
        if self._closed:
            return
        if len(self._queue) >= self._capacity:
            self.dropped += 1
            self._gap = True
            return
        if self._gap:
            self._gap = False
            frame = ReceivedEncodedFrame(frame.kind, frame.codec, frame.data, frame.timestamp,
                                         frame.ssrc, frame.sequence_number, frame.keyframe,
                                         frame.arrival, True)
        self.frames += 1
        self._queue.append(frame)
        self._wake.set()

    def request_keyframe(self) -> bool:
        """Send a PLI for the track's current stream; False before its first frame."""
        ssrc = self._tap.last_ssrc
        if ssrc is None or self._closed or self.kind_is_audio:
            return False
        try:
            task = asyncio.ensure_future(aiortc_compat.send_pli(self._receiver, ssrc))
        except AttributeError:
            logger.debug("PLI not sent (aiortc moved)", exc_info=True)
            return False
        self._tasks.add(task)
        task.add_done_callback(self._sent)
        return True

    @property
    def kind_is_audio(self) -> bool:
        return self._tap.kind == "audio"

    def _sent(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("PLI failed: %r", task.exception())

    def _end(self) -> None:
        """The track ended (called by the track): end the iteration after the queue."""
        self.close()

    def close(self) -> None:
        """Stop taking frames (synchronous); queued frames are still yielded."""
        if self._closed:
            return
        self._closed = True
        self._tap.remove_sink(self._on_frame)
        self._track._remove_encoded_stream(self)
        self._queue.append(_END)
        self._wake.set()

    async def aclose(self) -> None:
        """Stop now: the iteration ends without the queued frames."""
        self.close()
        self._queue.clear()
        self._queue.append(_END)
        self._wake.set()

    def __aiter__(self) -> EncodedFrameStream:
        return self

    async def __anext__(self) -> ReceivedEncodedFrame:
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        item = self._queue[0]
        if item is _END:
            raise StopAsyncIteration
        self._queue.popleft()
        return item  # type: ignore[no-any-return]
