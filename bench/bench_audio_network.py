"""Received audio under loss, jitter and reordering (issue 20), side by side, same relay.

The official SDK publishes a continuous 440 Hz tone (30 ms 880 Hz marks every 0.5 s) to
livekit-server; an aiolivekit subscriber and an official SDK subscriber, in the same room
at the same time, receive it through a user-space ``UdpRelay`` between the server and the
clients (``docs/faults.md``: ``node_ip: 127.0.0.2`` and ``DirectPathBlock``; the relay's
``down`` direction impairs what the server sends). Conditions, one after the other in one
run: clean, 5 % loss, 40 ± 20 ms jitter with reordering, both, bursts of 3 lost
(``loss=0.02, burst=3``). Twice: the publisher with RED on (the official default) and off
(concealment and in-band FEC alone).

Per subscriber and condition (``bench/tone_quality.py``): ``tone_share`` (10 ms windows
within ±6 dB of the tone), ``snr_db`` (per-window fit of the 440 Hz sine), the longest run
of non-tone windows, ``concealed_share`` (the SDK's own concealedSamples /
totalSamplesReceived over the window) and latency median / p90 (a mark's ``capture_frame``
in the publisher -> the subscriber's ``AudioStream`` frame holding its onset; the
publisher-side queue is the same for both subscribers).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

from common import BenchContext, row
from sdk_worker import run_worker

from aiolivekit.testing.faults import ImpairmentConfig, UdpRelay, relayed_server
from aiolivekit.testing.servers import find_livekit_server

BENCH = "audio_network"
CONDITIONS: list[tuple[str, ImpairmentConfig]] = [
    ("clean", ImpairmentConfig()),
    ("loss5", ImpairmentConfig(loss=0.05)),
    ("jitter40x20", ImpairmentConfig(delay=0.040, jitter=0.020, reorder=True)),
    ("loss5+jitter", ImpairmentConfig(loss=0.05, delay=0.040, jitter=0.020, reorder=True)),
    ("burst3", ImpairmentConfig(loss=0.02, burst=3)),
]
SETUP = 25.0  # seconds for the three workers to connect and subscribe
SETTLE = 2.0  # after switching the impairment, before measuring


def _latencies(marks: list[float], onsets: list[float]) -> list[float]:
    out = []
    for t in onsets:
        before = [m for m in marks if m <= t]
        if before and t - before[-1] < 0.4:
            out.append((t - before[-1]) * 1000)
    return sorted(out)


def _identical_share(ours: list[dict[str, Any]], official: list[dict[str, Any]], name: str
                     ) -> float | None:
    """The share of 10 ms windows of our ``name`` window that are sample for sample the
    official subscriber's output (both decode the same stream). Aligned second by second
    (where a 100 ms stretch from the middle of each second of ours matches theirs best),
    so that a time-stretch by either SDK moves the alignment instead of ending it. On a
    clean network that tells whether an SNR difference is the audio or the measure."""
    import base64

    import numpy as np

    pcm = []
    for res in (ours, official):
        w = next((w for w in res if w["name"] == name and "pcm_b64" in w), None)
        if w is None:
            return None
        pcm.append(np.frombuffer(base64.b64decode(w.pop("pcm_b64")), dtype=np.int16)
                   .astype(np.int64))
    a, b = pcm
    n, block = 4800, 48000
    if len(a) < block or len(b) < block:
        return None
    size = 1 << int(np.ceil(np.log2(len(b) + n)))
    spectrum = np.fft.rfft(b, size)
    energy = np.convolve(b.astype(np.float64) ** 2, np.ones(n), "valid")
    same = 0
    for start in range(0, len(a) - block + 1, block):
        seg = a[start + (block - n) // 2 : start + (block + n) // 2]
        corr = np.fft.irfft(spectrum * np.conj(np.fft.rfft(seg, size)), size)
        # the squared distance of seg against every position of b
        off = int(np.argmin(energy - 2 * corr[: len(energy)])) - start - (block - n) // 2
        lo, hi = max(start, -off), min(start + block, len(b) - off)
        k = max(0, (hi - lo) // 480)
        if k:
            d = np.abs(a[lo : lo + k * 480] - b[lo + off : lo + off + k * 480]).reshape(k, 480)
            same += int((d.max(axis=1) <= 1).sum())
    return same * 480 / len(a)


def _p90(xs: list[float]) -> float:
    return xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]


async def _pass(ctx: BenchContext, info: Any, relay: UdpRelay, red: bool, measure: float
                ) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    room = ctx.room("audionet")
    t0 = time.time() + SETUP
    windows = []
    for k, (name, _) in enumerate(CONDITIONS):
        start = t0 + k * (SETTLE + measure)
        windows.append([name, start + SETTLE, start + SETTLE + measure])
    until = windows[-1][2] + 1.0
    common = {"url": info.url, "identity_pub": "pub", "windows": windows,
              "return_pcm": ["clean"]}
    assert ctx.official_python is not None
    pub = run_worker(ctx.official_python, {
        "sdk": "official", "mode": "tone_pub", "url": info.url, "red": red,
        "token": info.token("pub", room), "until": until}, until - time.time() + 60)
    subs = {
        "aiolivekit": run_worker(sys.executable, {
            **common, "sdk": "aiolivekit", "mode": "tone_sub",
            "token": info.token("sub-ours", room)}, until - time.time() + 60),
        "official": run_worker(ctx.official_python, {
            **common, "sdk": "official", "mode": "tone_sub",
            "token": info.token("sub-official", room)}, until - time.time() + 60),
    }

    async def drive() -> None:
        for k, (name, cfg) in enumerate(CONDITIONS):
            await asyncio.sleep(max(0.0, t0 + k * (SETTLE + measure) - time.time()))
            relay.configure(down=cfg)
            ctx.log(f"{BENCH} red={red}: {name}")
        await asyncio.sleep(max(0.0, until - time.time()))
        relay.configure(down=ImpairmentConfig())

    results = await asyncio.gather(pub, *subs.values(), drive())
    marks = results[0]["marks"]
    same = _identical_share(results[1]["windows"], results[2]["windows"], "clean")
    if same is not None:
        rows.append(row(f"{BENCH}/red_{'on' if red else 'off'}/clean", "aiolivekit",
                        "identical_to_official", 100 * same, "%",
                        setup="10 ms windows of ours equal, sample for sample, to the "
                              "official subscriber's output of the same stream (aligned)",
                        condition="clean", red=red))
    for impl, res in zip(subs, results[1:3], strict=True):
        for w in res["windows"]:
            lat = _latencies(marks, w["onsets"])
            bench = f"{BENCH}/red_{'on' if red else 'off'}/{w['name']}"
            setup = (f"livekit-server, official publisher (red={'on' if red else 'off'}), "
                     f"relay toward the subscribers: {w['name']}, {measure:.0f} s window")
            extra = {"setup": setup, "condition": w["name"], "red": red,
                     "codecs_received": res.get("codecs_received"),
                     "longest_gap_windows": w["longest_gap_windows"]}
            rows.append(row(bench, impl, "tone_share", 100 * w["tone_share"], "%", **extra))
            rows.append(row(bench, impl, "snr", w["snr_db"], "dB", **extra))
            if w["concealed_share"] is not None:
                rows.append(row(bench, impl, "concealed_share", 100 * w["concealed_share"],
                                "%", **extra))
            rows.append(row(bench, impl, "nacks", w.get("nacks", 0.0), "NACKs", **extra))
            if lat:
                rows.append(row(bench, impl, "latency_median", statistics.median(lat), "ms",
                                **extra))
                rows.append(row(bench, impl, "latency_p90", _p90(lat), "ms", **extra))
    return rows


async def run(ctx: BenchContext) -> list[dict[str, Any]]:
    binary = find_livekit_server()
    if binary is None or ctx.official_python is None:
        ctx.log(f"{BENCH}: needs livekit-server and the official SDK venv; skipped")
        return []
    measure = 5.0 if ctx.quick else max(8.0, 2 * ctx.seconds)
    rows: list[dict[str, Any]] = []
    async with relayed_server("livekit-server", seed=20, binary=binary) as (info, relay):
        for red in (True, False):
            rows += await _pass(ctx, info, relay, red, measure)
    return rows
