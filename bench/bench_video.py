"""Video publisher CPU and delivered quality, aiolivekit vs the official SDK (issue 16).

One publisher process (aiolivekit or the official SDK, the same worker code) publishes a
``W``x``H`` RGBA camera track at ``fps`` (VP8, one layer, ``max_bitrate`` cap), paced by the
wall clock; one official-SDK subscriber process (the same for both publishers) decodes it
with a ``VideoStream`` and reports the delivered size and frame rate per second. The
publisher measures its own CPU (``getrusage``: every thread) over the window after a warm-up,
and what it sent per layer over that window (rid, size, frames/s, kbit/s: the official SDK's
outbound-rtp stats; aiolivekit's simulcast layer counters, its aiortc stats for one layer).

``--simulcast``: both publishers send the official SDK's three layers (``simulcast=True``;
q/h/f, e.g. 320x180, 640x360 and 1280x720 for a 1280x720 track; the top layer capped at
``--bitrate``; dynacast off on both, so every layer is encoded all the time); the subscriber
asks for nothing and so gets the top layer. ``--layer-switch`` (simulcast): instead of the
CPU window, the subscriber asks for the layers in turn with ``set_video_quality`` (low,
medium, high, medium, low, high: each directed switch once) and times each request to its
first decoded frame of that layer's size.

    scripts/netns-run python3 bench/bench_video.py --sizes 1280x720 1920x1080 --server livekit
    scripts/netns-run python3 bench/bench_video.py --server embedded  # through aiolivekit serve
    scripts/netns-run python3 bench/bench_video.py --sdks official --sub-sdk aiolivekit  # subscriber CPU
    scripts/netns-run python3 bench/bench_video.py --sizes 1280x720 1920x1080 --simulcast
    scripts/netns-run python3 bench/bench_video.py --server embedded --layer-switch

Workers: ``python bench/bench_video.py --worker '{"sdk": ..., "mode": "pub" | "sub", ...}'``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import signal
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


async def layer_counters(room: Any, track: Any) -> dict[str, dict[str, Any]]:
    """What the publisher has sent so far per video layer (its ``rid``; for one layer, its
    SSRC):
    ``bytes`` (RTP payload bytes, retransmissions included), ``frames`` (frames sent; None
    where not counted) and ``size`` (the layer's size: the official SDK's current encoded
    size, aiolivekit's configured layer size). Official: its outbound-rtp stats (one per
    layer). aiolivekit: aiortc's outbound-rtp stats, which know only the top layer's SSRC
    (the aiortc sender's), so the other simulcast layers' bytes are their writers' own
    counters, and every simulcast layer's frames its own count."""
    out: dict[str, dict[str, Any]] = {}
    stats = await asyncio.wait_for(room.get_rtc_stats(), 10)
    sim = getattr(getattr(track, "_rtc_track", None), "simulcast", None)
    if sim is not None:  # aiolivekit, simulcast
        by_ssrc = {getattr(st, "ssrc", None): st.bytesSent for st in stats.publisher_stats
                   if getattr(st, "type", "") == "outbound-rtp"}
        for layer in sim.layers:
            out[layer.spec.rid] = {"bytes": by_ssrc.get(layer.ssrc, layer.writer.octets_sent),
                                   "frames": layer.frames_sent,
                                   "size": f"{layer.spec.width}x{layer.spec.height}"}
        return out
    for st in list(stats.publisher_stats) + list(stats.subscriber_stats):
        if hasattr(st, "WhichOneof"):  # official: protobuf
            if st.WhichOneof("stats") == "outbound_rtp" and st.outbound_rtp.stream.kind == "video":
                o = st.outbound_rtp.outbound
                key = o.rid or str(st.outbound_rtp.stream.ssrc)
                out[key] = {"bytes": st.outbound_rtp.sent.bytes_sent, "frames": o.frames_sent,
                            "size": f"{o.frame_width}x{o.frame_height}",
                            "limited_by": o.quality_limitation_reason}
        elif getattr(st, "type", "") == "outbound-rtp" and getattr(st, "kind", "") == "video":
            out[str(getattr(st, "ssrc", ""))] = {"bytes": st.bytesSent, "frames": None,
                                                 "size": None}
    return out


def layers_sent(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
                seconds: float) -> list[dict[str, Any]]:
    """Per layer (low to high by size), what was sent between two ``layer_counters``."""
    out = []
    for key, a in after.items():
        b = before.get(key, {"bytes": 0, "frames": 0})
        fps = None
        if a["frames"] is not None and b.get("frames") is not None:
            fps = round((a["frames"] - b["frames"]) / seconds, 1)
        out.append({"rid": key, "size": a["size"], "fps": fps,
                    "kbps": round((a["bytes"] - b["bytes"]) * 8 / seconds / 1000),
                    **({"limited_by": a["limited_by"]} if "limited_by" in a else {})})

    def area(layer: dict[str, Any]) -> int:
        w, _, h = str(layer["size"] or "0x0").partition("x")
        return int(w or 0) * int(h or 0)

    return sorted(out, key=area)


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
    stop = asyncio.Event()  # SIGUSR1 from the parent: stop now (after the layer switch)
    if a.get("stop_on_signal"):
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stop.set)
    while True:
        now = time.monotonic()
        if now - t0 >= total or stop.is_set():
            break
        if "start" not in marks and now - t0 >= float(a["warmup"]):
            marks["start"] = (cpu_seconds(), now)
            sent0 = await layer_counters(room, track)
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
    if "start" not in marks:  # stopped before the window
        await asyncio.wait_for(room.disconnect(), 10)
        return {"cpu_pct": 0.0, "frames_captured": n, "sent_kbps": 0, "layers": [],
                "bwe_kbps": bwe, "load_avg": os.getloadavg()[0]}
    c0, w0 = marks["start"]
    if profiler is not None:  # BENCH_VIDEO_PROFILE=file: the event loop thread's profile
        profiler.disable()
        profiler.dump_stats(os.environ["BENCH_VIDEO_PROFILE"])
    sent1 = await layer_counters(room, track)
    layers = layers_sent(sent0, sent1, w1 - w0)
    sent_bytes = sum(v["bytes"] for v in sent1.values()) - sum(v["bytes"] for v in sent0.values())
    await asyncio.wait_for(room.disconnect(), 10)
    return {"cpu_pct": 100 * (c1 - c0) / (w1 - w0), "frames_captured": n,
            "sent_kbps": round(sent_bytes * 8 / (w1 - w0) / 1000), "layers": layers,
            "bwe_kbps": bwe, "load_avg": os.getloadavg()[0]}


