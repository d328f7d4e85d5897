"""``VideoStream``: receive a remote video track as ``VideoFrameEvent`` s.

Decoded frames arrive as I420; with ``format`` each stream gets them converted (packed
RGB types and NV12/I444 through libswscale, BT.601 limited range; the result is shared
by all streams asking for the same format). The queue is bounded and drops the oldest
frame when full: ``capacity`` frames, or ``VideoStream.DEFAULT_CAPACITY`` (30 frames,
about one second) when ``capacity`` is 0. Iteration ends after the buffered frames
once the track ends, and immediately after ``aclose()``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from ..options_check import check_stream_kwargs
from ..types import TrackKind, TrackSource, VideoBufferType, VideoRotation
from .codecs import AV_PACKED_FORMATS
from .stream_base import FrameStreamBase
from .video_frame import VideoFrame

__all__ = ["VideoFrameEvent", "VideoStream", "av_to_event"]

logger = logging.getLogger(__name__)


@dataclass
class VideoFrameEvent:
    frame: VideoFrame
    timestamp_us: int
    rotation: VideoRotation
    metadata: Any = None


class _DecodedFrame:
    """One decoded picture with per-format conversions computed once."""

    __slots__ = ("_cache", "av_frame", "timestamp_us")

    def __init__(self, av_frame: Any, timestamp_us: int) -> None:
        self.av_frame = av_frame
        self.timestamp_us = timestamp_us
        self._cache: dict[int, VideoFrameEvent] = {}

    def get(self, fmt: int) -> VideoFrameEvent:
        ev = self._cache.get(fmt)
        if ev is None:
            ev = VideoFrameEvent(
                _convert_av(self.av_frame, fmt, self), self.timestamp_us,
                VideoRotation.VIDEO_ROTATION_0,
            )
            self._cache[fmt] = ev
        return ev


def _i420_from_av(f: Any) -> VideoFrame:
    import numpy as np

    if f.format.name != "yuv420p":
        f = f.reformat(format="yuv420p")
    w, h = f.width, f.height
    cw, ch = (w + 1) // 2, (h + 1) // 2
    parts = []
    for plane, (pw, ph) in zip(f.planes, ((w, h), (cw, ch), (cw, ch)), strict=True):
        arr = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)[:ph, :pw]
        parts.append(arr.tobytes())
    return VideoFrame(w, h, VideoBufferType.I420, bytearray(b"".join(parts)))


def _convert_av(f: Any, fmt: int, item: _DecodedFrame) -> VideoFrame:
    w, h = f.width, f.height
    if fmt in AV_PACKED_FORMATS:
        name, n = AV_PACKED_FORMATS[fmt]
        arr = f.to_ndarray(format=name)
        return VideoFrame(w, h, fmt, bytearray(arr.reshape(h, w * n).tobytes()))
    i420 = item._cache.get(VideoBufferType.I420)
    base = i420.frame if i420 is not None else _i420_from_av(f)
    if fmt == VideoBufferType.I420:
        return base
    return base.convert(fmt)


def av_to_event(frame: Any) -> _DecodedFrame:
    """Wrap a decoded ``av.VideoFrame`` (timestamps from its pts in microseconds)."""
    ts = 0
    if frame.pts is not None and frame.time_base is not None:
        ts = int(frame.pts * frame.time_base * 1_000_000)
    return _DecodedFrame(frame, ts)


class VideoStream(FrameStreamBase[VideoFrameEvent]):
    """Async iterator of :class:`VideoFrameEvent` from a remote video track."""

    DEFAULT_CAPACITY = 30
    _DEFAULT_BOUND = DEFAULT_CAPACITY
    _TRACK_KIND = TrackKind.KIND_VIDEO

    def __init__(
        self,
        track: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        capacity: int = 0,
        format: VideoBufferType | None = None,
        **kwargs: Any,
    ) -> None:
        check_stream_kwargs("VideoStream", kwargs)
        self._format = VideoBufferType(int(format)) if format is not None else VideoBufferType.I420
        super().__init__(track, loop, capacity, kwargs)

    @classmethod
    def from_participant(
        cls,
        *,
        participant: Any,
        track_source: TrackSource,
        loop: asyncio.AbstractEventLoop | None = None,
        format: VideoBufferType | None = None,
        capacity: int = 0,
    ) -> VideoStream:
        """Follow whichever video track of ``track_source`` the participant publishes."""
        return cls(
            None, loop=loop, capacity=capacity, format=format,
            participant=participant, track_source=track_source,
        )

    @classmethod
    def from_track(
        cls,
        *,
        track: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        format: VideoBufferType | None = None,
        capacity: int = 0,
    ) -> VideoStream:
        return cls(track, loop=loop, capacity=capacity, format=format)

    def _transform(self, item: _DecodedFrame) -> list[VideoFrameEvent]:
        return [item.get(self._format)]
