"""Encoder configuration: the encoders local tracks run before aiortc packetizes.

aiortc hard-codes its encoders (Opus stereo 96 kbit/s; VP8/H264 at fixed bitrates) and
has no bitrate API. Local tracks therefore encode themselves: video with PyAV, handing
aiortc ``av.Packet`` s which its sender only packetizes (``encoder.pack()``); audio with
libopus called directly (:mod:`.opus_native`, PyAV as the fallback), sent by
:mod:`.rtp_direct`:

* Opus (``libopus``): the source's channel count, ``audio_encoding.max_bitrate`` or
  32 kbit/s per channel, ``application=voip`` (mono) / ``audio`` (stereo), 20 ms frames,
  constrained VBR; with ``dtx`` the tiny silence frames are not sent except one every 400 ms.
* VP8 (``libvpx``) / H264 (``libx264`` baseline): CBR at ``video_encoding.max_bitrate``
  (or a default from the resolution), realtime settings, keyframes on request.

PTS are in the RTP clocks: 48 kHz for audio, 90 kHz for video.
Importing this module imports PyAV and numpy; only media code imports it.
"""

from __future__ import annotations

import fractions
import itertools
import logging
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from ..types import TrackPublishOptions, VideoBufferType, VideoCodec
from . import opus_native
from .simulcast_layers import LayerSpec, simulcast_layers
from .video_frame import VideoFrame

__all__ = [
    "AV_PACKED_FORMATS",
    "AudioEncoderConfig",
    "OpusPacketEncoder",
    "VideoConverter",
    "VideoEncoderConfig",
    "VideoPacketEncoder",
    "audio_config",
    "audio_level_dbov",
    "default_video_bitrate",
    "to_av_video_frame",
    "video_config",
    "vp8_threads",
]

logger = logging.getLogger(__name__)

AUDIO_TIME_BASE = fractions.Fraction(1, 48000)
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_DTX_KEEPALIVE = 20  # send one DTX frame out of this many (20 x 20 ms = 400 ms)

# packed RGB buffer types -> (libav pixel format, bytes per pixel)
AV_PACKED_FORMATS: dict[int, tuple[str, int]] = {
    VideoBufferType.RGBA: ("rgba", 4),
    VideoBufferType.BGRA: ("bgra", 4),
    VideoBufferType.ARGB: ("argb", 4),
    VideoBufferType.ABGR: ("abgr", 4),
    VideoBufferType.RGB24: ("rgb24", 3),
}


@dataclass
class AudioEncoderConfig:
    channels: int = 1
    bitrate: int = 32000
    dtx: bool = False


@dataclass
class VideoEncoderConfig:
    codec: VideoCodec = VideoCodec.VP8
    max_bitrate: int = 0  # 0: default_video_bitrate() of the frame size
    max_framerate: float = 0.0  # 0: no limit beyond the source rate
    simulcast: bool = False  # TrackPublishOptions.simulcast: layers by simulcast_specs()


def audio_config(options: TrackPublishOptions | None, source_channels: int) -> AudioEncoderConfig:
    channels = 2 if source_channels >= 2 else 1
    bitrate = 32000 * channels
    dtx = False
    if options is not None:
        if options.audio_encoding and options.audio_encoding.max_bitrate > 0:
            bitrate = int(options.audio_encoding.max_bitrate)
        dtx = bool(options.dtx)
    return AudioEncoderConfig(channels=channels, bitrate=max(6000, min(bitrate, 510000)), dtx=dtx)


def video_config(options: TrackPublishOptions | None) -> VideoEncoderConfig:
    if options is None:
        return VideoEncoderConfig()
    enc = options.video_encoding
    return VideoEncoderConfig(
        codec=VideoCodec(options.video_codec),
        max_bitrate=int(enc.max_bitrate) if enc and enc.max_bitrate > 0 else 0,
        max_framerate=float(enc.max_framerate) if enc and enc.max_framerate > 0 else 0.0,
        simulcast=bool(options.simulcast),
    )


def simulcast_specs(config: VideoEncoderConfig, width: int, height: int) -> list[LayerSpec]:
    """The simulcast layers of a ``width`` x ``height`` track (low to high); empty when
    simulcast is off, the size unknown, or the track too small for two layers."""
    if not config.simulcast or width <= 0 or height <= 0:
        return []
    fps = config.max_framerate or 30.0
    bitrate = config.max_bitrate or default_video_bitrate(width, height, fps)
    layers = simulcast_layers(width, height, bitrate, fps)
    return layers if len(layers) > 1 else []