async def mode_sub(a: dict[str, Any]) -> dict[str, Any]:
    room = await connect(a["url"], a["token"], str(a.get("e2ee", "")))
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_track(track: Any, publication: Any, *_: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO and not got.done():
            got.set_result((track, publication))

    room.on("track_subscribed", on_track)
    for p in room.remote_participants.values():
        for pub in p.track_publications.values():
            if pub.track is not None and pub.kind == rtc.TrackKind.KIND_VIDEO and not got.done():
                got.set_result((pub.track, pub))
    track, publication = await asyncio.wait_for(got, 30)
    t_sub = time.time()
    # the layer switch: [[quality, "WxH" of that layer], ...] asked for in turn
    switch: list[list[Any]] = list(a.get("switch") or [])
    pending: dict[str, Any] = {}  # the switch under way: from/want size, times
    last_size: list[tuple[int, int]] = []
    per_sec: dict[int, collections.Counter[tuple[int, int]]] = collections.defaultdict(
        collections.Counter)
    stream = rtc.VideoStream(track)
    end = time.time() + float(a["seconds"])
    cpu_from = t_sub + float(a.get("cpu_after", 0.0))  # the subscriber's CPU from then on
    cpu: dict[str, tuple[float, float]] = {}

    async def read() -> None:
        async for ev in stream:
            now, mono = time.time(), time.monotonic()
            size = (ev.frame.width, ev.frame.height)
            last_size[:] = [size]
            if pending and "other_s" not in pending and size != pending["from"]:
                pending["other_s"], pending["other"] = mono - pending["t"], size
            if pending and size == pending["want"] and not pending["done"].is_set():
                pending["want_s"] = mono - pending["t"]
                pending["done"].set()
            per_sec[int(now - t_sub)][size] += 1
            if "start" not in cpu and now >= cpu_from:
                cpu["start"] = (cpu_seconds(), now)
            elif "start" in cpu:
                cpu["end"] = (cpu_seconds(), now)  # the last frame so far ends the window
            if now >= end:
                return

    async def switch_layers() -> list[dict[str, Any]]:
        """Each quality in turn: ask, wait (at most ``switch_timeout``) for the first frame
        of its size, then hold ``switch_dwell`` s."""
        done: list[dict[str, Any]] = []
        await asyncio.sleep(max(0.0, t_sub + float(a.get("switch_after", 5.0)) - time.time()))
        for quality, want in switch:
            ww, _, wh = str(want).partition("x")
            pending.clear()
            pending.update(want=(int(ww), int(wh)), done=asyncio.Event(),
                           **{"from": last_size[0] if last_size else None})
            pending["t"] = time.monotonic()
            publication.set_video_quality(int(quality))
            try:
                await asyncio.wait_for(pending["done"].wait(), float(a.get("switch_timeout", 10)))
            except asyncio.TimeoutError:
                pass
            rec = {"quality": int(quality), "want": want,
                   "from": "{}x{}".format(*pending["from"]) if pending["from"] else None,
                   "seconds_to_want": (round(pending["want_s"], 3) if "want_s" in pending
                                       else None),
                   "first_new_size": ("{}x{}".format(*pending["other"]) if "other" in pending
                                      else None),
                   "seconds_to_first_new_size": (round(pending["other_s"], 3)
                                                 if "other_s" in pending else None)}
            pending.clear()
            done.append(rec)
            await asyncio.sleep(float(a.get("switch_dwell", 2.0)))
        return done

    switches: list[dict[str, Any]] = []
    reader = asyncio.ensure_future(read())
    try:
        if switch:
            switches = await asyncio.wait_for(switch_layers(), float(a["seconds"]) + 5)
        else:
            await asyncio.wait_for(asyncio.shield(reader), float(a["seconds"]) + 5)
    except asyncio.TimeoutError:
        pass
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    await stream.aclose()
    await asyncio.wait_for(room.disconnect(), 10)
    seconds = [
        {"t": s, "fps": sum(c.values()), "size": "{}x{}".format(*c.most_common(1)[0][0])}
        for s, c in sorted(per_sec.items())
    ]
    cpu_pct = None
    if "start" in cpu and "end" in cpu and cpu["end"][1] > cpu["start"][1]:
        cpu_pct = 100 * (cpu["end"][0] - cpu["start"][0]) / (cpu["end"][1] - cpu["start"][1])
    return {"per_second": seconds, "cpu_pct": cpu_pct, "switches": switches}


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
                     published: asyncio.Event | None = None,
                     stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Run one worker process; ``published`` is set at its "published" event; when ``stop``
    is set the worker gets SIGUSR1 (a publisher with ``stop_on_signal`` then stops)."""
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

    async def signal_stop() -> None:
        if stop is not None:
            await stop.wait()
            if proc.returncode is None:
                proc.send_signal(signal.SIGUSR1)

    stopper = asyncio.ensure_future(signal_stop())
    try:
        await asyncio.wait_for(asyncio.gather(read(), proc.wait()), timeout)
    finally:
        stopper.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = (await proc.stderr.read()).decode(errors="replace")[-1500:] if proc.stderr else ""
    if result is None or result["event"] == "error":
        raise RuntimeError(f"{args['sdk']} {args['mode']}: {result}\n{err}")
    return result


OFFICIAL_PY = Path.home() / ".cache" / "aiolivekit" / "official-venv" / "bin" / "python"


QUALITY_NAMES = {0: "low", 1: "medium", 2: "high"}  # VideoQuality LOW / MEDIUM / HIGH
# each directed switch once, from the top layer a subscriber gets by default
SWITCH_ORDER = (0, 1, 2, 1, 0, 2)
SWITCH_TIMEOUT = 10.0  # s for the first frame of the new layer
SWITCH_DWELL = 2.0  # s on a layer before the next request
SWITCH_AFTER = 5.0  # s after the subscriber's first frame, before the first request


def layer_sizes(w: int, h: int) -> dict[int, str] | None:
    """The size of each simulcast layer (by quality) of a ``w`` x ``h`` track: the official
    presets' rule (the shorter side brought to 180 and 360, the original on top), for a
    track large enough for three layers (the longer side >= 960); None otherwise."""
    if max(w, h) < 960:
        return None

    def scaled(short: int) -> str:
        factor = max(1.0, min(w, h) / short)
        return f"{max(2, int(w / factor) & ~1)}x{max(2, int(h / factor) & ~1)}"

    return {0: scaled(180), 1: scaled(360), 2: f"{w}x{h}"}


async def one(server: Any, sdk: str, w: int, h: int, fps: float, bitrate: int,
              seconds: float, warmup: float, room: str, sub_sdk: str = "official",
              e2ee: str = "", simulcast: bool = False,
              layer_switch: bool = False) -> dict[str, Any]:
    """One publisher (``sdk``) and one subscriber: the publisher's CPU over the window and
    the subscriber's per-second delivered size/fps (and its CPU from ``warmup`` on, after
    its first frame); ``e2ee``: a shared key for both; ``simulcast``: the publisher sends
    three layers. ``layer_switch`` (simulcast, a track with three layers): instead of
    ``seconds``, the subscriber asks for the layers in ``SWITCH_ORDER`` (``switches``: each
    request's time to the first frame of that layer's size) and then the publisher stops."""
    python = {"official": str(OFFICIAL_PY), "aiolivekit": sys.executable}
    stop = asyncio.Event() if layer_switch else None
    switch: list[list[Any]] = []
    if layer_switch:
        sizes_by_quality = layer_sizes(w, h)
        if not simulcast or sizes_by_quality is None:
            raise ValueError("the layer switch needs simulcast and a track of three layers")
        switch = [[q, sizes_by_quality[q]] for q in SWITCH_ORDER]
        seconds = SWITCH_AFTER + len(switch) * (SWITCH_TIMEOUT + SWITCH_DWELL) + 2
        warmup = 0.0
    total = warmup + seconds
    pub_args = {"sdk": sdk, "mode": "pub", "url": server.url, "token": server.token("pub", room),
                "width": w, "height": h, "fps": fps, "bitrate": bitrate,
                "seconds": seconds, "warmup": warmup, "bwe_trace": bool(os.environ.get("BENCH_BWE")),
                "e2ee": e2ee, "simulcast": simulcast, "stop_on_signal": layer_switch}
    published = asyncio.Event()
    pub_task = asyncio.ensure_future(run_worker(python[sdk], pub_args, total + 60, published,
                                                stop))
    await asyncio.wait_for(published.wait(), 40)
    sub_args = {"sdk": sub_sdk, "mode": "sub", "url": server.url,
                "token": server.token("sub", room), "seconds": total - 1,
                "cpu_after": warmup, "e2ee": e2ee, "switch": switch,
                "switch_after": SWITCH_AFTER, "switch_timeout": SWITCH_TIMEOUT,
                "switch_dwell": SWITCH_DWELL}
    try:
        sub = await run_worker(python[sub_sdk], sub_args, total + 40)
    finally:
        if stop is not None:
            stop.set()
    pub = await pub_task
    if layer_switch:
        return {"sdk": sdk, "size": f"{w}x{h}", "fps_target": fps, "bitrate": bitrate,
                "simulcast": simulcast, "switches": sub["switches"],
                "load_avg_1min": round(pub["load_avg"], 2)}
    window = [s for s in sub["per_second"] if s["t"] >= warmup and s["t"] < total - 2]
    sizes = collections.Counter(s["size"] for s in window)
    full = f"{w}x{h}"
    t_full = next((s["t"] for s in sub["per_second"] if s["size"] == full and s["fps"] >= 25),
                  None)
    return {
        "sdk": sdk, "size": full, "fps_target": fps, "bitrate": bitrate,
        "simulcast": simulcast,
        "publisher_cpu_pct": round(pub["cpu_pct"], 1),
        "subscriber_cpu_pct": (round(sub["cpu_pct"], 1) if sub.get("cpu_pct") is not None
                               else None),
        "sent_kbps": pub["sent_kbps"],
        "layers_sent": pub["layers"],
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
                                f"video-{sdk}-{size}-{int(time.time())}", sub_sdk=ns.sub_sdk,
                                simulcast=ns.simulcast or ns.layer_switch,
                                layer_switch=ns.layer_switch)
                if not ns.verbose:
                    res.pop("per_second", None)
                print(json.dumps({"server": ns.server, **res}), flush=True)
    finally:
        await (srv.aclose() if ns.server == "embedded" else srv.stop())


async def run(ctx: Any) -> list[dict[str, Any]]:
    """bench/run.py entry point: publisher CPU at 720p/1080p through livekit-server (both
    SDKs, the official subscriber), one layer and simulcast; an official publisher's time
    to full size on each server; the layer switch on each server (not with ``--quick``)."""
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
        sim_setup = ("one VP8 camera track, RGBA frames at 30 fps (moving content), simulcast "
                     "(simulcast=True, dynacast off: every layer encoded all the time): three "
                     "layers q/h/f = {layers}, the top one capped at {bitrate} kbit/s and "
                     "30 fps, the lower ones at each SDK's own presets (what each layer "
                     "really carried: the layer_* rows); each SDK in its own process, the "
                     "official SDK subscribing without asking for a quality (the top layer); "
                     "publisher CPU = getrusage (all threads) over {seconds:g} s after a 5 s "
                     "warm-up; sent = every layer's RTP payload")
        for (w, h), bitrate in (((1280, 720), 1_500_000), ((1920, 1080), 3_000_000)):
            sizes_by_quality = layer_sizes(w, h) or {}
            layers = ", ".join(sizes_by_quality[q] for q in sorted(sizes_by_quality))
            extra = {"setup": sim_setup.format(layers=layers, bitrate=bitrate // 1000,
                                               seconds=seconds)}
            for sdk in ("official", "aiolivekit"):
                r = await one(ctx.livekit, sdk, w, h, 30.0, bitrate, seconds, 5.0,
                              ctx.room("video-sim"), simulcast=True)
                name = f"video_publish_simulcast [{w}x{h}, livekit-server]"
                out += [
                    row(name, sdk, "publisher_cpu", r["publisher_cpu_pct"], "% of a core",
                        **extra),
                    row(name, sdk, "delivered_fps", r["delivered_fps"], "fps", **extra),
                    row(name, sdk, "delivered_full_size", float(r["delivered_size"] == f"{w}x{h}"),
                        "1 = yes", **extra),
                    row(name, sdk, "sent", r["sent_kbps"], "kbit/s", **extra),
                ]
                for layer in r["layers_sent"]:
                    if layer["rid"] in ("q", "h", "f"):
                        out.append(row(name, sdk, f"layer_{layer['rid']}_kbps", layer["kbps"],
                                       "kbit/s", layer_size=layer["size"], **extra))
                        if layer["fps"] is not None:
                            out.append(row(name, sdk, f"layer_{layer['rid']}_fps",
                                           layer["fps"], "fps", layer_size=layer["size"],
                                           **extra))
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
        if not ctx.quick:
            out += await run_layer_switch(ctx)
    return out


async def run_layer_switch(ctx: Any) -> list[dict[str, Any]]:
    """The layer switch through each server, each SDK publishing (the official subscriber)."""
    from common import row

    out: list[dict[str, Any]] = []
    order = ", ".join(QUALITY_NAMES[q] for q in SWITCH_ORDER)
    setup = ("a VP8 camera track 1280x720 RGBA at 30 fps, simulcast q/h/f = 320x180, "
             "640x360, 1280x720 (top 1.5 Mbit/s cap, dynacast off), published by each SDK in "
             "its own process -> server -> an official subscriber, which from 5 s after its "
             f"first frame asks with set_video_quality for {order} (each directed switch "
             f"once, {SWITCH_DWELL:g} s on each layer); seconds from the request to the first "
             f"decoded frame of the new layer's size (a sample per switch; none if not within "
             f"{SWITCH_TIMEOUT:g} s: switches_reached counts them)")
    for kind, server in (("embedded", ctx.embedded), ("livekit-server", ctx.livekit)):
        for sdk in ("official", "aiolivekit"):
            r = await one(server, sdk, 1280, 720, 30.0, 1_500_000, 0.0, 0.0,
                          ctx.room("video-switch"), simulcast=True, layer_switch=True)
            name = f"video_layer_switch [1280x720 simulcast, {kind}]"
            reached = [s for s in r["switches"] if s["seconds_to_want"] is not None]
            out += [row(name, sdk, "seconds_to_new_layer", s["seconds_to_want"], "s",
                        switch=s, setup=setup) for s in reached]
            out.append(row(name, sdk, "switches_reached", len(reached), f"of {len(SWITCH_ORDER)}",
                           switches=r["switches"], setup=setup))
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
    ap.add_argument("--simulcast", action="store_true",
                    help="publish three simulcast layers (q/h/f; the top one at --bitrate)")
    ap.add_argument("--layer-switch", action="store_true",
                    help="simulcast; instead of the CPU window the subscriber switches layers "
                         "and times each switch")
    ap.add_argument("--verbose", action="store_true")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
