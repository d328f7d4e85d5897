"""The aiortc track behind a ``LocalVideoTrack`` fed by an ``EncodedVideoSource``:
``recv()`` hands the application's encoded frames to aiortc's sender as ``av.Packet`` s
(90 kHz pts), which aiortc only packetizes; a PLI/FIR from the server becomes a key-frame
request in the source's feedback."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError

from . import codecs
from .encoded_video import MIME, EncodedRateControl, EncodedVideoSource
from .rtc_local import _LocalRtcTrack

__all__ = ["EncodedVideoRtcTrack"]

logger = logging.getLogger(__name__)


class EncodedVideoRtcTrack(_LocalRtcTrack):
    """Pre-encoded VP8 / H264 frames of an :class:`EncodedVideoSource`."""

    kind = "video"

    def __init__(self, source: EncodedVideoSource) -> None:
        self._source = source
        super().__init__()
        self.config = codecs.VideoEncoderConfig()
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_pts: int | None = None
        self._t0 = time.monotonic()
        self._warned_codec = False
        self.frames_encoded = 0  # frames sent (encoded by the application)

    @property  # type: ignore[override]
    def force_keyframe(self) -> bool:
        return False

    @force_keyframe.setter
    def force_keyframe(self, value: bool) -> None:
        if value:  # a PLI/FIR, or unmute: the application is asked for a key frame
            self._source._request_keyframe()

    def configure(self, config: codecs.VideoEncoderConfig) -> None:
        self.config = config
        width, height = self._source.width, self._source.height
        fps = config.max_framerate or 30.0
        bitrate = config.max_bitrate or codecs.default_video_bitrate(width, height, fps)
        self._source._bind(config.codec, EncodedRateControl(bitrate, fps))

    def _wake(self) -> None:
        self._event.set()

    def _pts(self, timestamp_us: int) -> int:
        if timestamp_us > 0:
            pts = timestamp_us * 9 // 100
        else:
            pts = int((time.monotonic() - self._t0) * 90000)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    async def recv(self) -> Any:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._source._add_sink(self._wake, self._loop)
        while True:
            if self.readyState != "live" or self._source._is_closed:
                raise MediaStreamError
            frame = self._source._take()
            if frame is None:
                self._event.clear()
                await self._event.wait()
                continue
            if self.muted:
                continue
            mime = MIME.get(frame.codec)
            if self.codec_mime is not None and mime != self.codec_mime:
                if not self._warned_codec:
                    self._warned_codec = True
                    logger.error("EncodedVideoSource: %s frames on a track negotiated as %s "
                                 "are dropped", mime, self.codec_mime)
                continue
            packet = av.Packet(bytes(frame.data))
            packet.pts = self._pts(int(frame.timestamp_us))
            packet.time_base = codecs.VIDEO_TIME_BASE
            if self.frame_cryptor is not None:
                packet = self._encrypt_packet(packet, "h264" if mime == "video/h264" else "vp8")
                if packet is None:
                    continue
            self.frames_encoded += 1
            return packet

    def stop(self) -> None:
        self._source._remove_sink(self._wake)
        super().stop()
        self._event.set()
