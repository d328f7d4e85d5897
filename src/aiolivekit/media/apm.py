"""``AudioProcessingModule``: high-pass filter, echo cancellation, noise suppression and
automatic gain control on 10 ms frames, in place, in numpy.

Why numpy and not a library: of the pip packages wrapping WebRTC's or Speex's audio
processing, none has a wheel for this platform that offers the four features:
``webrtc-audio-processing`` (2019) and ``aec-audio-processing`` ship source only (a SWIG /
C++ build), ``webrtc-apm`` has no installable distribution, the ``speexdsp`` bindings need
the system libspeexdsp and a compiler, and ``webrtc-noise-gain`` (a 27 MB binary wheel)
does noise suppression and gain at 16 kHz mono only, without echo cancellation or the
high-pass filter. So aiolivekit implements, per channel:

* high-pass filter: 4th-order Butterworth at 100 Hz (two biquads), run a whole frame at a
  time as matrix products (exact, stateful across frames);
* echo cancellation (``aec.EchoCanceller``): a frequency-domain adaptive filter over the
  far end given to ``process_reverse_stream`` (200 ms of echo path after the delay of
  ``set_stream_delay_ms``); no double-talk detector and no residual-echo suppressor, so
  near-end speech over far-end audio slows its convergence;
* noise suppression: STFT (sqrt-Hann, 50 % overlap, one 10 ms hop of delay), noise
  spectrum tracked by smoothed minima, decision-directed Wiener gain floored at -20 dB;
* automatic gain control: the frame RMS is brought towards -18 dBFS (gain between -10 dB
  and +30 dB, rising at most 0.5 dB and falling at most 2 dB per frame, interpolated in
  the frame, never above full scale); frames below -60 dBFS hold the gain.

The order is that of WebRTC's module: high-pass filter, echo cancellation, noise
suppression, gain control. Render frames (``process_reverse_stream``) must have the
capture frames' sample rate (no resampling here: ``ValueError``); several channels are
mixed down to one far-end signal. Without echo cancellation they are only checked.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .aec import EchoCanceller
from .audio_frame import AudioFrame

__all__ = ["AudioProcessingModule"]

logger = logging.getLogger(__name__)

HPF_CUTOFF_HZ = 100.0
AGC_TARGET_DBFS = -18.0
AGC_MAX_GAIN_DB = 30.0
AGC_MIN_GAIN_DB = -10.0
AGC_GATE_DBFS = -60.0
AGC_RISE_DB = 0.5
AGC_FALL_DB = 2.0
NS_GAIN_FLOOR = 0.1
NS_NOISE_RISE = 1.005  # per 10 ms frame: the noise estimate climbs ~2 dB/s at most


class _BlockBiquad:
    """One biquad run on a block of ``n`` samples as ``y = T @ x + Z @ state``.

    ``T`` is the (lower-triangular Toeplitz) impulse response, ``Z`` the response to the
    Direct Form I state ``(x[-1], x[-2], y[-1], y[-2])``; both are computed once per
    block size by running the recursion.
    """

    def __init__(self, b: tuple[float, float, float], a: tuple[float, float], n: int) -> None:
        self.n = n

        def run(x: list[float], state: list[float]) -> list[float]:
            x1, x2, y1, y2 = state
            out = []
            for v in x:
                y = b[0] * v + b[1] * x1 + b[2] * x2 - a[0] * y1 - a[1] * y2
                x2, x1, y2, y1 = x1, v, y1, y
                out.append(y)
            return out

        impulse = np.array(run([1.0] + [0.0] * (n - 1), [0.0] * 4))
        self.t = np.zeros((n, n))
        for i in range(n):
            self.t[i:, i] = impulse[: n - i]
        self.z = np.stack([np.array(run([0.0] * n, list(np.eye(4)[k]))) for k in range(4)],
                          axis=1)
        self.state = np.zeros(4)

    def process(self, x: np.ndarray) -> np.ndarray:
        y: np.ndarray = self.t @ x + self.z @ self.state
        self.state = np.array([x[-1], x[-2], y[-1], y[-2]])
        return y


def _butterworth_highpass(cutoff: float, rate: int) -> list[tuple[tuple[float, float, float],
                                                                  tuple[float, float]]]:
    """Coefficients ``(b, a)`` of a 4th-order Butterworth high-pass as two biquads."""
    w0 = 2 * math.pi * cutoff / rate
    sections = []
    for q in (1 / (2 * math.cos(math.pi / 8)), 1 / (2 * math.cos(3 * math.pi / 8))):
        alpha = math.sin(w0) / (2 * q)
        cos = math.cos(w0)
        a0 = 1 + alpha
        b = ((1 + cos) / 2 / a0, -(1 + cos) / a0, (1 + cos) / 2 / a0)
        a = (-2 * cos / a0, (1 - alpha) / a0)
        sections.append((b, a))
    return sections


class _Channel:
    """Processing state of one channel at one frame size."""

    def __init__(self, n: int, rate: int, echo: bool) -> None:
        self.aec = EchoCanceller(n) if echo else None
        self.hpf = [_BlockBiquad(b, a, n) for b, a in _butterworth_highpass(HPF_CUTOFF_HZ, rate)]
        self.window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2 * n) / (2 * n)))
        self.prev = np.zeros(n)
        self.tail = np.zeros(n)
        self.smoothed: np.ndarray | None = None
        self.noise: np.ndarray | None = None
        self.last_gain: np.ndarray | None = None
        self.last_post: np.ndarray | None = None

    def high_pass(self, x: np.ndarray) -> np.ndarray:
        for section in self.hpf:
            x = section.process(x)
        return x

    def suppress_noise(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        spectrum = np.fft.rfft(self.window * np.concatenate([self.prev, x]))
        self.prev = x
        power = spectrum.real ** 2 + spectrum.imag ** 2 + 1e-9
        if self.smoothed is None or self.noise is None:
            self.smoothed = power.copy()
            self.noise = power.copy()
        self.smoothed = 0.7 * self.smoothed + 0.3 * power
        self.noise = np.minimum(self.smoothed, self.noise * NS_NOISE_RISE)
        post = power / self.noise
        if self.last_gain is None or self.last_post is None:
            prior = np.maximum(post - 1.0, 0.0)
        else:
            prior = 0.98 * self.last_gain ** 2 * self.last_post \
                + 0.02 * np.maximum(post - 1.0, 0.0)
        gain = np.maximum(prior / (1.0 + prior), NS_GAIN_FLOOR)
        self.last_gain, self.last_post = gain, post
        y = np.fft.irfft(spectrum * gain, 2 * n) * self.window
        out = y[:n] + self.tail
        self.tail = y[n:]
        return out


class AudioProcessingModule:
    """Process ``AudioFrame`` s of 10 ms (or whole multiples) in place (see the module
    docstring)."""

    def __init__(
        self,
        *,
        echo_cancellation: bool = False,
        noise_suppression: bool = False,
        high_pass_filter: bool = False,
        auto_gain_control: bool = False,
    ) -> None:
        self._aec = bool(echo_cancellation)
        self._ns = bool(noise_suppression)
        self._hpf = bool(high_pass_filter)
        self._agc = bool(auto_gain_control)
        self._channels: list[_Channel] = []
        self._format: tuple[int, int, int] | None = None
        self._gain_db = 0.0
        self._delay_ms = 0
        self._far: list[tuple[int, np.ndarray]] = []  # (rate, mono block) not yet used

    def process_stream(self, data: AudioFrame) -> None:
        """Process a capture frame in place: 10 ms, or a whole number of 10 ms blocks (as
        livekit-agents gives it: 50 ms), processed block after block."""
        blocks = self._check(data)
        if not (self._aec or self._ns or self._hpf or self._agc):
            return
        n, ch = data.sample_rate // 100, data.num_channels
        key = (data.sample_rate, ch, n)
        if self._format != key:
            self._format = key
            self._channels = [_Channel(n, data.sample_rate, self._aec) for _ in range(ch)]
            for state in self._channels:
                if state.aec is not None:
                    state.aec.set_delay_ms(self._delay_ms)
        far, self._far = self._far, []
        for rate, block in far:
            if rate != data.sample_rate:
                raise ValueError(
                    f"render frames are {rate} Hz, capture frames {data.sample_rate} Hz: "
                    "AudioProcessingModule needs one rate for both")
            for state in self._channels:
                if state.aec is not None:
                    state.aec.push_far(block)
        total = n * blocks
        view = np.frombuffer(data.data, dtype=np.int16)[: total * ch]
        x = view.reshape(total, ch).astype(np.float64) / 32768.0
        for b in range(blocks):
            block = x[b * n:(b + 1) * n]
            for c, state in enumerate(self._channels):
                y = block[:, c]
                if self._hpf:
                    y = state.high_pass(y)
                if state.aec is not None:
                    y = state.aec.process(y)
                if self._ns:
                    y = state.suppress_noise(y)
                block[:, c] = y
            if self._agc:
                x[b * n:(b + 1) * n] = self._gain(block)
        out = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
        memoryview(data.data).cast("B")[: total * ch * 2] = out.tobytes()

    def process_reverse_stream(self, data: AudioFrame) -> None:
        """Give a render frame (what the speaker plays; 10 ms or a whole number of 10 ms
        blocks) to echo cancellation; the frame is not changed. Without echo cancellation
        it is only checked."""
        blocks = self._check(data)
        if not self._aec:
            return
        n, ch = data.sample_rate // 100, data.num_channels
        pcm = np.frombuffer(data.data, dtype=np.int16)[: n * blocks * ch].reshape(-1, ch)
        mono = pcm.mean(axis=1) / 32768.0
        for b in range(blocks):
            self._far.append((data.sample_rate, mono[b * n:(b + 1) * n]))
        if len(self._far) > 100:  # a second of render frames nobody captured against
            del self._far[:-100]

    def set_stream_delay_ms(self, delay_ms: int) -> None:
        """Delay between a frame's render and its echo's capture: echo cancellation looks
        for the echo from that delay (rounded down to 10 ms) on."""
        if int(delay_ms) < 0:
            raise ValueError("delay_ms must be >= 0")
        self._delay_ms = int(delay_ms)
        for state in self._channels:
            if state.aec is not None:
                state.aec.set_delay_ms(self._delay_ms)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _check(data: AudioFrame) -> int:
        """The number of 10 ms blocks in ``data``; ``ValueError`` if not a whole number."""
        if not isinstance(data, AudioFrame):
            raise TypeError(f"expected an AudioFrame, got {type(data).__name__}")
        n = data.sample_rate // 100
        if (data.sample_rate % 100 or data.samples_per_channel == 0
                or data.samples_per_channel % n):
            raise ValueError(
                f"AudioProcessingModule takes 10 ms frames (or whole multiples of 10 ms): "
                f"{data.sample_rate} Hz needs {n} samples per channel (or a multiple), got "
                f"{data.samples_per_channel}")
        if memoryview(data.data).readonly:
            raise ValueError("the frame is processed in place: its buffer must be writable")
        return data.samples_per_channel // n

    def _gain(self, x: np.ndarray) -> np.ndarray:
        rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
        level = 20 * math.log10(rms) if rms > 0 else -120.0
        start = self._gain_db
        if level > AGC_GATE_DBFS:
            want = min(max(AGC_TARGET_DBFS - level, AGC_MIN_GAIN_DB), AGC_MAX_GAIN_DB)
            step = min(max(want - start, -AGC_FALL_DB), AGC_RISE_DB)
            self._gain_db = start + step
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        limit = 20 * math.log10(0.999 / peak) if peak > 0 else math.inf  # full scale
        self._gain_db = min(self._gain_db, limit)
        ramp = np.minimum(np.linspace(start, self._gain_db, len(x)), limit)
        gains: np.ndarray = 10 ** (ramp / 20)
        out: np.ndarray = x * gains[:, None]
        return out
