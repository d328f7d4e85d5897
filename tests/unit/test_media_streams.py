"""AudioStream / VideoStream over remote tracks fed by an in-process aiortc track."""

from __future__ import annotations

import asyncio
import fractions
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from aiolivekit import (
    AudioStream,
    RemoteAudioTrack,
    RemoteVideoTrack,
    TrackKind,
    VideoBufferType,
    VideoStream,
)


class ScriptedTrack(MediaStreamTrack):
    """Yields the given av frames (optionally paced), then ends like a closed remote track."""

    def __init__(self, kind: str, frames: list[Any], pace: float = 0.0) -> None:
        super().__init__()
        self.kind = kind
        self._frames = list(frames)
        self._pace = pace
        self.started = asyncio.Event()
        self.go = asyncio.Event()
        self.go.set()

    async def recv(self) -> Any:
        await self.go.wait()
        if not self._frames:
            raise MediaStreamError
        if self._pace:
            await asyncio.sleep(self._pace)
        return self._frames.pop(0)


def stereo_frames(freq_l: float, freq_r: float, n_frames: int, rate: int = 48000) -> list[Any]:
    out = []
    for i in range(n_frames):
        t = np.arange(i * 960, (i + 1) * 960) / rate
        left = (np.sin(2 * np.pi * freq_l * t) * 8000).astype(np.int16)
        r = (np.sin(2 * np.pi * freq_r * t) * 8000).astype(np.int16)
        f = av.AudioFrame.from_ndarray(np.stack([left, r], axis=1).reshape(1, -1), format="s16", layout="stereo")
        f.sample_rate = rate
        f.pts = i * 960
        f.time_base = fractions.Fraction(1, rate)
        out.append(f)
    return out


