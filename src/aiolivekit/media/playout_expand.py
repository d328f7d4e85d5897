"""Concealment beyond libopus' PLC for the playout buffer (:mod:`.playout`), sans-I/O:
NetEq's expand, simplified. The last 40 ms of produced audio are kept; a concealment run
that outlasts libopus' PLC repeats their last pitch period, fading 1 dB per 10 ms; the
next decoded audio is joined to it in phase (:mod:`.timescale`)."""

from __future__ import annotations

import numpy as np

from . import timescale

__all__ = ["PitchExtension"]


class PitchExtension:
    """The produced audio's recent history and the running extension (if any)."""

    def __init__(self, rate: int, channels: int, quiet_level: int) -> None:
        self.rate = rate
        self.channels = channels
        self.quiet_level = quiet_level
        self._decay = 10 ** (-1 / 20 / (rate / 100))  # 1 dB per 10 ms
        self._keep = rate * 40 // 1000 * channels
        self.reset()

    def reset(self) -> None:
        self._hist = np.zeros(0, dtype=np.int16)  # the last produced audio (40 ms)
        self.period = 0  # pitch period of the running extension (0: none)
        self._hold = 0  # samples (per channel) still to repeat before the fade begins
        # decoded samples the next join replaces by the extension: the decoder skipped
        # lost packets and settles for a few ms (its overlap and pitch history belong to
        # audio before the gap: the tone dips by up to 8 dB, depending on the phase)
        self.settle = 0

    def remember(self, pcm: bytes) -> None:
        """Keep the last 40 ms of produced audio (the extension's source)."""
        x = np.frombuffer(pcm, dtype=np.int16)
        if len(x) >= self._keep:
            self._hist = x[-self._keep:].copy()
        else:
            self._hist = np.concatenate([self._hist, x])[-self._keep:]

    def start(self, hold: int = 0) -> int:
        """Start an extension: the pitch period (samples) of the last produced audio,
        0 (none) if it is not periodic. ``hold``: samples repeated at full level before
        the fade begins (the part libopus' PLC covers when it runs first)."""
        h = self._hist.reshape(-1, self.channels).astype(np.float64).mean(axis=1)
        n = self.rate // 200  # match the last 5 ms, lags 2.5 .. 15 ms
        self.period = timescale.find_period(h, self.rate // 400, self.rate * 15 // 1000, n,
                                            n * self.quiet_level**2)
        self._hold = hold if self.period else 0
        return self.period

    def samples(self, count: int) -> bytes:
        """``count`` more samples (per channel) of the running extension, fading."""
        hist = self._hist.reshape(-1, self.channels).astype(np.float64)
        held = min(count, self._hold)
        self._hold -= held
        y = timescale.extend(hist, self.period, count, self._decay, hold=held)
        return timescale.to_int16(y).tobytes()

    def join(self, pcm: bytes) -> tuple[bytes, int]:
        """Decoded audio after the running extension (which then ends): the decoder did
        not follow the extension, so the two are out of phase. The extension runs on for
        up to one more period, to where it is in phase with the decoded audio, and 10 ms
        are cross-faded there. Returns the audio and how many samples were added."""
        ch, period, n = self.channels, self.period, self.rate // 100
        x = np.frombuffer(pcm, dtype=np.int16).reshape(-1, ch).astype(np.float64)
        m = max(0, min(self.settle, len(x) - n))
        self.settle = 0
        if len(x) < n:
            self.period = 0
            return pcm, 0
        ext = np.frombuffer(self.samples(m + period + n), dtype=np.int16)
        ext = ext.reshape(-1, ch).astype(np.float64)
        self.period = self._hold = 0
        y, extra = timescale.join(ext[m:], x[m:], period, n)
        return timescale.to_int16(np.concatenate([ext[:m], y])).tobytes(), extra
