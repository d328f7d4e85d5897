"""``AudioResampler``: stateful int16 sample-rate conversion (libswresample through PyAV)."""

from __future__ import annotations

import enum
import fractions
import logging
from typing import Any

from .audio_frame import AudioFrame

__all__ = ["AudioResampler", "AudioResamplerQuality"]

logger = logging.getLogger(__name__)


class AudioResamplerQuality(str, enum.Enum):
    QUICK = "quick"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    VERY_HIGH = "very_high"


# libswresample windowed-sinc filter length per quality (ffmpeg's default is 32).
_FILTER_SIZE = {
    AudioResamplerQuality.QUICK: 8,
    AudioResamplerQuality.LOW: 16,
    AudioResamplerQuality.MEDIUM: 32,
    AudioResamplerQuality.HIGH: 64,
    AudioResamplerQuality.VERY_HIGH: 128,
}


class AudioResampler:
    """Resample interleaved int16 audio from ``input_rate`` to ``output_rate``.

    ``push`` returns zero or one frame (the filter keeps a few samples of history);
    ``flush`` returns what is left. The channel count is kept.
    """

    def __init__(
        self,
        input_rate: int,
        output_rate: int,
        *,
        num_channels: int = 1,
        quality: AudioResamplerQuality = AudioResamplerQuality.MEDIUM,
    ) -> None:
        if input_rate <= 0 or output_rate <= 0:
            raise ValueError("sample rates must be > 0")
        if num_channels <= 0:
            raise ValueError("num_channels must be > 0")
        self._input_rate = int(input_rate)
        self._output_rate = int(output_rate)
        self._num_channels = int(num_channels)
        self._quality = AudioResamplerQuality(quality)
        self._pts = 0
        self._resampler: Any = None
        self._layout: Any = None

    def _ensure(self) -> Any:
        if self._resampler is None:
            import av

            names = {1: "mono", 2: "stereo"}
            layout: Any = names.get(self._num_channels) or self._num_channels
            self._layout = av.AudioLayout(layout)
            options = {"filter_size": str(_FILTER_SIZE[self._quality])}
            if self._quality in (AudioResamplerQuality.HIGH, AudioResamplerQuality.VERY_HIGH):
                options["cutoff"] = "0.97"
            self._resampler = av.AudioResampler(
                format="s16", layout=self._layout, rate=self._output_rate, options=options
            )
        return self._resampler

    def push(self, data: bytearray | bytes | memoryview | AudioFrame) -> list[AudioFrame]:
        """Feed samples (an ``AudioFrame`` or raw interleaved int16 bytes)."""
        import av
        import numpy as np

        if isinstance(data, AudioFrame):
            if data.num_channels != self._num_channels:
                raise ValueError(
                    f"expected {self._num_channels} channel(s), got {data.num_channels}"
                )
            if data.sample_rate != self._input_rate:
                raise ValueError(
                    f"expected sample rate {self._input_rate}, got {data.sample_rate}"
                )
            raw: Any = data.data
        else:
            raw = memoryview(data).cast("B")
            if len(raw) % (2 * self._num_channels):
                raise ValueError("data length is not a whole number of int16 sample frames")
        samples = np.frombuffer(raw, dtype=np.int16)
        if samples.size == 0:
            return []
        resampler = self._ensure()
        frame = av.AudioFrame.from_ndarray(
            samples.reshape(1, -1), format="s16", layout=self._layout
        )
        frame.sample_rate = self._input_rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self._input_rate)
        self._pts += samples.size // self._num_channels
        return self._collect(resampler.resample(frame))

    def flush(self) -> list[AudioFrame]:
        """Return the samples still held by the filter and reset the stream."""
        if self._resampler is None:
            return []
        out = self._collect(self._resampler.resample(None))
        self._resampler = None
        self._pts = 0
        return out

    def _collect(self, frames: list[Any]) -> list[AudioFrame]:
        chunks = []
        total = 0
        for f in frames:
            n = f.samples
            if n <= 0:
                continue
            chunks.append(bytes(f.planes[0])[: n * self._num_channels * 2])
            total += n
        if total == 0:
            return []
        return [
            AudioFrame(bytearray(b"".join(chunks)), self._output_rate, self._num_channels, total)
        ]
