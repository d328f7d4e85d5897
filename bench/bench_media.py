"""CPU per published 48 kHz mono Opus track: aiolivekit vs raw aiortc and vs the official SDK.

Standalone (``python bench/bench_media.py``): one publisher and one subscriber
RTCPeerConnection in this process over 127.0.0.1; N audio tracks; the subscriber decodes
and drains every track. Prints process CPU as a share of one core (total and per track)
and the payload bitrate per track, for aiolivekit's publish path and for raw aiortc.
``--video`` adds one VP8 640x480@30 track (RGBA frames in) per mode.

    python bench/bench_media.py [--tracks 1 4 16] [--seconds 5] [--video]

Under ``bench/run.py`` (``run(ctx)``) it also compares with the official SDK: for N = 1, 4,
16 tracks a worker process (``bench/sdk_worker.py`` mode ``publish_cpu``, the same code
for both SDKs) joins a room of the same server of the same run and publishes N tone
tracks at ``audio_encoding.max_bitrate`` 32 kbit/s with RED and DTX off on both (set
explicitly: the official SDK's defaults are on; its sent codec is read from its stats);
no subscriber. Its own CPU (``getrusage``, user+sys of every
thread) over ``ctx.seconds`` after a 2 s warm-up, ÷ wall time, and the payload bitrate it
sends (outbound-rtp ``bytesSent``) are reported per track.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from aiolivekit import (
    AudioFrame,
    AudioSource,
    LocalAudioTrack,
    RemoteAudioTrack,
    TrackPublishOptions,
)
from aiolivekit.webrtc.ice import host_addresses

RATE = 48000
N = 960  # 20 ms


def sine(freq: float, n: int, start: int) -> np.ndarray:
    return (np.sin(2 * np.pi * freq * np.arange(start, start + n) / RATE) * 10000).astype(np.int16)


class RawSineTrack(MediaStreamTrack):
    """What a plain aiortc app does: av.AudioFrames paced by sleep; aiortc encodes."""

    kind = "audio"

    def __init__(self, freq: float) -> None:
        super().__init__()
        self._freq = freq
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = av.AudioFrame.from_ndarray(sine(self._freq, N, self._pts).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += N
        return frame


async def run_audio(mode: str, tracks: int, seconds: float) -> dict[str, Any]:
    cfg = RTCConfiguration(iceServers=[])
    pub, sub = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
    remote: list[Any] = []
    drains: list[asyncio.Task[None]] = []
    feeders: list[asyncio.Task[None]] = []
    sources: list[AudioSource] = []
    senders = []

    @sub.on("track")
    def _on_track(track: Any) -> None:
        if mode == "aiolivekit":
            remote.append(RemoteAudioTrack._from_rtc(track, sid=f"TR_{len(remote)}", name="b"))
        else:
            async def drain() -> None:
                try:
                    while True:
                        await track.recv()
                except MediaStreamError:
                    pass
            drains.append(asyncio.ensure_future(drain()))

    for i in range(tracks):
        freq = 300 + 20 * i
        if mode == "aiolivekit":
            src = AudioSource(RATE, 1, queue_size_ms=100)
            local = LocalAudioTrack.create_audio_track(f"t{i}", src)
            local._configure(TrackPublishOptions())
            tr = pub.addTransceiver(local._rtc_track, direction="sendonly")
            local._attach_sender(tr.sender)
            sources.append(src)

            async def feed(src: AudioSource = src, freq: float = freq) -> None:
                t = 0
                while True:  # back-pressure paces this loop (bounded by the run time)
                    await src.capture_frame(AudioFrame(sine(freq, N, t).tobytes(), RATE, 1, N))
                    t += N
            feeders.append(asyncio.ensure_future(feed()))
        else:
            tr = pub.addTransceiver(RawSineTrack(freq), direction="sendonly")
        senders.append(tr.sender)

    with host_addresses(["127.0.0.1"]):
        await pub.setLocalDescription(await pub.createOffer())
        await sub.setRemoteDescription(pub.localDescription)
        await sub.setLocalDescription(await sub.createAnswer())
        await pub.setRemoteDescription(sub.localDescription)

    await asyncio.sleep(1.0)  # warm-up
    async def sent() -> int:
        total = 0
        for s in senders:
            for st in (await s.getStats()).values():
                if st.type == "outbound-rtp":
                    total += st.bytesSent
        return total
    b0 = await sent()
    c0, w0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    c1, w1 = time.process_time(), time.monotonic()
    b1 = await sent()
    for f in feeders + drains:
        f.cancel()
    for t in remote:
        await t._close()
    for s in sources:
        await s.aclose()
    await pub.close()
    await sub.close()
    cpu = (c1 - c0) / (w1 - w0) * 100
    return {
        "mode": mode,
        "tracks": tracks,
        "cpu_pct_of_core": round(cpu, 1),
        "cpu_pct_per_track": round(cpu / tracks, 2),
        "payload_kbps_per_track": round((b1 - b0) * 8 / (w1 - w0) / 1000 / tracks, 1),
    }


class RawVideoTrack(MediaStreamTrack):
    """Plain aiortc video: av.VideoFrames at 30 fps, aiortc's VP8 encoder."""

    kind = "video"

    def __init__(self, frames: list[Any]) -> None:
        super().__init__()
        self._frames = frames
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> Any:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._n / 30 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        rgba = self._frames[self._n % len(self._frames)]
        frame = av.VideoFrame.from_ndarray(rgba, format="rgba")
        frame.pts = self._n * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        self._n += 1
        return frame


