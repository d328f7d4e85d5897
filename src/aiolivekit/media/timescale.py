"""Pitch-synchronous signal steps of the playout buffer (:mod:`.playout`), sans-I/O.

All PCM is int16, interleaved; arrays are ``(samples, channels)``. Lags are searched on
the channel mean and applied to every channel.

* :func:`accelerate`: remove whole pitch periods from periodic audio (NetEq's accelerate).
* :func:`find_period`: the pitch period of the end of a signal, 0 if not periodic.
* :func:`extend`: continue a signal by repeating its last period, fading.
* :func:`join`: bring decoded audio in after an extension, in phase, cross-faded.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accelerate", "extend", "find_period", "join", "to_int16"]


def to_int16(y: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
    return out


def accelerate(x: np.ndarray, lo: int, hi: int, *, min_corr: float = 0.9
               ) -> tuple[np.ndarray, int] | None:
    """``x`` shortened by the largest lag in ``[lo, hi]`` (at most ``len(x) // 2``) where
    it matches itself with normalised correlation >= ``min_corr`` (within 0.02 of the
    best): its first ``lag`` samples cross-faded into the next ``lag``. None when the
    audio is not periodic enough (or silent)."""
    n = len(x) // 2
    hi = min(hi, n)
    if hi < lo or lo < 1:
        return None
    mono = x.mean(axis=1)
    ref = mono[:n]
    e0 = float(ref @ ref)
    if e0 <= 0:
        return None
    views = np.lib.stride_tricks.sliding_window_view(mono, n)[lo : hi + 1]
    energy = np.einsum("ij,ij->i", views, views)
    corr = (views @ ref) / np.sqrt(np.maximum(energy * e0, 1e-9))
    best = float(corr.max())
    if best < min_corr:
        return None
    lag = lo + int(np.nonzero(corr >= max(min_corr, best - 0.02))[0].max())
    w = (np.arange(lag) / lag)[:, None]
    y = np.concatenate([x[:lag] * (1 - w) + x[lag : 2 * lag] * w, x[2 * lag :]])
    return y, lag


def find_period(h: np.ndarray, lo: int, hi: int, n: int, min_energy: float,
                min_corr: float = 0.6) -> int:
    """The lag in ``[lo, hi]`` whose window best matches the last ``n`` samples of the
    mono signal ``h`` (mean removed, normalised correlation >= ``min_corr``); 0 when the
    end is quieter than ``min_energy`` or not periodic."""
    if len(h) < n + hi:
        return 0
    ref = h[-n:] - h[-n:].mean()
    e0 = float(ref @ ref)
    if e0 < min_energy:
        return 0
    # the windows ending ``lag`` samples before the end, lag = lo .. hi
    views = np.lib.stride_tricks.sliding_window_view(h[:-lo], n)[-(hi - lo + 1):][::-1]
    dots = views @ ref  # ref has zero mean: the windows' means drop out
    means = views.mean(axis=1)
    e1 = np.einsum("ij,ij->i", views, views) - n * means**2
    corr = np.where(e1 > 0, dots / np.sqrt(np.maximum(e1, 1e-9) * e0), -1.0)
    k = int(np.argmax(corr))
    return lo + k if float(corr[k]) >= min_corr else 0


def extend(history: np.ndarray, period: int, samples: int, decay: float,
           hold: int = 0) -> np.ndarray:
    """``samples`` continuing ``history`` by its last ``period``: the first ``hold`` at full
    level, then each one ``decay`` times the one before (per sample)."""
    base = history[-period:]
    idx = np.arange(samples)
    out: np.ndarray = base[idx % period] * (decay ** np.maximum(idx + 1 - hold, 0))[:, None]
    return out


def join(ext: np.ndarray, x: np.ndarray, period: int, n: int) -> tuple[np.ndarray, int]:
    """Decoded audio ``x`` after an extension whose continuation is ``ext`` (at least
    ``period + n`` samples): the extension runs ``extra`` < ``period`` samples more, to
    where it is most in phase with ``x``, then ``n`` samples are cross-faded into ``x``.
    Returns the joined audio and ``extra``."""
    ref = x[:n].mean(axis=1)
    views = np.lib.stride_tricks.sliding_window_view(ext.mean(axis=1), n)[:period]
    norms = np.sqrt(np.maximum(np.einsum("ij,ij->i", views, views), 1e-9))
    extra = int(np.argmax((views @ ref) / norms))
    w = ((np.arange(n) + 1) / (n + 1))[:, None]
    joined = ext[extra : extra + n] * (1 - w) + x[:n] * w
    return np.concatenate([ext[:extra], joined, x[n:]]), extra
