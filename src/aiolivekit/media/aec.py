"""Acoustic echo cancellation for ``AudioProcessingModule``: a partitioned-block
frequency-domain adaptive filter (overlap-save, normalised LMS, gradient-constrained).

The far end (what the speaker plays: ``process_reverse_stream``) is kept as the spectra
of its last blocks; each capture block (``process_stream``) is predicted from them by the
adaptive filter and the prediction is subtracted. The filter spans ``TAIL_MS`` of echo
path after the stream delay (``set_stream_delay_ms``, rounded down to whole blocks).
While the near end talks over the far end (double talk) the filter adapts more slowly: the
step is scaled down when the error is much louder than the predicted echo.

Sans-I/O and clock-free: one block of samples in, one block out; blocks are 10 ms.
"""

from __future__ import annotations

import collections
import logging

import numpy as np

__all__ = ["EchoCanceller"]

logger = logging.getLogger(__name__)

TAIL_MS = 200
STEP = 1.0
POWER_SMOOTHING = 0.9
REGULARISATION = 1e-6


class EchoCanceller:
    """Echo canceller for one channel of ``n``-sample (10 ms) blocks."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.partitions = max(1, TAIL_MS // 10)
        self.delay_blocks = 0
        bins = n + 1
        self.weights = np.zeros((self.partitions, bins), dtype=np.complex128)
        self.far_spectra: collections.deque[np.ndarray] = collections.deque()
        self.far_pending: collections.deque[np.ndarray] = collections.deque()
        self.last_far = np.zeros(n)
        self.power = np.full(bins, REGULARISATION)

    def set_delay_ms(self, delay_ms: int) -> None:
        self.delay_blocks = max(0, int(delay_ms) // 10)

    def push_far(self, x: np.ndarray) -> None:
        """A block of the far end, in play-out order."""
        self.far_pending.append(np.asarray(x, dtype=np.float64))
        # a far end pushed much faster than captures are processed: keep the newest
        limit = self.partitions + self.delay_blocks + 50
        while len(self.far_pending) > limit:
            self.far_pending.popleft()

    def _next_far_spectrum(self) -> None:
        block = self.far_pending.popleft() if self.far_pending else np.zeros(self.n)
        spectrum = np.fft.rfft(np.concatenate([self.last_far, block]))
        self.last_far = block
        self.far_spectra.appendleft(spectrum)
        keep = self.partitions + self.delay_blocks
        while len(self.far_spectra) > keep:
            self.far_spectra.pop()

    def process(self, d: np.ndarray) -> np.ndarray:
        """Return the capture block ``d`` with the predicted echo removed."""
        n = self.n
        self._next_far_spectrum()
        spectra = list(self.far_spectra)[self.delay_blocks:]
        if not spectra:
            return d
        x = np.zeros((self.partitions, n + 1), dtype=np.complex128)
        x[: len(spectra)] = spectra
        echo = np.fft.irfft(np.sum(self.weights * x, axis=0), 2 * n)[n:]
        e = d - echo
        newest = np.abs(x[0]) ** 2
        self.power = POWER_SMOOTHING * self.power + (1 - POWER_SMOOTHING) * newest
        if float(np.sum(self.power)) < REGULARISATION * len(self.power) * 10:
            return e  # no far end: nothing to learn from
        step = STEP
        big_e = np.fft.rfft(np.concatenate([np.zeros(n), e]))
        norm = self.partitions * self.power + REGULARISATION
        gradient = np.conj(x) * big_e / norm
        self.weights += step * gradient
        # gradient constraint: each partition stays a causal n-tap filter
        taps = np.fft.irfft(self.weights, 2 * n, axis=1)
        taps[:, n:] = 0.0
        self.weights = np.fft.rfft(taps, axis=1)
        return e