async def run_video(mode: str, seconds: float) -> dict[str, Any]:
    from aiolivekit import (
        LocalVideoTrack,
        RemoteVideoTrack,
        VideoBufferType,
        VideoFrame,
        VideoSource,
    )

    w, h = 640, 480
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w, 4), dtype=np.uint8)
    frames = [np.roll(base, 4 * i, axis=1) for i in range(30)]  # moving content
    cfg = RTCConfiguration(iceServers=[])
    pub, sub = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
    tasks: list[asyncio.Task[None]] = []
    remote: list[Any] = []

    @sub.on("track")
    def _on_track(track: Any) -> None:
        remote.append(RemoteVideoTrack._from_rtc(track, sid="TR_v", name="v"))

    src = None
    if mode == "aiolivekit":
        src = VideoSource(w, h)
        local = LocalVideoTrack.create_video_track("v", src)
        local._configure(TrackPublishOptions())
        tr = pub.addTransceiver(local._rtc_track, direction="sendonly")
        local._attach_sender(tr.sender)

        async def produce() -> None:
            n = 0
            t0 = time.monotonic()
            while True:
                src.capture_frame(VideoFrame(w, h, VideoBufferType.RGBA, frames[n % 30].tobytes()))
                n += 1
                await asyncio.sleep(max(0.0, t0 + n / 30 - time.monotonic()))
        tasks.append(asyncio.ensure_future(produce()))
    else:
        tr = pub.addTransceiver(RawVideoTrack(frames), direction="sendonly")
    with host_addresses(["127.0.0.1"]):
        await pub.setLocalDescription(await pub.createOffer())
        await sub.setRemoteDescription(pub.localDescription)
        await sub.setLocalDescription(await sub.createAnswer())
        await pub.setRemoteDescription(sub.localDescription)
    await asyncio.sleep(1.0)
    f0 = remote[0].frames_received if remote else 0
    c0, w0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    c1, w1 = time.process_time(), time.monotonic()
    f1 = remote[0].frames_received if remote else 0
    for t in tasks:
        t.cancel()
    for t in remote:
        await t._close()
    if src is not None:
        await src.aclose()
    await pub.close()
    await sub.close()
    return {
        "mode": mode,
        "video": "vp8 640x480@30",
        "cpu_pct_of_core": round((c1 - c0) / (w1 - w0) * 100, 1),
        "fps_received": round((f1 - f0) / (w1 - w0), 1),
    }


_SELF = Path(__file__).resolve()


