"""Video publisher CPU and delivered quality, aiolivekit vs the official SDK (issue 16).

One publisher process (aiolivekit or the official SDK, the same worker code) publishes a
``W``x``H`` RGBA camera track at ``fps`` (VP8, one layer, ``max_bitrate`` cap), paced by the
wall clock; one official-SDK subscriber process (the same for both publishers) decodes it
with a ``VideoStream`` and reports the delivered size and frame rate per second. The
publisher measures its own CPU (``getrusage``: every thread) over the window after a warm-up.

    scripts/netns-run python3 bench/bench_video.py --sizes 1280x720 1920x1080 --server livekit
    scripts/netns-run python3 bench/bench_video.py --server embedded  # through aiolivekit serve
    scripts/netns-run python3 bench/bench_video.py --sdks official --sub-sdk aiolivekit  # subscriber CPU

Workers: ``python bench/bench_video.py --worker '{"sdk": ..., "mode": "pub" | "sub", ...}'``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

_SELF = Path(__file__).resolve()
rtc: Any = None


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_frames(w: int, h: int, count: int) -> list[bytes]:
    """``count`` RGBA frames of smooth moving content (gradients, a textured band and a
    moving block): something a camera-like encoder has to work on, not noise."""
    import numpy as np

    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(1)
    grain = rng.integers(0, 8, (h, w), dtype=np.uint8).astype(np.float32)
    r = 128 + 100 * np.sin(x / 37.0) + grain
    g = 128 + 100 * np.cos(y / 23.0)
    b = (x + y) % 256
    background = np.stack([r, g, b, np.full_like(r, 255)], axis=-1)
    out = []
    for i in range(count):  # a static textured scene, a moving block, a panning band
        img = background.copy()
        band = slice(2 * h // 3, 2 * h // 3 + h // 8)
        img[band] = np.roll(background[band], 5 * i, axis=1)
        bx = (i * 12) % max(1, w - w // 5)
        img[h // 3 : h // 3 + h // 5, bx : bx + w // 5, :3] = (240, 40, 40)
        out.append(np.clip(img, 0, 255).astype(np.uint8).tobytes())
    return out


async def connect(url: str, token: str, e2ee: str = "") -> Any:
    """``e2ee`` (a shared key string): end-to-end encryption on, the same on both SDKs."""
    room = rtc.Room()
    options = rtc.RoomOptions(auto_subscribe=True)
    if e2ee:
        options.encryption = rtc.E2EEOptions(key_provider_options=rtc.KeyProviderOptions(
            shared_key=e2ee.encode()))
    await asyncio.wait_for(room.connect(url, token, options), 30)
    return room


async def bytes_sent(room: Any) -> int:
    """RTP payload+header bytes sent on video outbound streams (both SDKs' stats)."""
    stats = await asyncio.wait_for(room.get_rtc_stats(), 10)
    total = 0
    for st in list(stats.publisher_stats) + list(stats.subscriber_stats):
        if hasattr(st, "WhichOneof"):  # official: protobuf
            if st.WhichOneof("stats") == "outbound_rtp" and st.outbound_rtp.stream.kind == "video":
                total += st.outbound_rtp.sent.bytes_sent
        elif getattr(st, "type", "") == "outbound-rtp" and getattr(st, "kind", "") == "video":
            total += st.bytesSent
    return total


async def available_outgoing(room: Any) -> list[Any]:
    """The publisher PC's ``availableOutgoingBitrate`` in kbit/s (0 if none reported)."""
    stats = await asyncio.wait_for(room.get_rtc_stats(), 10)
    best = 0.0
    extra: list[Any] = []
    for st in stats.publisher_stats:
        if hasattr(st, "WhichOneof") and st.WhichOneof("stats") == "candidate_pair":
            best = max(best, st.candidate_pair.candidate_pair.available_outgoing_bitrate / 1000)
        if hasattr(st, "WhichOneof") and st.WhichOneof("stats") == "outbound_rtp":
            o = st.outbound_rtp.outbound
            if o.frame_width:
                extra += [o.frame_width, round(o.target_bitrate / 1000), o.quality_limitation_reason,
                          st.outbound_rtp.outbound.nack_count, o.pli_count,
                          round(o.qp_sum / max(1, o.frames_encoded), 1)]
    return [round(best), *extra]


async def mode_pub(a: dict[str, Any]) -> dict[str, Any]:
    w, h, fps = int(a["width"]), int(a["height"]), float(a["fps"])
    frames = make_frames(w, h, 60)
    room = await connect(a["url"], a["token"], str(a.get("e2ee", "")))
    source = rtc.VideoSource(w, h)
    track = rtc.LocalVideoTrack.create_video_track("cam", source)
    opts = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA,
        video_codec=rtc.VideoCodec.VP8,
        simulcast=bool(a.get("simulcast", False)),
        video_encoding=rtc.VideoEncoding(max_bitrate=int(a["bitrate"]), max_framerate=fps),
    )
    if os.environ.get("BENCH_WARM"):
        await room.local_participant.publish_data(b"warm")
        await asyncio.sleep(float(os.environ["BENCH_WARM"]))
    await asyncio.wait_for(room.local_participant.publish_track(track, opts), 20)
    emit({"event": "published"})
    total = float(a["warmup"]) + float(a["seconds"])
    t0 = time.monotonic()
    n = 0
    bwe: list[tuple[float, list[Any]]] = []
    next_bwe = t0
    marks: dict[str, tuple[float, float]] = {}
    profiler = None
    if os.environ.get("BENCH_VIDEO_PROFILE") and a["sdk"] == "aiolivekit":
        import cProfile

        profiler = cProfile.Profile()
    while True:
        now = time.monotonic()
        if now - t0 >= total:
            break
        if "start" not in marks and now - t0 >= float(a["warmup"]):
            marks["start"] = (cpu_seconds(), now)
            sent0 = await bytes_sent(room)
            if profiler is not None:
                profiler.enable()
        if a.get("bwe_trace") and now >= next_bwe:  # the publisher's bandwidth estimate
            next_bwe += 1.0
            bwe.append((round(now - t0, 1), await available_outgoing(room)))
        vf = rtc.VideoFrame(w, h, rtc.VideoBufferType.RGBA, frames[n % len(frames)])
        source.capture_frame(vf)
        n += 1
        await asyncio.sleep(max(0.0, t0 + n / fps - time.monotonic()))
    c1, w1 = cpu_seconds(), time.monotonic()
    c0, w0 = marks["start"]
    if profiler is not None:  # BENCH_VIDEO_PROFILE=file: the event loop thread's profile
        profiler.disable()
        profiler.dump_stats(os.environ["BENCH_VIDEO_PROFILE"])
    sent1 = await bytes_sent(room)
    await asyncio.wait_for(room.disconnect(), 10)
    return {"cpu_pct": 100 * (c1 - c0) / (w1 - w0), "frames_captured": n,
            "sent_kbps": round((sent1 - sent0) * 8 / (w1 - w0) / 1000), "bwe_kbps": bwe,
            "load_avg": os.getloadavg()[0]}


