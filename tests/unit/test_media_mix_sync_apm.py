"""AudioMixer, AVSynchronizer, combine_audio_frames and AudioProcessingModule on content:
frequencies in the mix, clipping, a silent stream's timeout, video pacing and A/V drift,
the high-pass filter on 50 Hz hum, gain control on a quiet tone, noise suppression on a
noisy tone, echo cancellation of a known echo path (and its stream delay), and the
resampler's quality levels against an ideal sine."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import numpy as np
import pytest

from aiolivekit import (
    AudioFrame,
    AudioMixer,
    AudioProcessingModule,
    AudioResampler,
    AudioResamplerQuality,
    AudioSource,
    AVSynchronizer,
    VideoBufferType,
    VideoFrame,
    VideoSource,
    combine_audio_frames,
)

SR = 48000


def tone(freq: float, seconds: float, amplitude: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return amplitude * np.sin(2 * np.pi * freq * t)


def to_frames(signal: np.ndarray, size: int, sr: int = SR) -> list[AudioFrame]:
    pcm = np.clip(np.round(signal * 32767), -32768, 32767).astype(np.int16)
    return [AudioFrame(bytearray(pcm[i:i + size].tobytes()), sr, 1, len(pcm[i:i + size]))
            for i in range(0, len(pcm), size)]


def samples(frames: list[AudioFrame]) -> np.ndarray:
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames]) / 32768.0


def peak_freqs(signal: np.ndarray, count: int, sr: int = SR) -> list[float]:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    freqs = np.fft.rfftfreq(len(signal), 1 / sr)
    found: list[float] = []
    for k in np.argsort(spectrum)[::-1]:
        if all(abs(freqs[k] - f) > 20 for f in found):
            found.append(float(freqs[k]))
        if len(found) == count:
            break
    return sorted(found)


def band_power(signal: np.ndarray, freq: float, sr: int = SR, width: float = 30) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal)))) ** 2
    freqs = np.fft.rfftfreq(len(signal), 1 / sr)
    return float(spectrum[np.abs(freqs - freq) < width].sum())


async def stream_of(frames: list[AudioFrame], delay: float = 0.0) -> AsyncIterator[AudioFrame]:
    for f in frames:
        if delay:
            await asyncio.sleep(delay)
        yield f


async def never() -> AsyncIterator[AudioFrame]:
    await asyncio.Event().wait()
    yield AudioFrame.create(SR, 1, 480)  # pragma: no cover - never reached


# ---------------------------------------------------------------------- AudioMixer


async def test_mixer_sums_two_tones_in_blocks() -> None:
    mixer = AudioMixer(SR, 1, blocksize=4800, capacity=4)
    mixer.add_stream(stream_of(to_frames(tone(440, 1.0, 0.25), 960)))
    mixer.add_stream(stream_of(to_frames(tone(1000, 1.0, 0.25), 480)))
    mixer.end_input()
    out = [f async for f in mixer]
    assert [f.samples_per_channel for f in out] == [4800] * 10
    mixed = samples(out)
    assert peak_freqs(mixed, 2) == pytest.approx([440, 1000], abs=5)
    # each tone keeps its level: the mix is the sample-wise sum
    expected = tone(440, 1.0, 0.25) + tone(1000, 1.0, 0.25)
    assert np.max(np.abs(mixed - expected)) < 3 / 32768
    assert band_power(mixed, 440) == pytest.approx(band_power(mixed, 1000), rel=0.05)


async def test_mixer_clips_and_zero_pads_a_short_stream() -> None:
    mixer = AudioMixer(SR, 1, blocksize=480)
    loud = np.full(960, 0.8)
    mixer.add_stream(stream_of(to_frames(loud, 480)))
    mixer.add_stream(stream_of(to_frames(np.full(720, 0.8), 720)))
    mixer.end_input()
    out = samples([f async for f in mixer])
    assert len(out) == 960
    assert np.all(out[:720] == 32767 / 32768)  # clipped, not wrapped around
    assert np.allclose(out[720:], 0.8, atol=1e-4)  # the short stream ended: only the other


async def test_mixer_leaves_out_a_silent_stream_after_its_timeout() -> None:
    mixer = AudioMixer(SR, 1, blocksize=480, stream_timeout_ms=50)
    mixer.add_stream(never())
    mixer.add_stream(stream_of(to_frames(tone(1000, 0.03, 0.5), 480)))
    loop = asyncio.get_running_loop()
    start = loop.time()
    got = [await asyncio.wait_for(mixer.__anext__(), 2) for _ in range(3)]
    elapsed = loop.time() - start
    await mixer.aclose()
    assert np.allclose(samples(got), tone(1000, 0.03, 0.5), atol=2 / 32768)
    assert 0.12 <= elapsed < 1.0  # each block waited ~50 ms for the silent stream
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(mixer.__anext__(), 1)


async def test_mixer_remove_stream_mid_way() -> None:
    mixer = AudioMixer(SR, 1, blocksize=480, stream_timeout_ms=200)
    # 20 ms between frames: the second block cannot be mixed before remove_stream
    keep = stream_of(to_frames(tone(1000, 0.1, 0.3), 480), delay=0.02)
    drop = stream_of(to_frames(tone(440, 0.1, 0.3), 480), delay=0.02)
    mixer.add_stream(keep)
    mixer.add_stream(drop)
    first = await asyncio.wait_for(mixer.__anext__(), 2)
    assert peak_freqs(samples([first]), 2) == pytest.approx([440, 1000], abs=60)
    mixer.remove_stream(drop)
    mixer.end_input()
    rest = samples([f async for f in mixer])
    assert len(rest) == 9 * 480
    assert np.allclose(rest, tone(1000, 0.1, 0.3)[480:], atol=2 / 32768)


async def test_mixer_refuses_a_frame_of_another_rate() -> None:
    mixer = AudioMixer(SR, 1, blocksize=480)
    mixer.add_stream(stream_of([AudioFrame.create(16000, 1, 160)]))
    with pytest.raises(ValueError, match="16000 Hz"):
        await asyncio.wait_for(mixer.__anext__(), 2)
    mixer.end_input()
    with pytest.raises(RuntimeError):
        mixer.add_stream(stream_of([]))


# ---------------------------------------------------------------------- AVSynchronizer


class RecordingVideoSource(VideoSource):
    def __init__(self) -> None:
        super().__init__(16, 16)
        self.sent: list[tuple[float, int]] = []

    def capture_frame(self, frame: VideoFrame, **kwargs: object) -> None:  # type: ignore[override]
        self.sent.append((asyncio.get_running_loop().time(), int(kwargs["timestamp_us"])))  # type: ignore[call-overload]
        super().capture_frame(frame, **kwargs)  # type: ignore[arg-type]


def video_frame() -> VideoFrame:
    return VideoFrame(16, 16, VideoBufferType.RGBA, bytearray(16 * 16 * 4))


async def test_synchronizer_paces_video_at_fps() -> None:
    video = RecordingVideoSource()
    sync = AVSynchronizer(audio_source=AudioSource(SR, 1), video_source=video, video_fps=20)
    for _ in range(20):
        await sync.push(video_frame())
    await asyncio.wait_for(sync.wait_for_playout(), 5)
    await sync.aclose()
    times = [t for t, _ in video.sent]
    gaps = np.diff(times)
    assert len(times) == 20
    assert np.median(gaps) == pytest.approx(0.05, abs=0.01)
    assert times[-1] - times[0] == pytest.approx(19 * 0.05, abs=0.1)
    assert [ts for _, ts in video.sent] == [round(i * 50_000) for i in range(20)]
    assert sync.actual_fps == pytest.approx(20, rel=0.2)
    assert sync.last_video_time == pytest.approx(0.95)


async def test_synchronizer_keeps_video_with_audio() -> None:
    audio = AudioSource(SR, 1, queue_size_ms=200)
    video = RecordingVideoSource()
    sync = AVSynchronizer(audio_source=audio, video_source=video, video_fps=25,
                          _max_delay_tolerance_ms=100)
    loop = asyncio.get_running_loop()
    start = loop.time()
    played: list[tuple[float, float]] = []  # (loop time, audio media time played out)

    async def push_audio() -> None:
        for f in to_frames(tone(440, 1.5, 0.1), 480):
            await sync.push(f)
            played.append((loop.time(), sync.last_audio_time - audio.queued_duration))

    async def push_video() -> None:
        for _ in range(int(1.5 * 25)):
            await sync.push(video_frame())

    await asyncio.wait_for(asyncio.gather(push_audio(), push_video()), 5)
    await asyncio.wait_for(sync.wait_for_playout(), 5)
    await sync.aclose()
    assert sync.last_audio_time == pytest.approx(1.5)
    # at each video frame's send time, the audio played out is within the tolerance
    for sent_at, ts in video.sent:
        before = [p for t, p in played if t <= sent_at]
        playhead = before[-1] if before else 0.0
        assert ts / 1e6 - playhead < 0.1 + 0.05, (sent_at - start, ts, playhead)
    assert video.sent[-1][0] - start == pytest.approx(1.5, abs=0.3)


# ---------------------------------------------------------------------- combine_audio_frames


def test_combine_audio_frames_concatenates_in_order() -> None:
    frames = to_frames(np.linspace(-0.5, 0.5, 1000), 300)
    combined = combine_audio_frames(frames)
    assert combined.samples_per_channel == 1000
    assert np.array_equal(samples([combined]), samples(frames))
    assert combine_audio_frames(frames[0]) is frames[0]
    with pytest.raises(ValueError):
        combine_audio_frames([])
    with pytest.raises(ValueError, match="Sample rate"):
        combine_audio_frames([frames[0], AudioFrame.create(16000, 1, 160)])
    with pytest.raises(ValueError, match="Channel"):
        combine_audio_frames([frames[0], AudioFrame.create(SR, 2, 480)])


# ---------------------------------------------------------------------- APM


def process(apm: AudioProcessingModule, signal: np.ndarray, sr: int = SR) -> np.ndarray:
    frames = to_frames(signal, sr // 100, sr)
    for f in frames:
        apm.process_stream(f)
    return samples(frames)


@pytest.mark.parametrize("sr", [16000, 48000])
def test_apm_high_pass_filter_removes_hum(sr: int) -> None:
    signal = tone(50, 2, 0.3, sr) + tone(1000, 2, 0.3, sr)
    out = process(AudioProcessingModule(high_pass_filter=True), signal, sr)
    hum = 10 * np.log10(band_power(out[sr:], 50, sr) / band_power(signal[sr:], 50, sr))
    voice = 10 * np.log10(band_power(out[sr:], 1000, sr) / band_power(signal[sr:], 1000, sr))
    assert hum < -20
    assert abs(voice) < 0.5


def test_apm_gain_control_raises_a_quiet_tone() -> None:
    signal = tone(440, 3, 0.01)  # -43 dBFS RMS
    out = process(AudioProcessingModule(auto_gain_control=True), signal)
    rms_in = 20 * np.log10(np.sqrt(np.mean(signal[-SR:] ** 2)))
    rms_out = 20 * np.log10(np.sqrt(np.mean(out[-SR:] ** 2)))
    assert rms_out == pytest.approx(-18, abs=1.5)
    assert rms_out - rms_in > 20
    assert peak_freqs(out[-SR:], 1) == pytest.approx([440], abs=3)
    # loud audio is not pushed past full scale
    loud = process(AudioProcessingModule(auto_gain_control=True), tone(440, 1, 0.99))
    assert np.max(np.abs(loud)) <= 1.0 and np.sqrt(np.mean(loud[-SR // 2:] ** 2)) < 0.99


def test_apm_noise_suppression_lowers_noise_keeps_tone() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(3 * SR) / SR
    noise = 0.05 * rng.standard_normal(len(t))
    clean = tone(1000, 3, 0.3) * (t >= 1.0)  # noise alone first, then the tone in it
    out = process(AudioProcessingModule(noise_suppression=True), clean + noise)
    noisy = (clean + noise)[2 * SR:]
    total_in = float(np.sum(np.abs(np.fft.rfft(noisy * np.hanning(SR))) ** 2))
    total_out = float(np.sum(np.abs(np.fft.rfft(out[2 * SR:] * np.hanning(SR))) ** 2))
    noise_in = total_in - band_power(noisy, 1000)
    noise_out = total_out - band_power(out[2 * SR:], 1000)
    assert 10 * np.log10(noise_out / noise_in) < -10
    kept = 10 * np.log10(band_power(out[2 * SR:], 1000) / band_power(noisy, 1000))
    assert abs(kept) < 1.0


def run_echo(apm: AudioProcessingModule, far: np.ndarray, near: np.ndarray,
             sr: int) -> np.ndarray:
    n = sr // 100
    out = []
    for i in range(0, len(far), n):
        apm.process_reverse_stream(to_frames(far[i:i + n], n, sr)[0])
        frame = to_frames(near[i:i + n], n, sr)[0]
        apm.process_stream(frame)
        out.append(samples([frame]))
    return np.concatenate(out)


def echo_of(far: np.ndarray, sr: int, delay_ms: int) -> np.ndarray:
    path = np.zeros(int(sr * (delay_ms + 30) / 1000))
    path[int(sr * delay_ms / 1000)] = 0.5
    path[int(sr * (delay_ms + 20) / 1000)] = -0.2
    return np.convolve(far, path)[: len(far)]


def erle_db(near: np.ndarray, out: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(near ** 2) / np.mean(out ** 2)))


def test_apm_echo_cancellation_removes_a_known_echo_keeps_near_speech() -> None:
    sr = 16000
    rng = np.random.default_rng(11)
    far = np.convolve(0.3 * rng.standard_normal(4 * sr), np.ones(3) / 3, "same")
    far[3 * sr:] = 0.0  # the far end stops; the near end talks
    near = echo_of(far, sr, 40) + 0.0005 * rng.standard_normal(len(far))
    talk = tone(700, 1, 0.2, sr)
    near[3 * sr:] += talk
    out = run_echo(AudioProcessingModule(echo_cancellation=True), far, near, sr)
    # echo alone, after two seconds of convergence: reduced by at least 20 dB
    assert erle_db(near[2 * sr:3 * sr], out[2 * sr:3 * sr]) > 20
    # near-end speech with a silent far end passes (the echo tail aside) at its level
    kept = out[3 * sr + sr // 10:]
    assert 20 * np.log10(np.std(kept) / np.std(talk[sr // 10:])) == pytest.approx(0, abs=0.5)
    assert peak_freqs(kept, 1, sr) == pytest.approx([700], abs=5)


def test_apm_echo_cancellation_uses_the_stream_delay() -> None:
    sr = 16000
    rng = np.random.default_rng(5)
    far = 0.3 * rng.standard_normal(3 * sr)
    near = echo_of(far, sr, 250)  # beyond the 200 ms the filter spans
    without = run_echo(AudioProcessingModule(echo_cancellation=True), far, near, sr)
    apm = AudioProcessingModule(echo_cancellation=True)
    apm.set_stream_delay_ms(100)
    with_delay = run_echo(apm, far, near, sr)
    assert erle_db(near[2 * sr:], without[2 * sr:]) < 3
    assert erle_db(near[2 * sr:], with_delay[2 * sr:]) > 20


def test_apm_long_frames_are_processed_as_10ms_blocks() -> None:
    # livekit-agents' RoomIO gives the APM (auto_gain_control=True) 50 ms frames
    sr = 24000
    rng = np.random.default_rng(7)
    signal = (0.02 * rng.standard_normal(sr) * 32767).astype(np.int16)  # 1 s, quiet noise
    opts = {"noise_suppression": True, "high_pass_filter": True, "auto_gain_control": True}
    by10, by50 = AudioProcessingModule(**opts), AudioProcessingModule(**opts)
    out10, out50 = [], []
    for i in range(0, sr, sr // 100):
        f = AudioFrame(bytearray(signal[i:i + sr // 100].tobytes()), sr, 1, sr // 100)
        by10.process_stream(f)
        out10.append(np.frombuffer(f.data, np.int16).copy())
    for i in range(0, sr, sr // 20):
        f = AudioFrame(bytearray(signal[i:i + sr // 20].tobytes()), sr, 1, sr // 20)
        by50.process_stream(f)
        out50.append(np.frombuffer(f.data, np.int16).copy())
    a, b = np.concatenate(out10), np.concatenate(out50)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, signal)  # it did process


def test_apm_refuses_bad_frames() -> None:
    apm = AudioProcessingModule(noise_suppression=True, echo_cancellation=True)
    with pytest.raises(ValueError, match="10 ms"):
        apm.process_stream(AudioFrame.create(SR, 1, 720))  # 15 ms: not whole 10 ms blocks
    with pytest.raises(ValueError, match="10 ms"):
        apm.process_stream(AudioFrame.create(SR, 1, 0))
    with pytest.raises(ValueError, match="10 ms"):
        apm.process_reverse_stream(AudioFrame.create(SR, 1, 481))
    with pytest.raises(ValueError, match="writable"):
        apm.process_stream(AudioFrame(bytes(960), SR, 1, 480))
    with pytest.raises(ValueError, match=">= 0"):
        apm.set_stream_delay_ms(-1)
    apm.process_reverse_stream(AudioFrame.create(16000, 1, 160))
    with pytest.raises(ValueError, match="one rate"):
        apm.process_stream(AudioFrame.create(SR, 1, 480))


# ---------------------------------------------------------------------- AudioResampler


def resample(quality: AudioResamplerQuality, signal: np.ndarray) -> np.ndarray:
    r = AudioResampler(48000, 16000, quality=quality)
    out = [f for chunk in to_frames(signal, 480) for f in r.push(chunk)] + r.flush()
    return samples(out)


def level_db(signal: np.ndarray, amplitude: float) -> float:
    rms = float(np.sqrt(np.mean(signal[2000:-2000] ** 2)))
    return 20 * np.log10(max(rms, 1e-12) / (amplitude / np.sqrt(2)))


def test_resampler_quality_levels_against_a_reference() -> None:
    """48 kHz -> 16 kHz at each quality: a 1 kHz tone matches the ideal sine (least-squares
    fit of phase and amplitude), a 10 kHz tone (above the new Nyquist) is filtered out,
    and the passband edge (7 kHz) is flatter the higher the quality."""
    aliasing, edge = {}, {}
    for quality in AudioResamplerQuality:
        out = resample(quality, tone(1000, 1, 0.5))
        assert len(out) == 16000
        seg = out[2000:-2000]
        t = np.arange(2000, 14000) / 16000
        basis = np.stack([np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)], 1)
        fit = basis @ np.linalg.lstsq(basis, seg, rcond=None)[0]
        assert 10 * np.log10(np.mean(fit ** 2) / np.mean((seg - fit) ** 2)) > 80, quality
        assert level_db(fit, 0.5) == pytest.approx(0, abs=0.05)
        aliasing[quality] = level_db(resample(quality, tone(10000, 1, 0.5)), 0.5)
        edge[quality] = level_db(resample(quality, tone(7000, 1, 0.5)), 0.5)
    q = AudioResamplerQuality
    assert aliasing[q.QUICK] < -15 and aliasing[q.LOW] < -40
    assert max(aliasing[q.MEDIUM], aliasing[q.HIGH], aliasing[q.VERY_HIGH]) < -80
    order = [edge[k] for k in (q.QUICK, q.LOW, q.MEDIUM, q.HIGH, q.VERY_HIGH)]
    assert all(b >= a - 0.01 for a, b in itertools.pairwise(order)), order  # never worse
    assert order[0] < -3 and order[2] - order[0] > 2.5 and abs(order[-1]) < 0.1