_VIDEO_PRESETS = (  # (pixels, bitrate at 30 fps), close to LiveKit's h180..h1080 presets
    (320 * 180, 160_000),
    (640 * 360, 450_000),
    (960 * 540, 800_000),
    (1280 * 720, 1_700_000),
    (1920 * 1080, 3_000_000),
    (3840 * 2160, 8_000_000),
)


def default_video_bitrate(width: int, height: int, fps: float = 30.0) -> int:
    """Bitrate for a frame size, interpolated between LiveKit-like presets."""
    pixels = width * height
    pts = _VIDEO_PRESETS
    if pixels <= pts[0][0]:
        rate = pts[0][1] * pixels / pts[0][0]
    elif pixels >= pts[-1][0]:
        rate = pts[-1][1]
    else:
        for (p0, r0), (p1, r1) in itertools.pairwise(pts):
            if p0 <= pixels <= p1:
                rate = r0 + (r1 - r0) * (pixels - p0) / (p1 - p0)
                break
    rate *= max(0.3, min(fps, 60.0) / 30.0) ** 0.5
    return int(max(50_000, rate))


def _load_audioop() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import audioop  # stdlib up to 3.12, the audioop-lts package after
    except ImportError:
        return None
    return audioop


_audioop = _load_audioop()


def audio_level_dbov(pcm: bytes) -> int:
    """RFC 6464 level (0 = loudest, 127 = silence) of int16 PCM."""
    n = len(pcm) // 2
    if n == 0:
        return 127
    r = -1
    if _audioop is not None:
        # one C call: a tenth of numpy's cost on a cold cache (it runs once per packet);
        # its integer result is too coarse below -54 dBov, where numpy takes over
        r = _audioop.rms(pcm, 2)
        if r == 0 and _audioop.max(pcm, 2) == 0:
            return 127
    if r >= 64:
        rms = r / 32768.0
    else:
        x = np.frombuffer(pcm, dtype=np.int16, count=n).astype(np.float32)
        rms = math.sqrt(float(np.dot(x, x)) / n) / 32768.0
    if rms <= 1e-7:
        return 127
    return max(0, min(127, round(-20.0 * math.log10(rms))))