def dominant(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


async def collect(stream: Any, timeout: float = 5.0) -> list[Any]:
    async def run() -> list[Any]:
        return [ev async for ev in stream]
    return await asyncio.wait_for(run(), timeout)


async def test_audio_stream_resample_remix_recut() -> None:
    rtc = ScriptedTrack("audio", stereo_frames(500, 500, 50))
    rtc.go.clear()
    track = RemoteAudioTrack._from_rtc(rtc, sid="TR_a", name="a")
    assert track.kind == TrackKind.KIND_AUDIO and repr(track) == "rtc.RemoteAudioTrack(sid=TR_a, name=a)"
    mono16 = AudioStream(track, sample_rate=16000, num_channels=1, frame_size_ms=10)
    stereo = AudioStream.from_track(track=track, num_channels=2)
    rtc.go.set()
    evs = await collect(mono16)
    assert all(e.frame.sample_rate == 16000 and e.frame.num_channels == 1 for e in evs)
    assert all(e.frame.samples_per_channel == 160 for e in evs)
    x = np.concatenate([np.frombuffer(e.frame.data, dtype=np.int16) for e in evs])
    assert abs(len(x) - 16000) <= 320
    assert dominant(x[1000:], 16000) == pytest.approx(500, abs=5)
    st = await collect(stereo)
    assert len(st) == 50 and st[0].frame.num_channels == 2 and st[0].frame.samples_per_channel == 960


async def test_audio_stream_downmix_averages_channels() -> None:
    rtc = ScriptedTrack("audio", stereo_frames(300, 300, 5))
    rtc.go.clear()
    track = RemoteAudioTrack._from_rtc(rtc, sid="TR_b", name="b")
    stream = AudioStream(track)  # 48 kHz mono
    # right channel inverted: mono average must be silence
    for f in rtc._frames:
        arr = f.to_ndarray().reshape(-1, 2)
        arr[:, 1] = -arr[:, 0]
        f.planes[0].update(arr.reshape(-1).tobytes())
    rtc.go.set()
    evs = await collect(stream)
    x = np.concatenate([np.frombuffer(e.frame.data, dtype=np.int16) for e in evs])
    assert len(x) == 4800 and np.abs(x).max() <= 1


async def test_capacity_drops_oldest_and_aclose() -> None:
    frames = stereo_frames(400, 400, 20)
    for i, f in enumerate(frames):  # frame i holds the constant value i
        f.planes[0].update(np.full(1920, i, dtype=np.int16).tobytes())
    rtc = ScriptedTrack("audio", frames)
    rtc.go.clear()
    track = RemoteAudioTrack._from_rtc(rtc, sid="TR_c", name="c")
    stream = AudioStream(track, capacity=4, num_channels=2)
    rtc.go.set()
    await asyncio.sleep(0.1)  # the pump runs all 20 frames through; nobody reads
    assert stream.dropped == 16
    evs = await collect(stream)
    assert len(evs) == 4
    kept = [int(np.frombuffer(e.frame.data, dtype=np.int16)[0]) for e in evs]
    assert kept == [16, 17, 18, 19]  # the oldest were dropped
    # aclose ends iteration at once, even with frames buffered
    rtc2 = ScriptedTrack("audio", stereo_frames(400, 400, 500), pace=0.001)
    track2 = RemoteAudioTrack._from_rtc(rtc2, sid="TR_d", name="d")
    s2 = AudioStream(track2)
    await asyncio.sleep(0.05)
    await s2.aclose()
    with pytest.raises(StopAsyncIteration):
        await s2.__anext__()
    await track2._close()
    assert track2._pump_task is None


async def test_stream_needs_right_kind() -> None:
    rtc = ScriptedTrack("video", [])
    track = RemoteVideoTrack._from_rtc(rtc, sid="TR_v", name="v")
    with pytest.raises(TypeError):
        AudioStream(track)
    with pytest.raises(ValueError):
        AudioStream(None)
    await track._close()


def yuv_frames(n: int, w: int = 64, h: int = 48) -> list[Any]:
    out = []
    for i in range(n):
        img = np.zeros((h, w, 3), dtype=np.uint8)
        img[:, :, 0] = 200  # red-ish
        img[: h // 2, : w // 2, 2] = 255
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        f.pts = i * 3000
        f.time_base = fractions.Fraction(1, 90000)
        out.append(f)
    return out


async def test_video_stream_formats_and_timestamps() -> None:
    rtc = ScriptedTrack("video", yuv_frames(5))
    rtc.go.clear()
    track = RemoteVideoTrack._from_rtc(rtc, sid="TR_v", name="v")
    i420 = VideoStream(track)
    rgba = VideoStream.from_track(track=track, format=VideoBufferType.RGBA)
    bgra = VideoStream(track, format=VideoBufferType.BGRA)
    nv12 = VideoStream(track, format=VideoBufferType.NV12)
    rtc.go.set()
    a, b, c, d = await collect(i420), await collect(rgba), await collect(bgra), await collect(nv12)
    assert [e.timestamp_us for e in a] == [0, 33333, 66666, 100000, 133333]
    assert a[0].frame.type == VideoBufferType.I420 and len(a[0].frame.data) == 64 * 48 * 3 // 2
    px = np.frombuffer(b[0].frame.data, dtype=np.uint8).reshape(48, 64, 4)
    assert abs(int(px[40, 40, 0]) - 200) <= 4 and px[40, 40, 2] <= 4 and px[40, 40, 3] == 255
    assert abs(int(px[5, 5, 2]) - 255) <= 4
    qx = np.frombuffer(c[0].frame.data, dtype=np.uint8).reshape(48, 64, 4)
    assert (qx[..., [2, 1, 0, 3]] == px).all()
    assert d[0].frame.type == VideoBufferType.NV12
    assert bytes(d[0].frame.get_plane(0)) == bytes(a[0].frame.get_plane(0))  # type: ignore[arg-type]


class _Pub:
    def __init__(self, source: int, track: Any) -> None:
        self.source = source
        self.track = track


class _Participant:
    def __init__(self) -> None:
        self.track_publications: dict[str, _Pub] = {}
        self.disconnect_reason: Any = None


async def test_from_participant_follows_republish_and_ends_on_leave() -> None:
    from aiolivekit import DisconnectReason, TrackSource
    from aiolivekit.media.stream_base import publications_changed

    p = _Participant()
    stream = VideoStream.from_participant(participant=p, track_source=TrackSource.SOURCE_CAMERA)
    first = ScriptedTrack("video", yuv_frames(3), pace=0.01)
    first.go.clear()
    t1 = RemoteVideoTrack._from_rtc(first, sid="TR_1", name="cam")
    p.track_publications["TR_1"] = _Pub(TrackSource.SOURCE_SCREENSHARE, t1)  # other source
    publications_changed(p)
    await asyncio.sleep(0.1)
    assert not stream._queue
    p.track_publications["TR_1"].source = TrackSource.SOURCE_CAMERA
    publications_changed(p)
    await asyncio.sleep(0.05)
    first.go.set()
    got = [await asyncio.wait_for(stream.__anext__(), 2) for _ in range(3)]
    assert [e.timestamp_us for e in got] == [0, 33333, 66666]
    # track 1 ended; a re-published track 2 is picked up by the same stream
    second = ScriptedTrack("video", yuv_frames(2, w=32, h=16), pace=0.01)
    t2 = RemoteVideoTrack._from_rtc(second, sid="TR_2", name="cam")
    p.track_publications = {"TR_2": _Pub(TrackSource.SOURCE_CAMERA, t2)}
    publications_changed(p)
    ev = await asyncio.wait_for(stream.__anext__(), 2)
    assert (ev.frame.width, ev.frame.height) == (32, 16)
    p.disconnect_reason = DisconnectReason.CLIENT_INITIATED
    publications_changed(p)
    rest = await collect(stream, 2)  # ends after what was buffered
    assert len(rest) <= 1
    await t1._close()
    await t2._close()
