"""End-to-end audio latency and time to first frame: aiolivekit vs the official SDK.

Both SDKs run the same worker code (``bench/sdk_worker.py``), each in a fresh process of
its own (ours with this python, the official one with its venv's python), publisher and
subscriber in that process, against the same servers of the same run (our embedded
DevServer and livekit-server). Both publish Opus 48 kHz mono at max 32 kbit/s with RED
off and DTX off (set explicitly: the SDKs' defaults differ).

The measuring point is the same on both sides: **the receiving application gets a frame
it can play out**. For the official SDK that is its ``AudioStream`` (libwebrtc's NetEq
jitter buffer, 10 ms pulls). aiolivekit's ``AudioStream`` yields each packet the moment
it arrives (no jitter buffer), so ours is reported at two points, each from a fresh run
of its own (latency) or from the same run (time to first frame: the buffer starts with
the first frame, so it cannot change what came before):

* ``ours: frame on arrival``: our ``AudioStream`` frame (20 ms). Not like-for-like: the
  official number includes a jitter buffer, ours does not.
* ``ours: playout buffer``: our frames through a bench-side fixed-delay playout buffer
  (``bench/playout.py``) that releases 10 ms chunks on a steady clock. Its target is the
  official SDK's NetEq mean target delay (``jitterBufferTargetDelay / emitted samples``)
  measured in the official run of the same row just before (``DEFAULT_PLAYOUT_MS`` when
  the official SDK is absent or reports none). ``mean_hold`` compares our buffer's mean
  hold per sample with NetEq's mean ``jitterBufferDelay`` per sample.

Benchmarks:

* ``audio_latency``: the publisher sends silence with a 20 ms 1 kHz burst every 0.3 s
  (20 ms frames paced by the wall clock); latency = the ``capture_frame`` call of the
  burst -> the application gets the frame holding the onset. Median and p95.
* ``audio_latency_loaded``: the same while 8 more participants (another fresh process,
  the official SDK's client when installed, RED and DTX off) publish a tone each and
  subscribe to everything in the same room (the server forwards about 4 000 packets/s).
* ``time_to_first_frame``: fresh room per sample; from the ``publish_track`` call (a tone
  is fed from just before it) to the subscriber's ``track_subscribed``, its first frame
  and its first audible frame (peak > 3000), at the same two points for ours.

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
BITRATE = 32000
# our playout buffer's target when the official SDK gives none to match: its NetEq mean
# target delay measured on this loopback setup (20 ms Opus packets, no loss) was 30 ms
DEFAULT_PLAYOUT_MS = 30.0

PUBLISH = (f"Opus 48 kHz mono, max {BITRATE // 1000} kbit/s, RED off, DTX off on both "
           "(set explicitly)")
POINT_OFFICIAL = ("official = its AudioStream frame (10 ms, after libwebrtc's NetEq jitter "
                  "buffer and 10 ms pulls)")
POINT_ARRIVAL = ("ours = our AudioStream frame (20 ms) the moment its packet arrives, no "
                 "jitter buffer: NOT the same point, the official number includes a jitter "
                 "buffer")


def point_playout(target_ms: float, source: str) -> str:
    return (f"ours = our AudioStream frames through a bench-side playout buffer "
            f"(bench/playout.py) holding to a {target_ms:.0f} ms target ({source}) and "
            f"releasing 10 ms chunks on a steady clock: the same point as the official")


def _sdks(ctx: BenchContext) -> list[tuple[str, str]]:
    """Official first: its measured NetEq target sets our playout buffer's target."""
    out = []
    if ctx.official_python:
        out.append(("official", ctx.official_python))
    out.append(("aiolivekit", sys.executable))
    return out


def _load_client(ctx: BenchContext) -> tuple[str, str]:
    return ("official", ctx.official_python) if ctx.official_python else (
        "aiolivekit", sys.executable)


