"""``livekit.rtc.utils``: ``combine_audio_frames`` and ``sine_wave_generator``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..media.audio_frame import AudioFrame, combine_audio_frames

__all__ = ["combine_audio_frames", "sine_wave_generator"]


async def sine_wave_generator(freq: float, duration: float, sample_rate: int = 48000,
                              amplitude: float = 0.3) -> AsyncIterator[AudioFrame]:
    """Mono 100 ms frames of a sine wave of ``freq`` Hz lasting ``duration`` seconds (the
    phase runs on across frames; the last frame may be shorter)."""
    import numpy as np

    if sample_rate <= 0 or duration < 0:
        raise ValueError("sample_rate must be > 0 and duration >= 0")
    total = round(duration * sample_rate)
    block = sample_rate // 10
    for start in range(0, total, block):
        n = min(block, total - start)
        t = (np.arange(n) + start) / sample_rate
        pcm = np.round(amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        yield AudioFrame(bytearray(pcm.tobytes()), sample_rate, 1, n)
