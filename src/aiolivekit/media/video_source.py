"""``VideoSource``: holds the latest captured frame for the local video tracks.

``capture_frame`` is synchronous and O(1): it replaces the pending frame (older
frames that no encoder picked up are dropped, so memory never grows) and wakes the
sinks. It may be called from another thread; sinks are then woken on their loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..options_check import check_frame_metadata, check_video_rotation
from ..types import VideoRotation
from ..types_ext import FrameMetadata
from .video_frame import VideoFrame

__all__ = ["VideoSource"]

logger = logging.getLogger(__name__)


@dataclass
class CapturedFrame:
    """One captured picture as handed to the encoder."""

    frame: VideoFrame
    timestamp_us: int
    rotation: VideoRotation
    seq: int


class VideoSource:
    """A source of raw frames for :meth:`LocalVideoTrack.create_video_track`.

    ``width`` x ``height`` is the size announced to the server. ``is_screencast`` is a
    content hint (as in ``livekit.rtc``, where it tunes libwebrtc's pipeline for screen
    content): aiolivekit keeps it in :attr:`is_screencast` and its encoders do not
    change their settings for it.
    """

    def __init__(self, width: int, height: int, *, is_screencast: bool = False) -> None:
        if width <= 0 or height <= 0:
            raise ValueError("width and height must be > 0")
        self._width = int(width)
        self._height = int(height)
        self._is_screencast = bool(is_screencast)
        self._latest: CapturedFrame | None = None
        self._seq = 0
        self._closed = False
        self._lock = threading.Lock()
        # sink callback -> loop it must be woken on
        self._sinks: dict[Callable[[], None], asyncio.AbstractEventLoop] = {}

    @property
    def is_screencast(self) -> bool:
        """The content hint given at creation (encoder settings do not depend on it)."""
        return self._is_screencast

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    def capture_frame(
        self,
        frame: VideoFrame,
        *,
        timestamp_us: int = 0,
        rotation: VideoRotation = VideoRotation.VIDEO_ROTATION_0,
        metadata: FrameMetadata | None = None,
    ) -> None:
        """Make ``frame`` the next frame to encode (replacing any frame not yet encoded).

        ``timestamp_us`` (when > 0) sets the RTP timestamp; a ``rotation`` other than
        ``VIDEO_ROTATION_0`` raises ``UnsupportedOptionError`` (frames are sent as
        captured), and so does a ``metadata`` other than ``None`` (not sent yet).
        """
        if self._closed:
            return
        if not isinstance(frame, VideoFrame):
            raise TypeError("frame must be a VideoFrame")
        rot = check_video_rotation(rotation)
        check_frame_metadata(metadata)
        with self._lock:
            self._seq += 1
            self._latest = CapturedFrame(frame, int(timestamp_us), rot, self._seq)
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

    def _take_latest(self, after_seq: int) -> CapturedFrame | None:
        """The latest frame if it is newer than ``after_seq``."""
        latest = self._latest
        if latest is None or latest.seq <= after_seq:
            return None
        return latest

    def _add_sink(self, wake: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._sinks[wake] = loop

    def _remove_sink(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._sinks.pop(wake, None)

    async def aclose(self) -> None:
        """Drop the pending frame and stop accepting frames."""
        self._closed = True
        with self._lock:
            self._latest = None
            sinks = list(self._sinks)
            self._sinks.clear()
        for wake in sinks:
            wake()