async def _room_load(ctx: BenchContext, server: Any, room: str, seconds: float) -> Any:
    """Start LOAD_PARTICIPANTS publishing participants in ``room`` (one fresh process);
    returns the worker's task once they all receive each other (raises if they never do)."""
    sdk, python = _load_client(ctx)
    ready = asyncio.Event()

    def on_event(obj: dict[str, Any]) -> None:
        if obj.get("event") == "window":
            ready.set()

    tokens = [server.token(f"load{i}", room) for i in range(LOAD_PARTICIPANTS)]
    task = asyncio.ensure_future(run_worker(
        python, {"sdk": sdk, "mode": "room", "url": server.url, "tokens": tokens,
                 "seconds": seconds, "warmup": 1.0, "bitrate": BITRATE, "red": False,
                 "dtx": False},
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
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def _lat_rows(bench: str, sdk: str, lat: list[float], setup: str,
              **extra: Any) -> list[dict[str, Any]]:
    extra = dict(extra, setup=setup, samples_ms=lat)
    return [row(bench, sdk, "median", statistics.median(lat), "ms", **extra),
            row(bench, sdk, "p95", _p95(lat), "ms", **extra),
            row(bench, sdk, "bursts_detected", len(lat), "count", **extra)]


async def _latency(ctx: BenchContext, sname: str, server: Any, count: int,
                   loaded: bool) -> tuple[list[dict[str, Any]], float | None]:
    """``audio_latency`` (or, ``loaded``, ``audio_latency_loaded``) for both SDKs; returns
    the rows and the official SDK's measured NetEq mean target delay (ms) if any."""
    name = "audio_latency_loaded" if loaded else "audio_latency"
    load_note = ""
    if loaded:
        lsdk, _ = _load_client(ctx)
        load_note = (f"; load: {LOAD_PARTICIPANTS} more participants in one more fresh "
                     f"process ({lsdk} SDK, {PUBLISH}), each publishing a tone and "
                     "subscribed to all (no decoding)")
    common = (f"server {sname}; each SDK in a fresh worker process with publisher and "
              f"subscriber in it; {PUBLISH}; silence with a 20 ms 1 kHz burst every "
              f"{PERIOD} s, {count} bursts; latency = capture_frame call of the burst -> the "
              f"application gets the frame holding its onset{load_note}")
    arrival_bench = f"{name} [server={sname}] ours: frame on arrival"
    playout_bench = f"{name} [server={sname}] ours: playout buffer"
    setup_a = f"{common}. {POINT_OFFICIAL}; {POINT_ARRIVAL}."
    setup_p = ""  # known once the target is
    official: dict[str, Any] | None = None
    off_target: float | None = None
    rows: list[dict[str, Any]] = []
    # official first (its NetEq target sets our buffer's), then ours in two fresh runs: at
    # arrival (nothing else in the process), then with the playout buffer
    variants = [("official", python, False) for sdk, python in _sdks(ctx) if sdk == "official"]
    variants += [("aiolivekit", sys.executable, False), ("aiolivekit", sys.executable, True)]
    for sdk, python, with_playout in variants:
        label = f"{sdk}{' + playout buffer' if with_playout else ''}"
        room = ctx.room("latl" if loaded else "lat")
        args: dict[str, Any] = {
            "sdk": sdk, "mode": "latency", "url": server.url,
            "token_pub": server.token("pub", room), "token_sub": server.token("sub", room),
            "identity_pub": "pub", "count": count, "period": PERIOD, "bitrate": BITRATE,
            "red": False, "dtx": False}
        if with_playout:
            args["playout_ms"] = off_target if off_target is not None else DEFAULT_PLAYOUT_MS
        load = None
        try:
            if loaded:
                load = await _room_load(ctx, server, room, count * PERIOD + 40)
            res = await run_worker(python, args, timeout=count * PERIOD + 90)
        except (RuntimeError, statistics.StatisticsError) as e:
            ctx.log(f"{name} {sname} {label} failed: {e}")
            continue
        finally:
            if load is not None:
                load.cancel()
                try:
                    await asyncio.wait_for(asyncio.gather(load, return_exceptions=True), 15)
                except asyncio.TimeoutError:
                    pass
        extra = {"bursts_sent": res["bursts_sent"], "frame_samples": res["frame_samples"],
                 "publish": res["publish"], "codecs_sent": res["codecs_sent"],
                 "codecs_received": res["codecs_received"]}
        if loaded:
            extra["load_participants"] = LOAD_PARTICIPANTS
        lat = [float(x) for x in res["arrival"]["latency_ms"]]
        if sdk == "official":
            jb = res.get("jitter_buffer")
            official = {"lat": lat, "extra": dict(extra, jitter_buffer=jb), "jb": jb}
            if jb and jb.get("mean_target_delay_ms"):
                off_target = round(float(jb["mean_target_delay_ms"]))
            ctx.log(f"{name} {sname} official: median {statistics.median(lat):.1f} ms, "
                    f"p95 {_p95(lat):.1f} ms, {len(lat)}/{res['bursts_sent']} bursts, "
                    f"NetEq {jb}, codecs {res['codecs_sent']}/{res['codecs_received']}")
            continue
        if not with_playout:
            rows += _lat_rows(arrival_bench, "aiolivekit", lat, setup_a, **extra)
            ctx.log(f"{name} {sname} aiolivekit at arrival: median "
                    f"{statistics.median(lat):.1f} ms, p95 {_p95(lat):.1f} ms, "
                    f"{len(lat)}/{res['bursts_sent']} bursts")
            continue
        po = res["playout"]
        plat = [float(x) for x in po.pop("latency_ms")]
        src = ("the official SDK's NetEq mean target delay in this benchmark's official run"
               if off_target is not None else
               "DEFAULT_PLAYOUT_MS: no official NetEq target measured in this run")
        setup_p = (f"{common}. {POINT_OFFICIAL}; {point_playout(po['target_ms'], src)} (a "
                   f"separate fresh run from the 'frame on arrival' one).")
        rows += _lat_rows(playout_bench, "aiolivekit", plat, setup_p, playout=po,
                          arrival_same_run_ms=lat, **extra)
        rows.append(row(playout_bench, "aiolivekit", "buffer_target", po["target_ms"], "ms",
                        setup=setup_p))
        rows.append(row(playout_bench, "aiolivekit", "mean_hold_per_sample", po["mean_hold_ms"],
                        "ms", setup=setup_p))
        rows.append(row(playout_bench, "aiolivekit", "underrun_ticks", po["underruns"], "count",
                        setup=setup_p))
        ctx.log(f"{name} {sname} aiolivekit + playout buffer ({po['target_ms']:.0f} ms): "
                f"median {statistics.median(plat):.1f} ms, p95 {_p95(plat):.1f} ms, hold "
                f"{po['mean_hold_ms']:.1f} ms, {po['underruns']} underruns, "
                f"{po['dropped_samples']} samples dropped, {len(plat)}/{res['bursts_sent']} "
                f"bursts (at arrival in this run: median {statistics.median(lat):.1f} ms)")
    if official is not None:
        for bench, setup in ((arrival_bench, setup_a), (playout_bench, setup_p)):
            if not setup:  # our playout run failed: no table to put the official in
                continue
            rows += _lat_rows(bench, "official", official["lat"], setup, **official["extra"])
        jb = official["jb"]
        if jb and setup_p:
            rows.append(row(playout_bench, "official", "buffer_target",
                            jb["mean_target_delay_ms"], "ms", setup=setup_p))
            rows.append(row(playout_bench, "official", "mean_hold_per_sample",
                            jb["mean_delay_ms"], "ms", setup=setup_p))
    return rows, off_target


async def _ttff(ctx: BenchContext, sname: str, server: Any, reps: int,
                off_target: float | None) -> list[dict[str, Any]]:
    target = off_target if off_target is not None else DEFAULT_PLAYOUT_MS
    src = ("the official SDK's NetEq mean target delay in this server's audio_latency run"
           if off_target is not None else "DEFAULT_PLAYOUT_MS")
    common = (f"server {sname}; each SDK in a fresh worker process, {reps} fresh rooms, "
              f"subscriber joined first; {PUBLISH}; a 440 Hz tone fed from just before the "
              "publish_track call; times from that call")
    benches = {
        "arrival": (f"time_to_first_frame [server={sname}] ours: frame on arrival",
                    f"{common}. {POINT_OFFICIAL}; {POINT_ARRIVAL}."),
        "playout": (f"time_to_first_frame [server={sname}] ours: playout buffer",
                    f"{common}. {POINT_OFFICIAL}; {point_playout(target, src)}."),
    }
    rows: list[dict[str, Any]] = []
    for sdk, python in _sdks(ctx):
        room = ctx.room("ttff")
        args: dict[str, Any] = {
            "sdk": sdk, "mode": "ttff", "url": server.url, "bitrate": BITRATE, "red": False,
            "dtx": False,
            "reps": [{"token_pub": server.token("pub", f"{room}-{i}"),
                      "token_sub": server.token("sub", f"{room}-{i}"),
                      "identity_pub": "pub"} for i in range(reps)]}
        if sdk == "aiolivekit":
            args["playout_ms"] = target
        try:
            res = await run_worker(python, args, timeout=reps * 40 + 30)
        except RuntimeError as e:
            ctx.log(f"ttff {sname} {sdk} failed: {e}")
            continue
        for r in res["runs"]:
            for point, (bench, setup) in benches.items():
                pre = "playout_" if sdk == "aiolivekit" and point == "playout" else ""
                for key, metric in (("subscribed_ms", "to_track_subscribed"),
                                    (pre + "first_frame_ms", "to_first_frame"),
                                    (pre + "first_audible_ms", "to_first_audible_frame")):
                    if key in r:
                        rows.append(row(bench, sdk, metric, r[key], "ms", setup=setup,
                                        publish=res["publish"]))
        ctx.log(f"ttff {sname} {sdk}: {res['runs']}")
    return rows


async def run(ctx: BenchContext) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    count = 15 if ctx.quick else max(20, int(3 * ctx.seconds / PERIOD))
    reps = 3 if ctx.quick else max(5, ctx.repeat)
    for sname, server in ctx.servers.items():
        got, off_target = await _latency(ctx, sname, server, count, loaded=False)
        rows += got
        rows += (await _latency(ctx, sname, server, count, loaded=True))[0]
        rows += await _ttff(ctx, sname, server, reps, off_target)
    return rows
