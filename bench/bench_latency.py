"""End-to-end audio latency and time to first subscribed frame: aiolivekit vs the official SDK.

Both SDKs run the same worker code (``bench/sdk_worker.py``; ours with this python, the
official one with its venv's python), against the same servers of the same run (our
embedded DevServer and livekit-server), publisher and subscriber in one process:

* ``audio_latency``: the publisher sends silence with a 20 ms 1 kHz burst every 0.3 s
  (20 ms frames paced by the wall clock); the subscriber's ``AudioStream`` (48 kHz mono)
  detects each onset. Latency = arrival of the decoded frame holding the onset - the
  ``capture_frame`` call of the burst. Rows: median and p95 over the bursts.
* ``audio_latency_loaded``: the same, while 8 more participants (the official SDK's
  light client when installed, in another process) publish a tone each and subscribe to
  everything in the same room: the server forwards about 4 000 packets/s, so our server
  reads its sockets in batches (``aiolivekit.server.read_batching``) and this row shows
  what that costs in latency.
* ``time_to_first_frame``: fresh room per sample; from the ``publish_track`` call (a tone
  is fed from just before it) to the subscriber's ``track_subscribed``, its first decoded
  frame, and its first audible frame (peak > 3000).

    scripts/netns-run python bench/run.py --only latency
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import BenchContext, row  # noqa: E402
from sdk_worker import run_worker  # noqa: E402

PERIOD = 0.3
LOAD_PARTICIPANTS = 8


def _sdks(ctx: BenchContext) -> list[tuple[str, str]]:
    out = [("aiolivekit", sys.executable)]
    if ctx.official_python:
        out.append(("official", ctx.official_python))
    return out


async def _room_load(ctx: BenchContext, server: Any, room: str, seconds: float) -> Any:
    """Start LOAD_PARTICIPANTS publishing participants in ``room``; returns the worker's
    task once they all receive each other (raises if they never do)."""
    python = ctx.official_python or sys.executable
    sdk = "official" if ctx.official_python else "aiolivekit"
    ready = asyncio.Event()

    def on_event(obj: dict[str, Any]) -> None:
        if obj.get("event") == "window":
            ready.set()

    tokens = [server.token(f"load{i}", room) for i in range(LOAD_PARTICIPANTS)]
    task = asyncio.ensure_future(run_worker(
        python, {"sdk": sdk, "mode": "room", "url": server.url, "tokens": tokens,
                 "seconds": seconds, "warmup": 1.0, "bitrate": 32000},
        timeout=seconds + 150, on_event=on_event))
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, waiter}, timeout=90, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not ready.is_set():
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"room load failed: {task.exception()}")
        task.cancel()  # run_worker kills the worker process
        raise RuntimeError("room load not ready in 90 s")
    return task


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


async def _latency(ctx: BenchContext, sname: str, server: Any, sdk: str, python: str,
                   label: str, diag: dict[str, Any], count: int,
                   loaded: bool) -> list[dict[str, Any]]:
    """One ``audio_latency`` (or, ``loaded``, ``audio_latency_loaded``) measurement."""
    got: list[dict[str, Any]] = []
    room = ctx.room("latl" if loaded else "lat")
    name = "audio_latency_loaded" if loaded else "audio_latency"
    load = None
    try:
        if loaded:
            load = await _room_load(ctx, server, room, count * PERIOD + 40)
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
        if loaded:
            extra["load_participants"] = LOAD_PARTICIPANTS
        bench = f"{name} [server={sname}{label}]"
        got.append(row(bench, sdk, "median", statistics.median(lat), "ms", **extra))
        got.append(row(bench, sdk, "p95", _p95(lat), "ms", **extra))
        got.append(row(bench, sdk, "bursts_detected", len(lat), "count", **extra))
        ctx.log(f"{name} {sname} {sdk}{label}: median {statistics.median(lat):.1f} ms, "
                f"p95 {_p95(lat):.1f} ms, {len(lat)}/{res['bursts_sent']} bursts, "
                f"frames {res['frame_samples']} samples")
    except (RuntimeError, statistics.StatisticsError) as e:
        ctx.log(f"{name} {sname} {sdk}{label} failed: {e}")
    finally:
        if load is not None:
            load.cancel()
            try:
                await asyncio.wait_for(asyncio.gather(load, return_exceptions=True), 15)
            except asyncio.TimeoutError:
                pass
    return got


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
            for loaded in (False, True):
                got += await _latency(ctx, sname, server, sdk, python, label, diag, count,
                                      loaded)

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