async def run_ctx(ctx: Any) -> list[dict[str, Any]]:
    """Rows for bench/run.py: raw aiortc comparison (subprocess) + official SDK comparison."""
    here = str(_SELF.parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from common import row
    from sdk_worker import run_worker

    rows: list[dict[str, Any]] = []
    counts = [1, 4, 16]
    seconds = ctx.seconds
    # 1. our publish path vs raw aiortc, in a process of its own (its CPU is measured)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(_SELF), "--tracks", *map(str, counts),
        "--seconds", str(seconds), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), len(counts) * 2 * (seconds + 60))
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"bench_media.py exited {proc.returncode}: {err.decode()[-2000:]}")
    for line in out.decode().splitlines():
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        if "tracks" not in obj:
            continue
        # one benchmark per track count; raw aiortc as "_raw_aiortc" metrics of the same row
        suffix = "_raw_aiortc" if obj["mode"] == "aiortc" else ""
        bench = f"loopback_publish_opus_{obj['tracks']}_tracks [no server, vs raw aiortc]"
        setup = (f"no server: a publisher and a subscriber RTCPeerConnection over 127.0.0.1 in "
                 f"one fresh process (bench_media.py), {obj['tracks']} 48 kHz mono tone "
                 f"track(s), the subscriber decodes every track; '_raw_aiortc' = the same with "
                 f"plain aiortc (its own encoder settings, so a different bitrate) instead of "
                 f"our publish path; process CPU over {seconds:g} s. Every number is in the "
                 f"aiolivekit column (raw aiortc as the '_raw_aiortc' metrics): the official "
                 f"SDK is not in this benchmark")
        rows.append(row(bench, "aiolivekit", "cpu_per_track" + suffix,
                        obj["cpu_pct_per_track"], "% of a core", tracks=obj["tracks"],
                        setup=setup))
        rows.append(row(bench, "aiolivekit", "payload_bitrate_per_track" + suffix,
                        obj["payload_kbps_per_track"], "kbit/s", tracks=obj["tracks"],
                        setup=setup))
    # 2. vs the official SDK, through each server of this run
    sdks = [("aiolivekit", sys.executable)]
    if ctx.official_python:
        sdks.append(("official", ctx.official_python))
    repeat = 1 if ctx.quick else max(1, min(ctx.repeat, 2))
    for sname, server in ctx.servers.items():
        for rep in range(repeat):
            for n in counts:
                order = sdks if rep % 2 == 0 else sdks[::-1]
                for sdk, python in order:
                    room = ctx.room("pubcpu")
                    res = await run_worker(
                        python,
                        {"sdk": sdk, "mode": "publish_cpu", "url": server.url,
                         "token": server.token("pub", room), "tracks": n, "seconds": seconds,
                         "warmup": 2.0, "bitrate": 32000, "red": False, "dtx": False},
                        timeout=seconds + 90,
                    )
                    bench = f"publish_cpu_opus48k_{n}_tracks [server={sname}]"
                    kbps = res["payload_kbps_per_track"]
                    setup = (
                        f"server {sname}; each SDK in a fresh worker process (bench/sdk_worker.py"
                        f" mode publish_cpu, the same code for both; order alternates), one "
                        f"participant publishing {n} tone track(s) (48 kHz mono), 20 ms frames "
                        f"paced by the wall clock; Opus max 32 kbit/s, RED off, DTX off on both "
                        f"(set explicitly; the official codec is read from its stats); no "
                        f"subscriber; CPU = the worker's getrusage (user+sys, all threads) over "
                        f"{seconds:g} s after a 2 s warm-up, per wall second")
                    extra = {"tracks": n, "payload_kbps_per_track": kbps, "setup": setup,
                             "publish": res.get("publish"), "codecs_sent": res.get("codecs_sent")}
                    rows.append(row(bench, sdk, "cpu_per_track", res["cpu_pct_per_track"],
                                    "% of a core", **extra))
                    rows.append(row(bench, sdk, "cpu_total", res["cpu_pct"], "% of a core",
                                    **extra))
                    rows.append(row(bench, sdk, "payload_bitrate_per_track", kbps, "kbit/s",
                                    **extra))
                    ctx.log(f"publish_cpu {sname} {sdk} {n} tracks: {res['cpu_pct']:.1f}% "
                            f"({res['cpu_pct_per_track']:.2f}%/track), {kbps:.1f} kbit/s/track, "
                            f"{res['packets_per_s_per_track']:.1f} packets/s/track, "
                            f"codecs {res.get('codecs_sent')}")
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracks", type=int, nargs="*", default=[1, 4, 16])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--video", action="store_true")
    args = ap.parse_args()
    if args.video:
        for mode in ("aiortc", "aiolivekit"):
            res = await asyncio.wait_for(run_video(mode, args.seconds), args.seconds + 60)
            print(json.dumps(res), flush=True)
    for n in args.tracks:
        for mode in ("aiortc", "aiolivekit"):
            res = await asyncio.wait_for(run_audio(mode, n, args.seconds), args.seconds + 60)
            print(json.dumps(res), flush=True)


if __name__ == "__main__":
    asyncio.run(main())


async def run(ctx: Any) -> list[dict[str, Any]]:  # bench/run.py entry point
    return await run_ctx(ctx)
