"""Publishing pre-encoded video: ``EncodedVideoSource`` takes H264 (Annex B) or VP8
frames the application encoded itself; ``LocalVideoTrack.create_video_track(name,
source)`` publishes them as they are (aiortc only packetizes them).

* The codec of the frames must be the one the track is published with
  (``TrackPublishOptions.video_codec``): a frame of another codec raises ``ValueError``
  from ``capture_frame`` once the track is published. AV1, VP9 and H265 frames raise
  ``UnsupportedOptionError`` (issue 16).
* Frames wait in a queue of ``MAX_QUEUED`` frames. When it overflows the queue is
  dropped and delta frames are dropped until the next key frame (a decoder cannot
  resume without one); a key frame is requested through the feedback.
* ``take_feedback()`` says whether a key frame is wanted (a subscriber's PLI/FIR, or a
  dropped queue) and, once after publication and after each change, the rate to encode
  at (``TrackPublishOptions.video_encoding`` or the default for the size); then ``None``.
* ``metadata`` on a frame raises ``UnsupportedOptionError`` (not sent yet, issue 16).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UnsupportedOptionError
from ..options_check import ISSUE_VIDEO, check_frame_metadata
from ..types import VideoCodec
from ..types_ext import EncodedFrameType, FrameMetadata

__all__ = [
    "EncodedRateControl",
    "EncodedVideoFrame",
    "EncodedVideoSource",
    "EncodedVideoSourceFeedback",
]

logger = logging.getLogger(__name__)

MAX_QUEUED = 30
MIME = {VideoCodec.VP8: "video/vp8", VideoCodec.H264: "video/h264"}


@dataclass
class EncodedVideoFrame:
    data: bytes
    width: int
    height: int
    codec: VideoCodec
    frame_type: EncodedFrameType
    timestamp_us: int
    metadata: FrameMetadata | None = None


@dataclass
class EncodedRateControl:
    target_bitrate_bps: int
    framerate_fps: float


@dataclass
class EncodedVideoSourceFeedback:
    keyframe_requested: bool
    rate_control: EncodedRateControl | None


class EncodedVideoSource:
    """A source of pre-encoded VP8 / H264 frames (see the module docstring)."""

    def __init__(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            raise ValueError("width and height must be > 0")
        self._width = int(width)
        self._height = int(height)
        self._queue: collections.deque[EncodedVideoFrame] = collections.deque()
        self._lock = threading.Lock()
        self._sinks: dict[Callable[[], None], asyncio.AbstractEventLoop] = {}
        self._codec: VideoCodec | None = None  # bound when a track is published
        self._need_keyframe = False  # dropping delta frames until a key frame
        self._keyframe_requested = False
        self._rate: EncodedRateControl | None = None
        self._closed = False

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    def capture_frame(self, frame: EncodedVideoFrame) -> None:
        """Queue one encoded frame for the published track(s)."""
        if self._closed:
            return
        if not isinstance(frame, EncodedVideoFrame):
            raise TypeError(f"expected an EncodedVideoFrame, got {type(frame).__name__}")
        codec = VideoCodec(int(frame.codec))
        if codec not in MIME:
            raise UnsupportedOptionError("EncodedVideoFrame.codec", codec, issue=ISSUE_VIDEO,
                                         detail="pre-encoded VP8 and H264 only")
        if self._codec is not None and codec != self._codec:
            raise ValueError(f"the track is published as {self._codec.name}; this frame is "
                             f"{codec.name}")
        check_frame_metadata(frame.metadata)
        if not isinstance(frame.data, (bytes, bytearray, memoryview)) or not len(frame.data):
            raise ValueError("an encoded frame needs its bytes")
        key = int(frame.frame_type) == EncodedFrameType.ENCODED_FRAME_KEY
        with self._lock:
            if self._need_keyframe and not key:
                return
            self._need_keyframe = False
            if len(self._queue) >= MAX_QUEUED:
                self._queue.clear()
                if not key:
                    self._need_keyframe = True
                    self._keyframe_requested = True
                    logger.warning("EncodedVideoSource: %d frames not sent; dropped until "
                                   "the next key frame", MAX_QUEUED)
                    return
            self._queue.append(frame)
            sinks = list(self._sinks.items())
        for wake, loop in sinks:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                wake()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(wake)

    def take_feedback(self) -> EncodedVideoSourceFeedback:
        """What the encoder should do: a key frame wanted? a new rate? (then cleared)."""
        with self._lock:
            feedback = EncodedVideoSourceFeedback(self._keyframe_requested, self._rate)
            self._keyframe_requested = False
            self._rate = None
        return feedback

    async def aclose(self) -> None:
        """Drop queued frames and stop accepting frames."""
        self._closed = True
        with self._lock:
            self._queue.clear()
            sinks = list(self._sinks)
        for wake in sinks:
            wake()

    # ------------------------------------------------------------------ track side

    def _bind(self, codec: VideoCodec, rate: EncodedRateControl) -> None:
        if codec not in MIME:
            raise UnsupportedOptionError("EncodedVideoSource codec", codec, issue=ISSUE_VIDEO,
                                         detail="pre-encoded VP8 and H264 only")
        with self._lock:
            self._codec = codec
            self._rate = rate
            self._keyframe_requested = True  # the first frame a subscriber decodes
            self._queue = collections.deque(f for f in self._queue
                                            if VideoCodec(int(f.codec)) == codec)

    def _request_keyframe(self) -> None:
        with self._lock:
            self._keyframe_requested = True

    def _take(self) -> EncodedVideoFrame | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _add_sink(self, wake: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._sinks[wake] = loop

    def _remove_sink(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._sinks.pop(wake, None)

    @property
    def _is_closed(self) -> bool:
        return self._closed

