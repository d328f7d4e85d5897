"""One benchmark worker for both SDKs (same code, same pacing, same measurement).

Run by the benchmark scripts as a subprocess, either with our python (``aiolivekit``) or
with the official SDK venv's python (``livekit.rtc``); the two packages share the public
API, so this file imports one of them as ``rtc`` and does exactly the same thing::

    python bench/sdk_worker.py '{"sdk": "aiolivekit" | "official", "mode": ..., ...}'

Modes (every loop bounded by count and time; the parent mints the tokens):

* ``publish_cpu``: one participant publishes ``tracks`` 48 kHz mono tone tracks (20 ms
  frames paced by the wall clock); after ``warmup`` s it measures its own CPU
  (``getrusage``: every thread, user+sys) and the payload bytes sent over ``seconds``.
* ``latency``: a subscriber and a publisher in this process; the publisher sends
  silence with a 20 ms 1 kHz burst every ``period`` s; the subscriber's ``AudioStream``
  detects each burst onset. Latency = arrival of the frame holding the onset - the
  ``capture_frame`` call of the burst's first frame.
* ``ttff``: ``repeat`` fresh rooms: time from the ``publish_track`` call to the
  subscriber's ``track_subscribed``, its first decoded frame and its first audible frame.
* ``room``: ``len(tokens)`` participants in this process, each publishing one tone track
  and auto-subscribing to the others (no decoding: no AudioStream); prints a ``window``
  line (inbound RTP packets received so far), sleeps ``seconds`` and prints ``end``.

Output: JSON lines; the last one is ``{"event": "result", ...}`` or ``{"event": "error"}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ARGS: dict[str, Any] = {}
SDK = "aiolivekit"
rtc: Any = None  # the SDK module, set by _load_sdk() in the worker process only

RATE = 48000
SPF = 960  # 20 ms frames on both sides


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # all threads (the official SDK's Rust too)
    return r.ru_utime + r.ru_stime


def tone(freq: float, n: int, amp: float = 0.3) -> bytes:
    t = np.arange(n) / RATE
    return (amp * 32767 * np.sin(2 * math.pi * freq * t)).astype(np.int16).tobytes()


def periodic_frames(freq: float, count: int) -> list[bytes]:
    """``count`` consecutive 20 ms frames of a continuous tone (cycled by the feeder)."""
    pcm = np.frombuffer(tone(freq, SPF * count), dtype=np.int16)
    return [pcm[i * SPF : (i + 1) * SPF].tobytes() for i in range(count)]


def publish_options() -> Any:
    """Microphone options; ``ARGS["bitrate"]`` sets the Opus max bitrate on both SDKs."""
    opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    if ARGS.get("bitrate"):
        opts.audio_encoding.max_bitrate = int(ARGS["bitrate"])
    if "red" in ARGS and SDK == "official":
        opts.red = bool(ARGS["red"])
    return opts


async def publish_tone(room: Any, name: str, freq: float) -> tuple[Any, Any, Any]:
    source = rtc.AudioSource(RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track(name, source)
    opts = publish_options()
    pub = await asyncio.wait_for(room.local_participant.publish_track(track, opts), 20)
    return source, track, pub


async def feed(sources: list[Any], frames: list[list[bytes]], stop_at: float) -> int:
    """One task feeds every source a 20 ms frame per tick, paced by the wall clock."""
    start = time.monotonic()
    i = 0
    while time.monotonic() < stop_at:
        for src, fr in zip(sources, frames):
            await src.capture_frame(rtc.AudioFrame(fr[i % len(fr)], RATE, 1, SPF))
        i += 1
        ahead = start + i * SPF / RATE - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
    return i


async def connect(url: str, token: str, auto_subscribe: bool = True) -> Any:
    room = rtc.Room()
    await asyncio.wait_for(room.connect(url, token, rtc.RoomOptions(auto_subscribe=auto_subscribe)), 30)
    return room


def _stats_sum(stats: Any, direction: str) -> tuple[int, int]:
    """(bytes, packets) of RTP sent (``"out"``) or received (``"in"``), both peer connections
    (the official SDK uses one peer connection for both directions on livekit-server)."""
    items = list(stats.publisher_stats) + list(stats.subscriber_stats)
    total_b = total_p = 0
    for st in items:
        if SDK == "official":
            which = st.WhichOneof("stats")
            if direction == "out" and which == "outbound_rtp":
                total_b += st.outbound_rtp.sent.bytes_sent
                total_p += st.outbound_rtp.sent.packets_sent
            elif direction == "in" and which == "inbound_rtp":
                total_p += st.inbound_rtp.received.packets_received
                total_b += getattr(st.inbound_rtp.inbound, "bytes_received", 0)
        else:
            if direction == "out" and getattr(st, "type", "") == "outbound-rtp":
                total_b += st.bytesSent
                total_p += st.packetsSent
            elif direction == "in" and getattr(st, "type", "") == "inbound-rtp":
                total_p += st.packetsReceived
                total_b += getattr(st, "bytesReceived", 0)
    return total_b, total_p


def _inbound_streams(stats: Any) -> dict[str, tuple[int, float]]:
    """Inbound RTP streams: id -> (packets received, the stats' own timestamp in s)."""
    items = list(stats.publisher_stats) + list(stats.subscriber_stats)
    out: dict[str, tuple[int, float]] = {}
    for st in items:
        if SDK == "official":
            if st.WhichOneof("stats") == "inbound_rtp":
                ib = st.inbound_rtp
                ts = ib.rtc.timestamp / 1e6  # µs
                out[ib.rtc.id] = (ib.received.packets_received, ts)
        elif getattr(st, "type", "") == "inbound-rtp":
            out[st.id] = (st.packetsReceived, st.timestamp.timestamp())
    return out


# ---------------------------------------------------------------------------- modes


async def mode_publish_cpu(a: dict[str, Any]) -> dict[str, Any]:
    n, seconds, warmup = int(a["tracks"]), float(a["seconds"]), float(a.get("warmup", 2.0))
    room = await connect(a["url"], a["token"], auto_subscribe=False)
    sources = []
    for i in range(n):
        src, _, _ = await publish_tone(room, f"t{i}", 300 + 20 * i)
        sources.append(src)
    # whole periods of each tone would be long; 50 frames (1 s) of each is enough
    frames = [periodic_frames(300 + 20 * i, 50) for i in range(n)]
    stop_at = time.monotonic() + warmup + seconds + 1.0
    task = asyncio.ensure_future(feed(sources, frames, stop_at))
    await asyncio.sleep(warmup)
    b0, p0 = _stats_sum(await room.get_rtc_stats(), "out")
    c0, w0 = cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    c1, w1 = cpu_seconds(), time.monotonic()
    b1, p1 = _stats_sum(await room.get_rtc_stats(), "out")
    task.cancel()
    wall = w1 - w0
    cpu = 100 * (c1 - c0) / wall
    await asyncio.wait_for(room.disconnect(), 10)
    return {
        "tracks": n,
        "cpu_pct": cpu,
        "cpu_pct_per_track": cpu / n,
        "payload_kbps_per_track": (b1 - b0) * 8 / wall / 1000 / n,
        "packets_per_s_per_track": (p1 - p0) / wall / n,
    }


async def _first_track(room: Any, identity: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = room.remote_participants.get(identity)
        if p is not None:
            for pub in p.track_publications.values():
                if pub.track is not None:
                    return pub.track
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no subscribed track from {identity}")


async def mode_latency(a: dict[str, Any]) -> dict[str, Any]:
    period, count = float(a.get("period", 0.5)), int(a["count"])
    sub = await connect(a["url"], a["token_sub"])
    pub_room = await connect(a["url"], a["token_pub"])
    source, _, _ = await publish_tone(pub_room, "clicks", 1000)
    silence = bytes(SPF * 2)
    burst = tone(1000, SPF, 0.5)
    captures: list[float] = []
    onsets: list[float] = []
    frame_sizes: set[int] = set()
    loud_until = 0.0
    stream_started = asyncio.Event()
    finished = asyncio.Event()
    stop = time.monotonic() + 30 + count * period

    async def produce() -> None:
        start = time.monotonic()
        i = 0
        every = max(1, round(period * RATE / SPF))
        # keeps sending silence after the last burst (a receiver may hold the newest packet)
        while time.monotonic() < stop and not finished.is_set():
            data = silence
            if stream_started.is_set() and i % every == 0 and len(captures) < count:
                data = burst
                captures.append(time.monotonic())
            await source.capture_frame(rtc.AudioFrame(data, RATE, 1, SPF))
            i += 1
            ahead = start + i * SPF / RATE - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)

    async def consume(track: Any) -> None:
        nonlocal loud_until
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
        try:
            async for ev in stream:
                now = time.monotonic()
                stream_started.set()
                pcm = np.frombuffer(bytes(ev.frame.data), dtype=np.int16)
                frame_sizes.add(len(pcm))
                if now > loud_until and len(pcm) and int(np.abs(pcm).max()) > 3000:
                    onsets.append(now)
                    loud_until = now + period / 2
                if len(onsets) >= count or now > stop:
                    return
        finally:
            await stream.aclose()

    prod = asyncio.ensure_future(produce())
    track = await _first_track(sub, a["identity_pub"], 20)
    try:
        await asyncio.wait_for(consume(track), count * period + 30)
    except asyncio.TimeoutError:
        pass
    finished.set()
    prod.cancel()
    lat = []
    for t in onsets:  # match each onset to the latest burst captured before it
        before = [c for c in captures if c <= t]
        if before and t - before[-1] < period * 0.9:
            lat.append((t - before[-1]) * 1000)
    await asyncio.wait_for(pub_room.disconnect(), 10)
    await asyncio.wait_for(sub.disconnect(), 10)
    if not lat:
        raise RuntimeError(f"no bursts detected ({len(captures)} sent, {len(onsets)} onsets)")
    lat.sort()
    return {
        "latency_ms": lat,
        "median_ms": statistics.median(lat),
        "p95_ms": lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))],
        "bursts_sent": len(captures),
        "bursts_detected": len(lat),
        "frame_samples": sorted(frame_sizes),
    }