class OpusPacketEncoder:
    """20 ms PCM chunks in, Opus packets (48 kHz pts) out.

    At the Opus rates (8/12/16/24/48 kHz) libopus is called directly through
    :mod:`.opus_native` when it can be loaded; other rates (and the fallback) go through
    PyAV's ``libopus`` after a resampler. ``encode_payloads`` returns ``(bytes, pts)``
    pairs (the publish path); ``encode`` returns ``av.Packet`` s.
    """

    def __init__(self, sample_rate: int, channels: int, config: AudioEncoderConfig) -> None:
        self.config = config
        self._in_rate = sample_rate
        self._in_channels = channels
        self._layout = "stereo" if channels == 2 else "mono"
        enc_rate = sample_rate if sample_rate in _OPUS_RATES else 48000
        self._enc_rate = enc_rate
        self._resampler: Any = None
        self._native: opus_native.OpusEncoder | None = None
        self._codec: Any = None
        if enc_rate != sample_rate:
            self._resampler = av.AudioResampler(
                format="s16", layout=self._layout, rate=48000, frame_size=960
            )
        elif opus_native.available():
            try:
                self._native = opus_native.OpusEncoder(
                    enc_rate, channels, config.bitrate, voip=channels == 1, dtx=config.dtx
                )
            except (opus_native.OpusError, ValueError):
                logger.warning("native Opus encoder unavailable; using PyAV", exc_info=True)
        if self._native is None:
            self._codec = self._open_pyav()
        self._dtx_run = 0
        self._next_pts: int | None = None
        self.packets_out = 0

    @property
    def channels(self) -> int:
        """Channels encoded (the source's: mono stays mono on the wire)."""
        return self._in_channels

    @property
    def native(self) -> bool:
        """True when libopus is called directly (no PyAV objects per frame)."""
        return self._native is not None

    def _open_pyav(self) -> Any:
        codec: Any = av.CodecContext.create("libopus", "w")
        codec.sample_rate = self._enc_rate
        codec.layout = self._layout
        codec.format = "s16"
        codec.bit_rate = self.config.bitrate
        codec.time_base = fractions.Fraction(1, self._enc_rate)
        codec.options = {
            "application": "voip" if self._in_channels == 1 else "audio",
            "frame_duration": "20",
            "vbr": "constrained",
            "fec": "1",  # used by libopus once a packet-loss rate is known
            "dtx": "1" if self.config.dtx else "0",
        }
        codec.open()
        return codec

    def _sync_pts(self, pts: int) -> None:
        slack = 960 if self._resampler is None else 2880
        if self._next_pts is None or pts >= self._next_pts + slack:
            self._next_pts = pts

    def _keep(self, size: int) -> bool:
        """DTX: drop silence frames (<= 3 bytes) except one every ``_DTX_KEEPALIVE``."""
        if self.config.dtx and size <= 3:
            self._dtx_run += 1
            return self._dtx_run % _DTX_KEEPALIVE == 1
        self._dtx_run = 0
        return True

    def set_expected_loss(self, fraction: float) -> bool:
        """Tell the encoder the loss its receivers report (0..1), so that libopus sends
        in-band FEC for it; False when the encoder cannot change it (PyAV's, whose FEC
        stays at the loss rate it was opened with)."""
        if self._native is None:
            return False
        self._native.set_packet_loss(round(max(0.0, min(1.0, fraction)) * 100))
        return True

    def encode_payloads(self, pcm: bytes, pts: int) -> list[tuple[bytes, int]]:
        """Encode one chunk into ``(payload, pts)`` pairs; see :meth:`encode` for ``pts``."""
        native = self._native
        if native is None:
            return [(bytes(p), p.pts) for p in self.encode(pcm, pts)]
        self._sync_pts(pts)
        payload = native.encode(pcm)
        packet_pts = self._next_pts
        assert packet_pts is not None
        self._next_pts = packet_pts + 960
        if self.config.dtx and not self._keep(len(payload)):
            return []
        self.packets_out += 1
        return [(payload, packet_pts)]

    def encode(self, pcm: bytes, pts: int) -> list[Any]:
        """Encode one chunk; ``pts`` is the chunk's start on the 48 kHz clock.

        Packets get consecutive 20 ms timestamps; after a gap in the source clock (idle
        source, skipped tick) the timestamps jump to ``pts``.
        """
        if self._native is not None:
            out = []
            for payload, packet_pts in self.encode_payloads(pcm, pts):
                packet = av.Packet(payload)
                packet.pts = packet_pts
                packet.time_base = AUDIO_TIME_BASE
                out.append(packet)
            return out
        self._sync_pts(pts)
        arr = np.frombuffer(pcm, dtype=np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(arr, format="s16", layout=self._layout)
        frame.sample_rate = self._in_rate
        frames = [frame] if self._resampler is None else self._resampler.resample(frame)
        out = []
        for f in frames:
            for packet in self._codec.encode(f):
                next_pts = self._next_pts
                assert next_pts is not None
                self._next_pts = next_pts + 960
                if not self._keep(packet.size):
                    continue
                packet.pts = next_pts
                packet.time_base = AUDIO_TIME_BASE
                out.append(packet)
        self.packets_out += len(out)
        return out


class VideoConverter:
    """``VideoFrame`` -> yuv420p ``av.VideoFrame`` with one reused libswscale context.

    Packed RGB input is wrapped without a copy (``from_numpy_buffer``) and converted by
    libswscale's SIMD code on one thread (PyAV's default, 0, lets swscale start threads
    that cost more CPU than they save at camera sizes); I420 input with even dimensions is
    wrapped as it is. The result is only valid while the source frame's buffer is not
    changed (the encoder reads it at once).
    """

    def __init__(self) -> None:
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()

    def convert(self, frame: VideoFrame) -> Any:
        w, h, t = frame.width, frame.height, frame.type
        if t in AV_PACKED_FORMATS:
            fmt, n = AV_PACKED_FORMATS[t]
            arr = np.frombuffer(frame.data, dtype=np.uint8, count=w * h * n).reshape(h, w, n)
            src = av.VideoFrame.from_numpy_buffer(arr, format=fmt)
            return self._reformatter.reformat(src, format="yuv420p", threads=1)
        if t != VideoBufferType.I420:
            frame = frame.convert(VideoBufferType.I420)
        if w % 2 == 0 and h % 2 == 0:
            size = w * h * 3 // 2
            planes = np.frombuffer(frame.data, dtype=np.uint8, count=size).reshape(h * 3 // 2, w)
            return av.VideoFrame.from_numpy_buffer(planes, format="yuv420p")
        return _i420_copy(frame)


def _i420_copy(frame: VideoFrame) -> Any:
    """Odd-sized I420 copied plane by plane into a new ``av.VideoFrame``."""
    w, h = frame.width, frame.height
    out = av.VideoFrame(w, h, "yuv420p")
    src = np.frombuffer(frame.data, dtype=np.uint8)
    cw, ch = (w + 1) // 2, (h + 1) // 2
    off = 0
    for plane, (pw, ph) in zip(out.planes, ((w, h), (cw, ch), (cw, ch)), strict=True):
        buf: Any = plane
        dst = np.frombuffer(buf, dtype=np.uint8).reshape(-1, plane.line_size)
        dst[:ph, :pw] = src[off : off + pw * ph].reshape(ph, pw)
        off += pw * ph
    return out


def to_av_video_frame(frame: VideoFrame, converter: VideoConverter | None = None) -> Any:
    """An ``av.VideoFrame`` in yuv420p (what both encoders take) from a ``VideoFrame``."""
    return (converter or VideoConverter()).convert(frame)


def vp8_threads(width: int, height: int, cpus: int) -> int:
    """Encoder threads for a frame size, libwebrtc's rule for libvpx VP8: extra threads
    only on machines with cores to spare (they add CPU time, they do not save it)."""
    pixels = width * height
    if pixels >= 1920 * 1080 and cpus > 8:
        return 8
    if pixels > 1280 * 960 and cpus >= 6:
        return 3
    if pixels > 640 * 480 and cpus >= 3:
        return 2
    return 1


class VideoPacketEncoder:
    """yuv420p ``av.VideoFrame`` s in, ``av.Packet`` s (90 kHz pts) out; VP8 or H264."""

    def __init__(self, mime: str, bitrate: int, fps: float) -> None:
        mime = mime.lower()
        if mime not in ("video/vp8", "video/h264"):
            raise ValueError(f"unsupported video codec {mime!r}")
        self.mime = mime
        self.bitrate = int(bitrate)
        self.fps = float(fps) if fps > 0 else 30.0
        self._codec: Any = None
        self._size: tuple[int, int] | None = None
        self.keyframes = 0

    def _open(self, width: int, height: int) -> Any:
        fps = max(1, round(self.fps))
        if self.mime == "video/vp8":
            codec: Any = av.CodecContext.create("libvpx", "w")
            codec.options = {
                "deadline": "realtime",
                # negative: a fixed speed 6, as libwebrtc sets it; a positive value makes
                # libvpx pick its speed from the time left in the frame interval, using
                # up to (16 - n) / 16 of it
                "cpu-used": "-6",
                "lag-in-frames": "0",
                "minrate": str(self.bitrate),
                "maxrate": str(self.bitrate),
                "bufsize": str(self.bitrate),
                "undershoot-pct": "95",
                "overshoot-pct": "15",
                "static-thresh": "1",
                "error-resilient": "0",  # as libwebrtc without temporal layers
                "partitions": "0",
                "drop-threshold": "30",  # drop frames rather than overshoot (as WebRTC)
            }
            codec.qmin = 2
            codec.qmax = 56
            codec.thread_count = vp8_threads(width, height, os.cpu_count() or 1)
        else:
            codec = av.CodecContext.create("libx264", "w")
            codec.profile = "Baseline"
            codec.options = {
                "preset": "veryfast",
                "tune": "zerolatency",
                "level": "31" if width * height <= 1280 * 720 else "41",
                "forced-idr": "1",
                "maxrate": str(self.bitrate),
                "bufsize": str(self.bitrate),
            }
            codec.thread_count = 1 if width * height <= 640 * 480 else 2
        codec.width = width
        codec.height = height
        codec.pix_fmt = "yuv420p"
        codec.bit_rate = self.bitrate
        codec.time_base = VIDEO_TIME_BASE
        codec.framerate = fractions.Fraction(fps, 1)
        codec.gop_size = fps * 10
        codec.open()
        return codec

    def encode(self, frame: Any, pts: int, force_keyframe: bool) -> list[Any]:
        """Encode one yuv420p frame with ``pts`` on the 90 kHz clock."""
        if self.mime == "video/h264" and (frame.width % 2 or frame.height % 2):
            # x264 needs even dimensions for 4:2:0
            frame = frame.reformat(
                width=max(2, frame.width - frame.width % 2),
                height=max(2, frame.height - frame.height % 2),
            )
        size = (frame.width, frame.height)
        if self._codec is None or size != self._size:
            self._codec = self._open(*size)
            self._size = size
            force_keyframe = True
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        frame.pict_type = (
            av.video.frame.PictureType.I if force_keyframe else av.video.frame.PictureType.NONE
        )
        packets = list(self._codec.encode(frame))
        for p in packets:
            p.pts = pts
            p.time_base = VIDEO_TIME_BASE
            if p.is_keyframe:
                self.keyframes += 1
        return packets
