"""End-to-end audio latency and time to first subscribed frame: aiolivekit vs the official SDK.

Both SDKs run the same worker code (``bench/sdk_worker.py``; ours with this python, the
official one with its venv's python), against the same servers of the same run (our
embedded DevServer and livekit-server), publisher and subscriber in one process:

* ``audio_latency``: the publisher sends silence with a 20 ms 1 kHz burst every 0.3 s
  (20 ms frames paced by the wall clock); the subscriber's ``AudioStream`` (48 kHz mono)
  detects each onset. Latency = arrival of the decoded frame holding the onset - the
  ``capture_frame`` call of the burst. Rows: median and p95 over the bursts.
* ``time_to_first_frame``: fresh room per sample; from the ``publish_track`` call (a tone
  is fed from just before it) to the subscriber's ``track_subscribed``, its first decoded
  frame, and its first audible frame (peak > 3000).

    scripts/netns-run python bench/run.py --only latency
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import BenchContext, row  # noqa: E402
from sdk_worker import run_worker  # noqa: E402

PERIOD = 0.3


def _sdks(ctx: BenchContext) -> list[tuple[str, str]]:
    out = [("aiolivekit", sys.executable)]
    if ctx.official_python:
        out.append(("official", ctx.official_python))
    return out


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


async def run(ctx: BenchContext) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    count = 15 if ctx.quick else max(20, int(3 * ctx.seconds / PERIOD))
    reps = 3 if ctx.quick else max(5, ctx.repeat)
    # (sdk, python, label, extra worker args)
    variants: list[tuple[str, str, str, dict[str, Any]]] = [
        (sdk, python, "", {}) for sdk, python in _sdks(ctx)
    ]
    for sname, server in ctx.servers.items():
        for sdk, python, label, diag in variants:
            got: list[dict[str, Any]] = []
            room = ctx.room("lat")
            try:
                res = await run_worker(
                    python,
                    {"sdk": sdk, "mode": "latency", "url": server.url,
                     "token_pub": server.token("pub", room), "token_sub": server.token("sub", room),
                     "identity_pub": "pub", "count": count, "period": PERIOD, "bitrate": 32000,
                     **diag},
                    timeout=count * PERIOD + 90,
                )
                lat = [float(x) for x in res["latency_ms"]]
                extra = {"bursts_sent": res["bursts_sent"], "bursts_detected": len(lat),
                         "frame_samples": res["frame_samples"], "samples_ms": lat}
                bench = f"audio_latency [server={sname}{label}]"
                got.append(row(bench, sdk, "median", statistics.median(lat), "ms", **extra))
                got.append(row(bench, sdk, "p95", _p95(lat), "ms", **extra))
                got.append(row(bench, sdk, "bursts_detected", len(lat), "count", **extra))
                ctx.log(f"latency {sname} {sdk}{label}: median {statistics.median(lat):.1f} ms, "
                        f"p95 {_p95(lat):.1f} ms, {len(lat)}/{res['bursts_sent']} bursts, "
                        f"frames {res['frame_samples']} samples")
            except RuntimeError as e:
                ctx.log(f"latency {sname} {sdk}{label} failed: {e}")

            room = ctx.room("ttff")
            try:
                res = await run_worker(
                    python,
                    {"sdk": sdk, "mode": "ttff", "url": server.url, "bitrate": 32000,
                     "reps": [{"token_pub": server.token("pub", f"{room}-{i}"),
                               "token_sub": server.token("sub", f"{room}-{i}"),
                               "identity_pub": "pub"} for i in range(reps)],
                     **diag},
                    timeout=reps * 40 + 30,
                )
                bench = f"time_to_first_frame [server={sname}{label}]"
                for r in res["runs"]:
                    for key, metric in (("subscribed_ms", "to_track_subscribed"),
                                        ("first_frame_ms", "to_first_frame"),
                                        ("first_audible_ms", "to_first_audible_frame")):
                        if key in r:
                            got.append(row(bench, sdk, metric, r[key], "ms"))
                ctx.log(f"ttff {sname} {sdk}{label}: {res['runs']}")
            except RuntimeError as e:
                ctx.log(f"ttff {sname} {sdk}{label} failed: {e}")
            rows += got
    return rows
