"""The bench's tone measures (bench/tone_quality.py): what the audio-network bench and
test_audio_network report as tone share and SNR."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from tone_quality import analyse, mark_onsets

RATE = 48000
AMP = 8000.0


def _tone_with_marks(seconds: float, first_mark: int, every: int = RATE // 2,
                     mark_len: int = 1440) -> np.ndarray:
    """A continuous 440 Hz tone with 30 ms 880 Hz marks of the same amplitude, the first
    at sample ``first_mark`` (anywhere on the 10 ms grid), one every ``every`` samples."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    x = AMP * np.sin(2 * math.pi * 440.0 * t)
    for start in range(first_mark, n - mark_len, every):
        x[start:start + mark_len] = AMP * np.sin(2 * math.pi * 880.0 * t[start:start + mark_len])
    return np.round(x).astype(np.int16)


def _through_opus(x: np.ndarray) -> np.ndarray:
    """``x`` encoded (32 kbit/s, 20 ms) and decoded by libopus: the mark's edges come out
    smeared, as in the bench."""
    from aiolivekit.media import opus_decoder, opus_native

    enc = opus_native.OpusEncoder(RATE, 1, 32000)
    dec = opus_decoder.OpusDecoder()
    pcm = x.tobytes()
    out = b"".join(dec.decode(enc.encode(pcm[i * 1920:(i + 1) * 1920]))
                   for i in range(len(pcm) // 1920))
    return np.frombuffer(out, dtype=np.int16)[RATE // 5:]  # past the encoder's start


def test_where_the_marks_fall_on_the_window_grid_does_not_move_the_snr() -> None:
    """The same stream shifted on the 10 ms grid measures the same. Before, the windows
    left out were those where the tone's phase leaked into the mark's projection, and a
    mark's edge could stay in as noise: this stream measured 24-46 dB depending on its
    offset (a whole bench run's SNR moved 10-30 dB between runs on both SDKs)."""
    snrs = []
    for offset in (0, 5, 37, 100, 240, 300, 479):
        x = _through_opus(_tone_with_marks(4.2, 12000 + offset))
        q = analyse(x, len(x) / RATE, amplitude=AMP, mark_freq=880.0)
        assert q.tone_share > 0.95
        assert len(mark_onsets(x, freq=440.0, mark_freq=880.0)) == 8
        snrs.append(q.snr_db)
    assert min(snrs) > 25 and max(snrs) - min(snrs) < 3, snrs


def test_a_phase_jump_inside_a_window_is_noise() -> None:
    x = _tone_with_marks(4.0, 2000).astype(np.float64)
    clean = analyse(x.astype(np.int16), 4.0, amplitude=AMP, mark_freq=880.0).snr_db
    # a half-period jump 5 ms into window 150 (away from the marks): the window cannot be
    # fitted by one sine, its residual is about the signal's power
    cut = 150 * 480 + 240
    x[cut:] = np.concatenate([x[cut + 55:], np.zeros(55)])
    jumped = analyse(x.astype(np.int16)[: len(x) - 480], 4.0 - 0.01, amplitude=AMP,
                     mark_freq=880.0).snr_db
    # one window in 400 at about 0 dB: ~26 dB over the stream; it is not taken for a mark
    assert clean > 60 and 20 < jumped < 32, (clean, jumped)


def test_identical_share_aligns_two_receivers_of_one_stream() -> None:
    """bench_audio_network's clean-network check: two receivers' output of the same
    stream, shifted against each other, are found sample for sample equal (but for the
    stretch only one of them holds); a window that differs is counted out."""
    import base64

    from bench_audio_network import _identical_share

    rng = np.random.default_rng(1)
    stream = (rng.standard_normal(RATE * 4) * 3000).astype(np.int16)
    ours, theirs = stream[2400 : 2400 + RATE * 3].copy(), stream[: RATE * 3]

    def res(x: np.ndarray) -> list[dict[str, object]]:
        return [{"name": "clean", "pcm_b64": base64.b64encode(x.tobytes()).decode()}]

    share = _identical_share(res(ours), res(theirs), "clean")
    assert share is not None and abs(share - (RATE * 3 - 2400) / (RATE * 3)) < 0.01
    ours[RATE : RATE + 4800] += 50  # ten windows differ
    share2 = _identical_share(res(ours), res(theirs), "clean")
    assert share2 is not None and abs(share - share2 - 4800 / (RATE * 3)) < 0.001
    assert _identical_share(res(ours), [], "clean") is None