async def mode_ttff(a: dict[str, Any]) -> dict[str, Any]:
    out: list[dict[str, float]] = []
    for rep in a["reps"]:
        sub = await connect(a["url"], rep["token_sub"])
        pub_room = await connect(a["url"], rep["token_pub"])
        ident = rep["identity_pub"]
        deadline = time.monotonic() + 15
        while ident not in sub.remote_participants and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        marks: dict[str, float] = {}
        done = asyncio.Event()
        readers: list[asyncio.Future[None]] = []

        def on_sub(
            track: Any,
            *_: Any,
            marks: dict[str, float] = marks,
            done: asyncio.Event = done,
            readers: list[asyncio.Future[None]] = readers,
        ) -> None:
            marks.setdefault("subscribed", time.monotonic())

            async def read() -> None:
                stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
                try:
                    async for ev in stream:
                        now = time.monotonic()
                        marks.setdefault("first_frame", now)
                        pcm = np.frombuffer(bytes(ev.frame.data), dtype=np.int16)
                        if len(pcm) and int(np.abs(pcm).max()) > 3000:
                            marks.setdefault("first_audible", now)
                            return
                finally:
                    done.set()
                    await stream.aclose()

            readers.append(asyncio.ensure_future(read()))

        sub.on("track_subscribed", on_sub)
        source = rtc.AudioSource(RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("tone", source)
        frames = [periodic_frames(440, 50)]
        t0 = time.monotonic()
        feeder = asyncio.ensure_future(feed([source], frames, t0 + 20))
        await asyncio.wait_for(
            pub_room.local_participant.publish_track(track, publish_options()),
            20,
        )
        t_pub = time.monotonic()
        try:
            await asyncio.wait_for(done.wait(), 15)
        except asyncio.TimeoutError:
            pass
        feeder.cancel()
        for r in readers:
            r.cancel()
        res = {"publish_call_ms": (t_pub - t0) * 1000}
        for k, v in marks.items():
            res[k + "_ms"] = (v - t0) * 1000
        out.append(res)
        await asyncio.wait_for(pub_room.disconnect(), 10)
        await asyncio.wait_for(sub.disconnect(), 10)
        await asyncio.sleep(0.5)
    return {"runs": out}


async def mode_room(a: dict[str, Any]) -> dict[str, Any]:
    tokens: list[str] = a["tokens"]
    n = len(tokens)
    rooms = []
    for tok in tokens:
        rooms.append(await connect(a["url"], tok))
    sources = []
    for i, r in enumerate(rooms):
        src, _, _ = await publish_tone(r, f"p{i}", 300 + 30 * i)
        sources.append(src)
    frames = [periodic_frames(300 + 30 * i, 50) for i in range(n)]
    seconds = float(a["seconds"])
    task = asyncio.ensure_future(feed(sources, frames, time.monotonic() + 90 + seconds))

    def subscribed() -> int:
        total = 0
        for r in rooms:
            for p in r.remote_participants.values():
                total += sum(1 for pub in p.track_publications.values() if pub.track is not None)
        return total

    want = n * (n - 1)
    deadline = time.monotonic() + 60
    while subscribed() < want and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    got = subscribed()
    await asyncio.sleep(float(a.get("warmup", 2.0)))

    async def inbound() -> list[dict[str, tuple[int, float]]]:
        """Inbound RTP streams of each participant (see _inbound_streams)."""
        return [_inbound_streams(await r.get_rtc_stats()) for r in rooms]

    w0 = time.monotonic()
    first = await inbound()
    emit({"event": "window", "subscriptions": got, "expected": want})
    await asyncio.sleep(seconds)
    last = await inbound()
    w1 = time.monotonic()
    # a rate per stream over the stats' own timestamps, summed per participant
    per_participant = []
    for f, lst in zip(first, last):
        rate = 0.0
        for sid, (p1, t1) in lst.items():
            if sid in f and t1 > f[sid][1]:
                rate += (p1 - f[sid][0]) / (t1 - f[sid][1])
        per_participant.append(rate)
    pps = sum(per_participant)
    emit({"event": "end"})
    task.cancel()
    for r in rooms:
        try:
            await asyncio.wait_for(r.disconnect(), 10)
        except Exception:  # noqa: BLE001
            pass
    return {
        "subscriptions": got,
        "expected": want,
        "received_pps": pps,
        "pps_per_participant": [round(x, 1) for x in per_participant],
        "inbound_streams_per_participant": [len(x) for x in last],
        "client_seconds": w1 - w0,
    }


MODES = {
    "publish_cpu": mode_publish_cpu,
    "latency": mode_latency,
    "ttff": mode_ttff,
    "room": mode_room,
}


def _load_sdk() -> None:
    global ARGS, SDK, rtc
    ARGS = json.loads(sys.argv[1])
    SDK = ARGS.get("sdk", "aiolivekit")
    if SDK == "official":
        from livekit import rtc as mod
    else:
        import aiolivekit as mod

    rtc = mod


# ---------------------------------------------------------------------------- parent side


async def run_worker(
    python: str,
    args: dict[str, Any],
    timeout: float,
    on_event: Any = None,
) -> dict[str, Any]:
    """Run this file with ``python`` (ours or the official venv's) and return its result.

    ``on_event(obj)`` (may be async) is called for every intermediate JSON line (e.g. the
    ``window``/``end`` marks of mode ``room``). Raises RuntimeError on error or timeout.
    """
    args = dict(args, timeout=max(5.0, timeout - 5.0))
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        python, str(Path(__file__).resolve()), json.dumps(args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        limit=16 * 1024 * 1024,
    )
    result: dict[str, Any] | None = None
    err_chunks: list[bytes] = []

    async def read_err() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            if sum(map(len, err_chunks)) < 200_000:
                err_chunks.append(line)

    async def read_out() -> None:
        nonlocal result
        assert proc.stdout is not None
        async for raw in proc.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            if obj.get("event") in ("result", "error"):
                result = obj
            elif on_event is not None:
                r = on_event(obj)
                if asyncio.iscoroutine(r):
                    await r

    err_task = asyncio.ensure_future(read_err())
    both = asyncio.gather(read_out(), proc.wait())
    # a cancelled run (a background load stopped early) leaves nothing unretrieved
    both.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        await asyncio.wait_for(both, timeout)
    except asyncio.TimeoutError:
        pass
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        try:
            await asyncio.wait_for(err_task, 5)
        except asyncio.TimeoutError:
            err_task.cancel()
    if result is None or result.get("event") == "error":
        why = result.get("error") if result else f"no result in {timeout}s"
        tail = b"".join(err_chunks).decode(errors="replace")[-1500:]
        raise RuntimeError(f"{args.get('sdk')} worker {args.get('mode')}: {why}\n{tail}")
    return result


def main() -> None:
    _load_sdk()
    timeout = float(ARGS.get("timeout", 120))
    try:
        res = asyncio.run(asyncio.wait_for(MODES[ARGS["mode"]](ARGS), timeout))
        emit({"event": "result", "sdk": SDK, **res})
    except BaseException as e:  # noqa: BLE001
        emit({"event": "error", "sdk": SDK, "error": f"{type(e).__name__}: {e}"})
    sys.stdout.flush()
    os._exit(0)  # the official SDK may abort at interpreter exit


if __name__ == "__main__":
    main()
