"""The files of a recording (the shell around :mod:`.ogg` and PyAV's muxers).

* :class:`OggOpusFile`: Opus packets into Ogg (our own pages, :mod:`.ogg`); each page is
  flushed to the OS as it is cut;
* :class:`AvFile`: VP8 / H.264 frames into WebM, Matroska or MP4 with PyAV's muxer
  (``OutputContainer.add_mux_stream``, PyAV 17 or newer: packets written as they are,
  nothing encoded); the trailer (MP4's index) is written by :meth:`AvFile.close`;
* :class:`WavFile`: the mixed audio (``--mix``), 16-bit mono PCM.
"""

from __future__ import annotations

import logging
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..errors import AioLiveKitError
from .ogg import OggOpusWriter
from .timeline import AUDIO_RATE, VIDEO_RATE, TimedFrame

__all__ = ["AvFile", "OggOpusFile", "RecordConnectError", "RecordError", "WavFile"]

logger = logging.getLogger(__name__)

VIDEO_TIME_BASE = Fraction(1, VIDEO_RATE)


class RecordError(AioLiveKitError):
    """A recording could not start, or one of its files could not be written."""


class RecordConnectError(RecordError):
    """The recorder could not join the room (unreachable server, refused token...)."""


class OggOpusFile:
    """One audio track as Ogg Opus."""

    def __init__(self, path: Path, channels: int, tags: dict[str, str], serial: int) -> None:
        self.path = path
        self._writer = OggOpusWriter(serial, channels, tags)
        try:
            self._file = open(path, "xb")
        except OSError as exc:
            raise RecordError(f"cannot create {path}: {exc.strerror or exc}") from exc
        self._write(self._writer.headers())

    def _write(self, data: bytes) -> None:
        if data:
            self._file.write(data)
            self._file.flush()

    def write(self, frame: TimedFrame) -> None:
        self._write(self._writer.packet(frame.data, frame.pts, frame.duration))

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._write(self._writer.close())
        finally:
            self._file.close()

    @property
    def duration(self) -> float:
        return self._writer.granule / AUDIO_RATE


class AvFile:
    """One video track in a container PyAV writes (``fmt``: webm, matroska, mp4)."""

    def __init__(self, path: Path, fmt: str, codec: str, width: int, height: int) -> None:
        import av

        self.path = path
        if path.exists():
            raise RecordError(f"cannot create {path}: it exists")
        # every packet goes to the OS as it is muxed; Matroska closes a cluster at least
        # every second (it buffers the open one): a killed recorder loses about a second
        options = {"flush_packets": "1"}
        if fmt in ("webm", "matroska"):
            options["cluster_time_limit"] = "1000"
        try:
            container: Any = av.open(str(path), "w", format=fmt, options=options)
        except (OSError, av.FFmpegError) as exc:
            raise RecordError(f"cannot create {path}: {exc}") from exc
        add = getattr(container, "add_mux_stream", None)
        if add is None:
            container.close()
            path.unlink(missing_ok=True)
            raise RecordError(f"recording video needs PyAV 17 or newer (OutputContainer."
                              f"add_mux_stream); PyAV {av.__version__} is installed")
        self._container = container
        self._stream = add(codec, width=width, height=height)
        self._stream.time_base = VIDEO_TIME_BASE
        self._last_pts = 0
        self._first_pts: int | None = None
        self._closed = False
        self.frames = 0

    def write(self, frame: TimedFrame) -> None:
        import av

        packet = av.Packet(frame.data)
        packet.pts = packet.dts = frame.pts
        packet.time_base = VIDEO_TIME_BASE
        packet.stream = self._stream
        packet.is_keyframe = frame.keyframe
        self._container.mux(packet)
        if self._first_pts is None:
            self._first_pts = frame.pts
        self._last_pts = frame.pts
        self.frames += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._container.close()

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the end of the last (its length estimated as
        the mean frame interval)."""
        if self._first_pts is None:
            return 0.0
        span = self._last_pts - self._first_pts
        mean = span / (self.frames - 1) if self.frames > 1 else 0
        return (span + mean) / VIDEO_RATE


class WavFile:
    """16-bit mono PCM (the mix)."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        if path.exists():
            raise RecordError(f"cannot create {path}: it exists")
        try:
            self._wav = wave.open(str(path), "wb")
        except OSError as exc:
            raise RecordError(f"cannot create {path}: {exc.strerror or exc}") from exc
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self._rate = rate
        self.samples = 0
        self._closed = False

    def write(self, pcm: bytes) -> None:
        if pcm:
            self._wav.writeframes(pcm)
            self.samples += len(pcm) // 2

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wav.close()

    @property
    def duration(self) -> float:
        return self.samples / self._rate
