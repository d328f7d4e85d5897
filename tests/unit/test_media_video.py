"""VideoFrame sizes/planes/conversions and VideoSource latest-frame semantics."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from aiolivekit import (
    UnsupportedOptionError,
    VideoBufferType,
    VideoFrame,
    VideoRotation,
    VideoSource,
)
from aiolivekit.media.video_frame import buffer_size

T = VideoBufferType


@pytest.mark.parametrize(
    "t,w,h,size",
    [
        (T.RGBA, 5, 3, 60), (T.BGRA, 5, 3, 60), (T.ARGB, 5, 3, 60), (T.ABGR, 5, 3, 60),
        (T.RGB24, 5, 3, 45), (T.I420, 5, 3, 15 + 2 * 3 * 2), (T.NV12, 5, 3, 15 + 12),
        (T.I420A, 5, 3, 30 + 12), (T.I422, 5, 3, 15 + 2 * 3 * 3), (T.I444, 5, 3, 45),
        (T.I010, 5, 3, 30 + 24), (T.I420, 640, 480, 460800),
    ],
)
def test_buffer_sizes(t: VideoBufferType, w: int, h: int, size: int) -> None:
    assert buffer_size(t, w, h) == size
    f = VideoFrame(w, h, t, bytearray(size))
    with pytest.raises(ValueError):
        VideoFrame(w, h, t, bytearray(size - 1))
    for target in (T.RGBA, T.I420, T.NV12, T.I444, T.RGB24, T.BGRA, T.I010, T.I420A, T.I422):
        g = f.convert(target)
        assert (g.width, g.height, g.type) == (w, h, target)
        assert len(g.data) == buffer_size(target, w, h)


def test_planes() -> None:
    data = bytes(range(15)) + bytes([100] * 6) + bytes([200] * 6)
    f = VideoFrame(5, 3, T.I420, data)
    assert bytes(f.get_plane(0)) == bytes(range(15))  # type: ignore[arg-type]
    assert bytes(f.get_plane(1)) == bytes([100] * 6)  # type: ignore[arg-type]
    assert bytes(f.get_plane(2)) == bytes([200] * 6)  # type: ignore[arg-type]
    assert f.get_plane(3) is None
    assert VideoFrame(2, 2, T.RGBA, bytes(16)).get_plane(0) is None
    assert "rtc.VideoFrame(width=5, height=3, type=I420)" == repr(f)


def test_known_values_bt601() -> None:
    red = VideoFrame(4, 2, T.RGBA, bytes([255, 0, 0, 255]) * 8)
    i420 = red.convert(T.I420)
    assert list(bytes(i420.data)) == [82] * 8 + [90] * 2 + [240] * 2
    assert bytes(red.convert(T.BGRA).data) == bytes([0, 0, 255, 255]) * 8
    assert bytes(red.convert(T.ARGB).data) == bytes([255, 255, 0, 0]) * 8
    assert bytes(red.convert(T.RGB24).data) == bytes([255, 0, 0]) * 8
    white = VideoFrame(2, 2, T.RGB24, bytes([255]) * 12).convert(T.I420)
    assert list(bytes(white.data)) == [235] * 4 + [128, 128]


def test_rgba_i420_roundtrip() -> None:
    rng = np.random.default_rng(1)
    w, h = 64, 48
    # smooth image (chroma subsampling is lossy on sharp colour edges)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 4, yy * 5, (xx + yy) * 2, np.full_like(xx, 255)], axis=-1).astype(np.uint8)
    img[..., :3] = np.clip(img[..., :3].astype(int) + rng.integers(-2, 3, img[..., :3].shape), 0, 255)
    f = VideoFrame(w, h, T.RGBA, img.tobytes())
    for mid in (T.I420, T.NV12, T.I444, T.I010, T.I422):
        back = f.convert(mid).convert(T.RGBA)
        out = np.frombuffer(back.data, dtype=np.uint8).reshape(h, w, 4)
        err = np.abs(out.astype(int) - img.astype(int))
        assert err[..., 3].max() == 0
        assert err[..., :3].mean() < 3.0, (mid, err.mean())
        assert err[..., :3].max() <= 16, (mid, err.max())


def test_flip_y() -> None:
    img = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(3, 2, 4)
    f = VideoFrame(2, 3, T.RGBA, img.tobytes())
    flipped = np.frombuffer(f.convert(T.RGBA, flip_y=True).data, dtype=np.uint8).reshape(3, 2, 4)
    assert (flipped == img[::-1]).all()
    y = np.frombuffer(f.convert(T.I444, flip_y=True).get_plane(0), dtype=np.uint8).reshape(3, 2)  # type: ignore[arg-type]
    y0 = np.frombuffer(f.convert(T.I444).get_plane(0), dtype=np.uint8).reshape(3, 2)  # type: ignore[arg-type]
    assert (y == y0[::-1]).all()


async def test_video_source_keeps_latest() -> None:
    src = VideoSource(4, 4)
    woke = []
    src._add_sink(lambda: woke.append(1), asyncio.get_running_loop())
    frames = [VideoFrame(4, 4, T.RGBA, bytes([i]) * 64) for i in range(5)]
    for i, f in enumerate(frames):
        src.capture_frame(f, timestamp_us=i * 1000, rotation=VideoRotation.VIDEO_ROTATION_0)
    assert len(woke) == 5
    # frames are sent as captured: a rotation is refused, not silently dropped (issue 19)
    with pytest.raises(UnsupportedOptionError):
        src.capture_frame(frames[0], rotation=VideoRotation.VIDEO_ROTATION_90)
    assert len(woke) == 5
    latest = src._take_latest(0)
    assert latest is not None and latest.frame is frames[-1]
    assert (latest.timestamp_us, latest.rotation, latest.seq) == (4000, VideoRotation.VIDEO_ROTATION_0, 5)
    assert src._take_latest(latest.seq) is None
    # from another thread
    await asyncio.to_thread(src.capture_frame, frames[0])
    await asyncio.sleep(0.01)
    assert len(woke) == 6 and src._take_latest(5).frame is frames[0]  # type: ignore[union-attr]
    await src.aclose()
    src.capture_frame(frames[1])
    assert src._take_latest(0) is None


def test_video_frame_pydantic_roundtrip() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Msg(pydantic.BaseModel):
        frame: VideoFrame

    f = VideoFrame(3, 2, T.RGB24, bytes(range(18)))
    back = Msg.model_validate_json(Msg(frame=f).model_dump_json()).frame
    assert (back.width, back.height, back.type) == (3, 2, T.RGB24)
    assert bytes(back.data) == bytes(range(18))
    with pytest.raises(pydantic.ValidationError):
        Msg(frame={"width": 3, "height": 2, "type": int(T.RGBA), "data": ""})  # too small