async def mode_sub(a: dict[str, Any]) -> dict[str, Any]:
    room = await connect(a["url"], a["token"], str(a.get("e2ee", "")))
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_track(track: Any, *_: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO and not got.done():
            got.set_result(track)

    room.on("track_subscribed", on_track)
    for p in room.remote_participants.values():
        for pub in p.track_publications.values():
            if pub.track is not None and pub.kind == rtc.TrackKind.KIND_VIDEO and not got.done():
                got.set_result(pub.track)
    track = await asyncio.wait_for(got, 30)
    t_sub = time.time()
    per_sec: dict[int, collections.Counter[tuple[int, int]]] = collections.defaultdict(
        collections.Counter)
    stream = rtc.VideoStream(track)
    end = time.time() + float(a["seconds"])
    cpu_from = t_sub + float(a.get("cpu_after", 0.0))  # the subscriber's CPU from then on
    cpu: dict[str, tuple[float, float]] = {}

    async def read() -> None:
        async for ev in stream:
            now = time.time()
            per_sec[int(now - t_sub)][(ev.frame.width, ev.frame.height)] += 1
            if "start" not in cpu and now >= cpu_from:
                cpu["start"] = (cpu_seconds(), now)
            elif "start" in cpu:
                cpu["end"] = (cpu_seconds(), now)  # the last frame so far ends the window
            if now >= end:
                return

    try:
        await asyncio.wait_for(read(), float(a["seconds"]) + 5)
    except asyncio.TimeoutError:
        pass
    await stream.aclose()
    await asyncio.wait_for(room.disconnect(), 10)
    seconds = [
        {"t": s, "fps": sum(c.values()), "size": "{}x{}".format(*c.most_common(1)[0][0])}
        for s, c in sorted(per_sec.items())
    ]
    cpu_pct = None
    if "start" in cpu and "end" in cpu and cpu["end"][1] > cpu["start"][1]:
        cpu_pct = 100 * (cpu["end"][0] - cpu["start"][0]) / (cpu["end"][1] - cpu["start"][1])
    return {"per_second": seconds, "cpu_pct": cpu_pct}


MODES = {"pub": mode_pub, "sub": mode_sub}


def worker_main(raw: str) -> None:
    global rtc
    args = json.loads(raw)
    if args["sdk"] == "official":
        from livekit import rtc as mod
    else:
        import aiolivekit as mod
    rtc = mod
    try:
        res = asyncio.run(asyncio.wait_for(MODES[args["mode"]](args), float(args["timeout"])))
        emit({"event": "result", **res})
    except BaseException as e:  # noqa: BLE001
        emit({"event": "error", "error": f"{type(e).__name__}: {e}"})
    sys.stdout.flush()
    os._exit(0)  # the official SDK may abort at interpreter exit


# ---------------------------------------------------------------------------- parent side


async def run_worker(python: str, args: dict[str, Any], timeout: float,
                     published: asyncio.Event | None = None) -> dict[str, Any]:
    args = dict(args, timeout=timeout - 5)
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        python, str(_SELF), "--worker", json.dumps(args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    result: dict[str, Any] | None = None

    async def read() -> None:
        nonlocal result
        assert proc.stdout is not None
        async for line in proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") == "published" and published is not None:
                published.set()
            elif obj.get("event") in ("result", "error"):
                result = obj

    try:
        await asyncio.wait_for(asyncio.gather(read(), proc.wait()), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = (await proc.stderr.read()).decode(errors="replace")[-1500:] if proc.stderr else ""
    if result is None or result["event"] == "error":
        raise RuntimeError(f"{args['sdk']} {args['mode']}: {result}\n{err}")
    return result


OFFICIAL_PY = Path.home() / ".cache" / "aiolivekit" / "official-venv" / "bin" / "python"


async def one(server: Any, sdk: str, w: int, h: int, fps: float, bitrate: int,
              seconds: float, warmup: float, room: str, sub_sdk: str = "official",
              e2ee: str = "") -> dict[str, Any]:
    """One publisher (``sdk``) and one subscriber: the publisher's CPU over the window and
    the subscriber's per-second delivered size/fps (and its CPU from ``warmup`` on, after
    its first frame); ``e2ee``: a shared key for both."""
    python = {"official": str(OFFICIAL_PY), "aiolivekit": sys.executable}
    total = warmup + seconds
    pub_args = {"sdk": sdk, "mode": "pub", "url": server.url, "token": server.token("pub", room),
                "width": w, "height": h, "fps": fps, "bitrate": bitrate,
                "seconds": seconds, "warmup": warmup, "bwe_trace": bool(os.environ.get("BENCH_BWE")),
                "e2ee": e2ee}
    published = asyncio.Event()
    pub_task = asyncio.ensure_future(run_worker(python[sdk], pub_args, total + 60, published))
    await asyncio.wait_for(published.wait(), 40)
    sub_args = {"sdk": sub_sdk, "mode": "sub", "url": server.url,
                "token": server.token("sub", room), "seconds": total - 1,
                "cpu_after": warmup, "e2ee": e2ee}
    sub = await run_worker(python[sub_sdk], sub_args, total + 40)
    pub = await pub_task
    window = [s for s in sub["per_second"] if s["t"] >= warmup and s["t"] < total - 2]
    sizes = collections.Counter(s["size"] for s in window)
    full = f"{w}x{h}"
    t_full = next((s["t"] for s in sub["per_second"] if s["size"] == full and s["fps"] >= 25),
                  None)
    return {
        "sdk": sdk, "size": full, "fps_target": fps, "bitrate": bitrate,
        "publisher_cpu_pct": round(pub["cpu_pct"], 1),
        "subscriber_cpu_pct": (round(sub["cpu_pct"], 1) if sub.get("cpu_pct") is not None
                               else None),
        "sent_kbps": pub["sent_kbps"],
        **({"bwe_kbps": pub["bwe_kbps"]} if pub["bwe_kbps"] else {}),
        "delivered_size": sizes.most_common(1)[0][0] if sizes else None,
        "delivered_fps": round(sum(s["fps"] for s in window) / max(1, len(window)), 1),
        "first_full_size_25fps_s": t_full,
        "per_second": sub["per_second"],
        "load_avg_1min": round(pub["load_avg"], 2),
    }


async def start_server(kind: str) -> tuple[Any, Any]:
    sys.path.insert(0, str(_SELF.parent.parent / "src"))
    if kind == "embedded":
        from aiolivekit.server import DevServer

        dev = DevServer()
        await dev.start()
        from aiolivekit.testing.servers import ServerInfo

        return dev, ServerInfo("embedded", dev.url, dev.api_key, dev.api_secret)
    from aiolivekit.testing.servers import LiveKitServerProcess, find_livekit_server

    binary = find_livekit_server()
    if binary is None:
        raise SystemExit("livekit-server not found")
    lk = LiveKitServerProcess(binary)
    await lk.start()
    return lk, lk.info()


async def main_async(ns: argparse.Namespace) -> None:
    srv, info = await start_server(ns.server)
    try:
        for size in ns.sizes:
            w, h = (int(v) for v in size.split("x"))
            for sdk in ns.sdks:
                res = await one(info, sdk, w, h, ns.fps, ns.bitrate, ns.seconds, ns.warmup,
                                f"video-{sdk}-{size}-{int(time.time())}", sub_sdk=ns.sub_sdk)
                if not ns.verbose:
                    res.pop("per_second")
                print(json.dumps({"server": ns.server, **res}), flush=True)
    finally:
        await (srv.aclose() if ns.server == "embedded" else srv.stop())


async def run(ctx: Any) -> list[dict[str, Any]]:
    """bench/run.py entry point: publisher CPU at 720p/1080p through livekit-server (both
    SDKs, the official subscriber), and an official publisher's time to full size on
    each server."""
    from common import row

    out: list[dict[str, Any]] = []
    seconds = max(5.0, ctx.seconds)
    setup = ("one VP8 camera track, RGBA frames at 30 fps (moving content), one layer, "
             "{bitrate} kbit/s cap, each SDK in its own process, the official SDK "
             "subscribing; publisher CPU = getrusage (all threads) over {seconds:g} s "
             "after a 5 s warm-up; delivered size/fps as decoded by the subscriber")
    if ctx.livekit is not None and OFFICIAL_PY.is_file():
        for (w, h), bitrate in (((1280, 720), 1_500_000), ((1920, 1080), 3_000_000)):
            for sdk in ("official", "aiolivekit"):
                r = await one(ctx.livekit, sdk, w, h, 30.0, bitrate, seconds, 5.0,
                              ctx.room("video"))
                name = f"video_publish [{w}x{h}, livekit-server]"
                extra = {"setup": setup.format(bitrate=bitrate // 1000, seconds=seconds)}
                out += [
                    row(name, sdk, "publisher_cpu", r["publisher_cpu_pct"], "% of a core",
                        **extra),
                    row(name, sdk, "delivered_fps", r["delivered_fps"], "fps", **extra),
                    row(name, sdk, "delivered_full_size", float(r["delivered_size"] == f"{w}x{h}"),
                        "1 = yes", **extra),
                    row(name, sdk, "sent", r["sent_kbps"], "kbit/s", **extra),
                ]
        sub_setup = ("an official publisher (one VP8 camera track, 1280x720 RGBA at 30 fps, "
                     "1.5 Mbit/s cap) -> livekit-server -> one subscriber of each SDK in its "
                     f"own process decoding with a VideoStream; subscriber CPU = getrusage "
                     f"(all threads) over {seconds:g} s after a 5 s warm-up")
        for sub_sdk in ("official", "aiolivekit"):
            r = await one(ctx.livekit, "official", 1280, 720, 30.0, 1_500_000, seconds, 5.0,
                          ctx.room("video-sub"), sub_sdk=sub_sdk)
            name = "video_subscribe [1280x720, livekit-server]"
            out += [
                row(name, sub_sdk, "subscriber_cpu", r["subscriber_cpu_pct"], "% of a core",
                    setup=sub_setup),
                row(name, sub_sdk, "delivered_fps", r["delivered_fps"], "fps", setup=sub_setup),
            ]
        for kind, server in (("embedded", ctx.embedded), ("livekit-server", ctx.livekit)):
            r = await one(server, "official", 1280, 720, 30.0, 1_500_000, 10.0, 0.0,
                          ctx.room("ramp"))
            t = r["first_full_size_25fps_s"]
            out.append(row(f"video_full_quality [official publisher, {kind}]", "official",
                           "seconds_to_1280x720_25fps", t if t is not None else float("nan"), "s",
                           setup="official publisher 1280x720 VP8 1.5 Mbit/s -> server -> "
                                 "official subscriber; first whole second at full size and "
                                 ">= 25 fps, counted from the subscriber's first frame"))
    return out


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", choices=["livekit", "embedded"], default="livekit")
    ap.add_argument("--sizes", nargs="*", default=["1280x720"])
    ap.add_argument("--sdks", nargs="*", default=["aiolivekit", "official"])
    ap.add_argument("--sub-sdk", choices=["official", "aiolivekit"], default="official",
                    help="the subscriber's SDK (its CPU is reported too)")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--bitrate", type=int, default=1_500_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--verbose", action="store_true")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
