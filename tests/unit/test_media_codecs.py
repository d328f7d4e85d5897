"""Encoder configuration and the PyAV encoders used by local tracks."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest

from aiolivekit import (
    AudioEncoding,
    TrackPublishOptions,
    VideoBufferType,
    VideoCodec,
    VideoEncoding,
    VideoFrame,
)
from aiolivekit.media import codecs


def test_configs() -> None:
    assert codecs.audio_config(None, 1) == codecs.AudioEncoderConfig(1, 32000, False)
    assert codecs.audio_config(TrackPublishOptions(), 2).bitrate == 64000
    c = codecs.audio_config(TrackPublishOptions(audio_encoding=AudioEncoding(max_bitrate=24000), dtx=True), 1)
    assert (c.channels, c.bitrate, c.dtx) == (1, 24000, True)
    v = codecs.video_config(
        TrackPublishOptions(video_codec=VideoCodec.H264, video_encoding=VideoEncoding(max_bitrate=700_000, max_framerate=15))
    )
    assert (v.codec, v.max_bitrate, v.max_framerate) == (VideoCodec.H264, 700_000, 15.0)
    assert codecs.default_video_bitrate(640, 360) == 450_000
    assert codecs.default_video_bitrate(640, 360, 15) < 450_000
    assert codecs.default_video_bitrate(1280, 720) == 1_700_000
    assert 450_000 < codecs.default_video_bitrate(640, 480) < 800_000


def test_audio_level() -> None:
    assert codecs.audio_level_dbov(bytes(1920)) == 127
    full = (np.ones(960) * 32767).astype(np.int16).tobytes()
    assert codecs.audio_level_dbov(full) == 0
    x = (np.sin(np.arange(960) / 5) * 3277).astype(np.int16).tobytes()  # -20 dBFS peak, -23 rms
    assert codecs.audio_level_dbov(x) == pytest.approx(23, abs=1)


@pytest.mark.parametrize("rate,channels", [(48000, 1), (16000, 1), (48000, 2), (44100, 1)])
def test_opus_encoder_decodes_back(rate: int, channels: int) -> None:
    enc = codecs.OpusPacketEncoder(rate, channels, codecs.AudioEncoderConfig(channels, 32000 * channels))
    dec = av.CodecContext.create("libopus", "r")
    n = rate // 50
    pts_seen = []
    out = []
    for i in range(50):
        t = np.arange(i * n, (i + 1) * n) / rate
        x = (np.sin(2 * np.pi * 500 * t) * 8000).astype(np.int16)
        for p in enc.encode(np.repeat(x, channels).tobytes(), i * 960):
            assert p.time_base == codecs.AUDIO_TIME_BASE
            pts_seen.append(p.pts)
            # TOC byte: the stereo flag follows the configured channel count
            assert (bytes(p)[0] >> 2) & 1 == (1 if channels == 2 else 0)
            for f in dec.decode(p):
                a = f.to_ndarray()
                nch = len(f.layout.channels)
                first = a[0] if f.format.is_planar else a.reshape(-1, nch)[:, 0]
                out.append(first.astype(np.float64))
    assert len(pts_seen) >= 48
    assert all(b - a == 960 for a, b in itertools.pairwise(pts_seen))
    y = np.concatenate(out)[-24000:]
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.argmax(spec) * 48000 / len(y) == pytest.approx(500, abs=5)


@pytest.mark.parametrize("mime", ["video/vp8", "video/h264"])
def test_video_encoder_roundtrip(mime: str) -> None:
    w, h = 160, 120
    img = np.zeros((h, w, 4), dtype=np.uint8)
    img[:, : w // 2, 0] = 255  # left red, right blue
    img[:, w // 2 :, 2] = 255
    img[..., 3] = 255
    frame = VideoFrame(w, h, VideoBufferType.RGBA, img.tobytes())
    enc = codecs.VideoPacketEncoder(mime, 300_000, 30)
    dec = av.CodecContext.create("libvpx" if mime == "video/vp8" else "h264", "r")
    decoded = []
    for i in range(5):
        packets = enc.encode(codecs.to_av_video_frame(frame), i * 3000, force_keyframe=(i == 3))
        assert len(packets) == 1 and packets[0].pts == i * 3000
        for f in dec.decode(packets[0]):
            decoded.append(f.to_ndarray(format="rgb24"))
    assert enc.keyframes == 2  # the first frame and the forced one
    rgb = decoded[-1]
    assert rgb[h // 2, w // 4, 0] > 200 and rgb[h // 2, w // 4, 2] < 60
    assert rgb[h // 2, 3 * w // 4, 2] > 200 and rgb[h // 2, 3 * w // 4, 0] < 60


def test_to_av_frame_i420_odd_size() -> None:
    w, h = 5, 3
    data = bytes(range(15)) + bytes([100 + i for i in range(6)]) + bytes([200 + i for i in range(6)])
    f = codecs.to_av_video_frame(VideoFrame(w, h, VideoBufferType.I420, data))
    assert (f.width, f.height, f.format.name) == (5, 3, "yuv420p")
    y = np.frombuffer(f.planes[0], dtype=np.uint8).reshape(-1, f.planes[0].line_size)[:3, :5]
    assert bytes(y.tobytes()) == bytes(range(15))
    u = np.frombuffer(f.planes[1], dtype=np.uint8).reshape(-1, f.planes[1].line_size)[:2, :3]
    assert u.reshape(-1).tolist() == [100 + i for i in range(6)]


def test_converter_i420_even_size_plane_content() -> None:
    w, h = 8, 4
    y, u, v = bytes(range(32)), bytes(range(100, 108)), bytes(range(200, 208))
    f = codecs.VideoConverter().convert(VideoFrame(w, h, VideoBufferType.I420, y + u + v))
    assert (f.width, f.height, f.format.name) == (8, 4, "yuv420p")
    planes = [np.frombuffer(p, dtype=np.uint8).reshape(-1, p.line_size) for p in f.planes]
    assert planes[0][:4, :8].tobytes() == y
    assert planes[1][:2, :4].tobytes() == u and planes[2][:2, :4].tobytes() == v


@pytest.mark.parametrize("fmt", ["RGBA", "BGRA", "RGB24"])
def test_converter_packed_colours_and_reuse_across_sizes(fmt: str) -> None:
    """One converter (one swscale context) across frame sizes: limited-range BT.601 luma
    of pure red / white halves, and chroma of the red half well above 128 in V."""
    conv = codecs.VideoConverter()
    for w, h in ((64, 32), (32, 16), (64, 32)):
        n = 3 if fmt == "RGB24" else 4
        px = np.zeros((h, w, n), dtype=np.uint8)
        red = (0, 0, 255, 255) if fmt == "BGRA" else (255, 0, 0, 255)
        px[:, : w // 2] = red[:n]
        px[:, w // 2 :] = 255
        f = conv.convert(VideoFrame(w, h, VideoBufferType.Value(fmt), px.tobytes()))
        assert (f.width, f.height, f.format.name) == (w, h, "yuv420p")
        luma = np.frombuffer(f.planes[0], dtype=np.uint8).reshape(-1, f.planes[0].line_size)
        assert abs(int(luma[h // 2, w // 8]) - 82) <= 2  # red: 16 + 0.257 * 255
        assert abs(int(luma[h // 2, w - 2]) - 235) <= 2  # white
        vpl = np.frombuffer(f.planes[2], dtype=np.uint8).reshape(-1, f.planes[2].line_size)
        assert vpl[h // 4, w // 16] > 220 and abs(int(vpl[h // 4, w // 2 - 2]) - 128) <= 2


def test_vp8_threads_follow_libwebrtc() -> None:
    assert codecs.vp8_threads(1280, 720, 2) == 1  # this machine size: one thread
    assert codecs.vp8_threads(1920, 1080, 2) == 1
    assert codecs.vp8_threads(1280, 720, 4) == 2
    assert codecs.vp8_threads(640, 480, 16) == 1
    assert codecs.vp8_threads(1920, 1080, 6) == 3
    assert codecs.vp8_threads(1920, 1080, 16) == 8


@pytest.mark.parametrize("rate", [48000, 44100])
def test_opus_pts_continuous_and_gap(rate: int) -> None:
    enc = codecs.OpusPacketEncoder(rate, 1, codecs.AudioEncoderConfig())
    n = round(rate / 50)
    pts = []
    for i in list(range(100)) + list(range(400, 450)):  # 2 s, 6 s gap, 1 s
        x = (np.sin(np.arange(n) / 3) * 5000).astype(np.int16).tobytes()
        pts += [p.pts for p in enc.encode(x, i * 960)]
    diffs = [b - a for a, b in itertools.pairwise(pts)]
    assert all(d > 0 for d in diffs)
    assert diffs.count(960) >= len(diffs) - 2
    assert max(diffs) >= 290 * 960  # the gap shows up as a timestamp jump


@pytest.mark.parametrize("mime", ["video/vp8", "video/h264"])
def test_video_bitrate_cap_on_noise(mime: str) -> None:
    """Worst-case content stays near max_bitrate (VP8 drops frames rather than overshoot)."""
    rng = np.random.default_rng(0)
    enc = codecs.VideoPacketEncoder(mime, 300_000, 15)
    total = 0
    for i in range(60):  # 4 s at 15 fps
        img = rng.integers(0, 255, (240, 320, 4), dtype=np.uint8)
        frame = VideoFrame(320, 240, VideoBufferType.RGBA, img.tobytes())
        total += sum(p.size for p in enc.encode(codecs.to_av_video_frame(frame), i * 6000, False))
    kbps = total * 8 / 4 / 1000
    assert 100 < kbps < 300 * 1.4, kbps
