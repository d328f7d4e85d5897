"""AudioFrame, AudioResampler, AudioSource pacing."""

from __future__ import annotations

import asyncio
import io
import time
import wave

import numpy as np
import pytest

from aiolivekit import (
    AudioFrame,
    AudioResampler,
    AudioResamplerQuality,
    AudioSource,
    combine_audio_frames,
)


def tone(freq: float, rate: int, seconds: float, channels: int = 1, amp: int = 10000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = (np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)
    return np.repeat(x[:, None], channels, axis=1).reshape(-1)


def dominant(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


# ---------------------------------------------------------------- AudioFrame


def test_audio_frame_basics() -> None:
    f = AudioFrame.create(48000, 2, 480)
    assert f.data.format == "h" and len(f.data) == 960
    assert f.duration == pytest.approx(0.01)
    f.data[0] = 1234
    assert np.frombuffer(f.data, dtype=np.int16)[0] == 1234
    assert "rtc.AudioFrame(sample_rate=48000, num_channels=2, samples_per_channel=480" in repr(f)
    f2 = AudioFrame(b"\x01\x00\x02\x00", 8000, 1, 2, userdata={"k": 1})
    assert list(f2.data) == [1, 2] and f2.userdata == {"k": 1}


def test_audio_frame_validation() -> None:
    with pytest.raises(ValueError):
        AudioFrame(b"\x00" * 3, 48000, 1, 2)  # too short
    with pytest.raises(ValueError):
        AudioFrame(b"\x00" * 5, 48000, 1, 2)  # odd length
    with pytest.raises(TypeError):
        AudioFrame([0, 0], 48000, 1, 1)  # type: ignore[arg-type]
    arr = np.arange(10, dtype=np.int16)
    with pytest.raises(ValueError):
        AudioFrame(memoryview(arr)[::2], 48000, 1, 5)  # non-contiguous
    sliced = AudioFrame(memoryview(arr.tobytes())[4:], 48000, 1, 4)
    assert list(sliced.data) == [2, 3, 4, 5]


def test_wav_and_combine() -> None:
    a = AudioFrame(tone(440, 16000, 0.1).tobytes(), 16000, 1, 1600)
    b = AudioFrame(tone(440, 16000, 0.05).tobytes(), 16000, 1, 800)
    c = combine_audio_frames([a, b])
    assert c.samples_per_channel == 2400
    assert bytes(c.data.cast("B")) == bytes(a.data.cast("B")) + bytes(b.data.cast("B"))
    with wave.open(io.BytesIO(c.to_wav_bytes())) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (1, 16000, 2400)
        assert w.readframes(2400) == bytes(c.data.cast("B"))
    with pytest.raises(ValueError):
        combine_audio_frames([a, AudioFrame.create(8000, 1, 10)])
    with pytest.raises(ValueError):
        combine_audio_frames([])


# ---------------------------------------------------------------- resampler


def test_resampler_keeps_frequency() -> None:
    r = AudioResampler(48000, 16000, num_channels=1, quality=AudioResamplerQuality.HIGH)
    x = tone(1000, 48000, 1.0)
    out = []
    for i in range(0, len(x), 480):
        for f in r.push(AudioFrame(x[i : i + 480].tobytes(), 48000, 1, 480)):
            assert f.sample_rate == 16000
            out.append(np.frombuffer(f.data, dtype=np.int16))
    for f in r.flush():
        out.append(np.frombuffer(f.data, dtype=np.int16))
    y = np.concatenate(out)
    assert abs(len(y) - 16000) <= 64
    assert dominant(y, 16000) == pytest.approx(1000, abs=5)
    assert np.abs(y[2000:14000]).max() == pytest.approx(10000, rel=0.05)


def test_resampler_stereo_bytes_input() -> None:
    r = AudioResampler(16000, 48000, num_channels=2)
    x = tone(300, 16000, 0.5, channels=2)
    out = r.push(bytearray(x.tobytes())) + r.flush()
    y = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out]).reshape(-1, 2)
    assert out[0].num_channels == 2
    assert abs(len(y) - 24000) <= 64
    assert dominant(y[:, 0], 48000) == pytest.approx(300, abs=5)
    with pytest.raises(ValueError):
        r.push(AudioFrame.create(44100, 2, 10))


# ---------------------------------------------------------------- AudioSource


async def test_audio_source_paces_by_backpressure() -> None:
    src = AudioSource(48000, 1, queue_size_ms=100)
    got: list[tuple[int, float]] = []
    loop = asyncio.get_running_loop()
    src._add_sink(lambda pcm, pts: got.append((len(pcm), loop.time())))
    x = tone(440, 48000, 1.0)
    t0 = time.monotonic()
    for i in range(0, 48000, 480):  # 10 ms frames
        await src.capture_frame(AudioFrame(x[i : i + 480].tobytes(), 48000, 1, 480))
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed <= 1.0, elapsed
    assert src.queued_duration <= 0.1 + 1e-9
    await src.wait_for_playout()
    assert src.queued_duration == 0
    assert sum(n for n, _ in got) == 48000 * 2
    assert all(n == 960 * 2 for n, _ in got)
    span = got[-1][1] - got[0][1]
    assert span == pytest.approx(0.98, abs=0.08)  # 50 chunks of 20 ms in real time
    await src.aclose()


async def test_audio_source_clear_and_close() -> None:
    src = AudioSource(16000, 2, queue_size_ms=1000)
    await src.capture_frame(AudioFrame.create(16000, 2, 8000))  # 0.5 s, no block
    assert src.queued_duration == pytest.approx(0.5, abs=0.03)
    waiter = asyncio.ensure_future(src.wait_for_playout())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    src.clear_queue()
    await asyncio.wait_for(waiter, 1.0)
    with pytest.raises(ValueError):
        await src.capture_frame(AudioFrame.create(48000, 2, 480))
    await src.aclose()
    await asyncio.wait_for(src.capture_frame(AudioFrame.create(16000, 2, 80000)), 0.5)
    assert src.queued_duration == 0


def test_audio_frame_pydantic_roundtrip() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Msg(pydantic.BaseModel):
        frame: AudioFrame

    f = AudioFrame(tone(440, 16000, 0.01).tobytes(), 16000, 1, 160)
    dumped = Msg(frame=f).model_dump_json()
    back = Msg.model_validate_json(dumped).frame
    assert (back.sample_rate, back.num_channels, back.samples_per_channel) == (16000, 1, 160)
    assert bytes(back.data.cast("B")) == bytes(f.data.cast("B"))
    with pytest.raises(pydantic.ValidationError):
        Msg(frame=123)
