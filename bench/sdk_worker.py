"""One benchmark worker for both SDKs (same code, same pacing, same measurement).

Run by the benchmark scripts as a subprocess, either with our python (``aiolivekit``) or
with the official SDK venv's python (``livekit.rtc``); the two packages share the public
API, so this file imports one of them as ``rtc`` and does exactly the same thing::

    python bench/sdk_worker.py '{"sdk": "aiolivekit" | "official", "mode": ..., ...}'

Publish options are the same on both SDKs and always explicit: ``bitrate`` (Opus max),
``red`` and ``dtx`` (both default False; see :func:`publish_options`); every result
echoes them as ``publish``, and the official SDK's codecs as read from its stats.

Modes (every loop bounded by count and time; the parent mints the tokens):

* ``publish_cpu``: one participant publishes ``tracks`` 48 kHz mono tone tracks (20 ms
  frames paced by the wall clock); after ``warmup`` s it measures its own CPU
  (``getrusage``: every thread, user+sys) and the payload bytes sent over ``seconds``.
* ``subscribe_cpu``: one participant subscribes to the ``tracks`` audio tracks of
  ``publisher`` and reads each through an ``AudioStream`` (48 kHz mono); after
  ``warmup`` s it measures its own CPU over ``seconds`` and the share of 10 ms of each
  stream that carried the tone (a decryption failure shows as silence or no frames).
* ``latency``: a subscriber and a publisher in this process; the publisher sends
  silence with a 20 ms 1 kHz burst every ``period`` s; latency = the ``capture_frame``
  call of the burst's first frame -> the subscriber application gets the frame holding
  the onset. ``arrival``: as ``AudioStream`` yields it (official: after NetEq, 10 ms
  frames; ours: each packet as it arrives). With ``playout_ms`` (aiolivekit only) the
  same frames also go through a bench-side playout buffer (``bench/playout.py``) and
  ``playout`` reports the onsets as it releases them, in the same run. The official
  SDK's NetEq counters over the window are in ``jitter_buffer``.
* ``ttff``: ``repeat`` fresh rooms: time from the ``publish_track`` call to the
  subscriber's ``track_subscribed``, its first frame and its first audible frame (and,
  with ``playout_ms``, the same after the playout buffer: ``playout_first_*``).
* ``tone_pub`` / ``tone_sub`` (``bench_audio_network.py``): a continuous 440 Hz tone with
  a 30 ms 880 Hz mark every 0.5 s, and its measurement over wall-clock windows (tone
  share, SNR, concealed share, mark onsets for latency; ``bench/tone_quality.py``).
* ``room``: ``len(tokens)`` participants in this process, each publishing one tone track
  and auto-subscribing to the others (no decoding: no AudioStream); prints a ``window``
  line (inbound RTP packets received so far), sleeps ``seconds`` and prints ``end``.

Output: JSON lines; the last one is ``{"event": "result", ...}`` or ``{"event": "error"}``.
"""

from __future__ import annotations

import asyncio
import base64
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

_SELF = str(Path(__file__).resolve())
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
    """Microphone options, set explicitly and identically on both SDKs.

    ``ARGS["bitrate"]`` sets the Opus max bitrate; ``ARGS["red"]`` and ``ARGS["dtx"]``
    (default False for both) set RED and DTX. The SDKs' own defaults differ (the official
    one publishes with RED and DTX on, ours with both off), so they are never left to
    the defaults.
    """
    red, dtx = bool(ARGS.get("red", False)), bool(ARGS.get("dtx", False))
    opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, red=red, dtx=dtx)
    if ARGS.get("bitrate"):
        opts.audio_encoding.max_bitrate = int(ARGS["bitrate"])
    return opts


def publish_setup() -> dict[str, Any]:
    """What ``publish_options`` asked for (echoed in every result)."""
    return {"red": bool(ARGS.get("red", False)), "dtx": bool(ARGS.get("dtx", False)),
            "max_bitrate": int(ARGS.get("bitrate") or 0)}


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
        for src, fr in zip(sources, frames, strict=True):
            await src.capture_frame(rtc.AudioFrame(fr[i % len(fr)], RATE, 1, SPF))
        i += 1
        ahead = start + i * SPF / RATE - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
    return i


async def connect(url: str, token: str, auto_subscribe: bool = True) -> Any:
    """``ARGS["e2ee"]`` (a shared key string): end-to-end encryption on, the same on both."""
    room = rtc.Room()
    options = rtc.RoomOptions(auto_subscribe=auto_subscribe)
    if ARGS.get("e2ee"):
        options.encryption = rtc.E2EEOptions(key_provider_options=rtc.KeyProviderOptions(
            shared_key=str(ARGS["e2ee"]).encode()))
    await asyncio.wait_for(room.connect(url, token, options), 30)
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
    stats = await room.get_rtc_stats()
    b1, p1 = _stats_sum(stats, "out")
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
        "publish": publish_setup(),
        "codecs_sent": _codecs(stats, "out"),
    }


async def mode_subscribe_cpu(a: dict[str, Any]) -> dict[str, Any]:
    n, seconds, warmup = int(a["tracks"]), float(a["seconds"]), float(a.get("warmup", 2.0))
    room = await connect(a["url"], a["token"])
    deadline = time.monotonic() + 30
    tracks: list[Any] = []
    while len(tracks) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(tracks)} of {n} tracks subscribed")
        p = room.remote_participants.get(a["publisher"])
        tracks = [] if p is None else [
            pub.track for pub in p.track_publications.values() if pub.track is not None]
        await asyncio.sleep(0.01)
    counts = {"frames": 0, "loud": 0}
    window = {"on": False}

    async def read(track: Any) -> None:
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
        async for ev in stream:
            if window["on"]:
                pcm = np.frombuffer(ev.frame.data, dtype=np.int16)
                # per 10 ms: is the tone there (its amplitude is 0.3 of full scale)?
                for part in np.array_split(pcm, max(1, len(pcm) // (RATE // 100))):
                    counts["frames"] += 1
                    counts["loud"] += int(np.abs(part).max(initial=0) > 3000)

    readers = [asyncio.ensure_future(read(t)) for t in tracks[:n]]
    await asyncio.sleep(warmup)
    window["on"] = True
    c0, w0 = cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    c1, w1 = cpu_seconds(), time.monotonic()
    window["on"] = False
    for r in readers:
        r.cancel()
    await asyncio.wait_for(room.disconnect(), 10)
    wall = w1 - w0
    cpu = 100 * (c1 - c0) / wall
    return {"tracks": n, "cpu_pct": cpu, "cpu_pct_per_track": cpu / n,
            "tone_share": counts["loud"] / max(1, counts["frames"]),
            "windows_per_s_per_track": counts["frames"] / wall / n}


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


def _codecs(stats: Any, direction: str) -> list[str] | None:
    """MIME types of the RTP streams sent (``"out"``) or received (``"in"``), from the
    official SDK's codec stats; None for aiolivekit (aiortc's stats have no codec entry;
    its publication's ``mime_type`` says whether RED was negotiated)."""
    if SDK != "official":
        return None
    items = list(stats.publisher_stats) + list(stats.subscriber_stats)
    mime = {st.codec.rtc.id: st.codec.codec.mime_type
            for st in items if st.WhichOneof("stats") == "codec"}
    want = "outbound_rtp" if direction == "out" else "inbound_rtp"
    out = set()
    for st in items:
        if st.WhichOneof("stats") == want:
            cid = getattr(st, want).stream.codec_id
            out.add(mime.get(cid, cid or "?"))
    return sorted(out)


def _jitter_buffer(stats: Any) -> dict[str, float] | None:
    """The official SDK's NetEq counters for received audio (sums over inbound streams):
    ``jitter_buffer_delay`` / ``_target_delay`` / ``_minimum_delay`` (seconds, summed
    per emitted sample), ``jitter_buffer_emitted_count`` (samples), concealed samples."""
    if SDK != "official":
        return None
    tot = {"delay": 0.0, "target": 0.0, "minimum": 0.0, "emitted": 0.0, "concealed": 0.0,
           "received": 0.0, "nacks": 0.0}
    for st in list(stats.publisher_stats) + list(stats.subscriber_stats):
        if st.WhichOneof("stats") != "inbound_rtp" or st.inbound_rtp.stream.kind != "audio":
            continue
        ib = st.inbound_rtp.inbound
        tot["delay"] += ib.jitter_buffer_delay
        tot["target"] += ib.jitter_buffer_target_delay
        tot["minimum"] += ib.jitter_buffer_minimum_delay
        tot["emitted"] += ib.jitter_buffer_emitted_count
        tot["concealed"] += ib.concealed_samples
        tot["received"] += ib.total_samples_received
        tot["nacks"] += ib.nack_count
    return tot


def _jitter_window(s0: dict[str, float] | None, s1: dict[str, float] | None
                   ) -> dict[str, float] | None:
    """Mean NetEq delays (ms per emitted sample) between two ``_jitter_buffer`` snapshots."""
    if not s0 or not s1:
        return None
    n = s1["emitted"] - s0["emitted"]
    if n <= 0:
        return None
    return {
        "mean_delay_ms": 1000 * (s1["delay"] - s0["delay"]) / n,
        "mean_target_delay_ms": 1000 * (s1["target"] - s0["target"]) / n,
        "mean_minimum_delay_ms": 1000 * (s1["minimum"] - s0["minimum"]) / n,
        "emitted_samples": n,
        "concealed_samples": s1["concealed"] - s0["concealed"],
    }


class Onsets:
    """Burst onsets: a frame with a peak above 3000 after ``quiet`` s without one."""

    def __init__(self, quiet: float) -> None:
        self.quiet = quiet
        self.times: list[float] = []
        self._loud_until = 0.0

    def feed(self, pcm: bytes, now: float) -> None:
        s = np.frombuffer(pcm, dtype=np.int16)
        if now > self._loud_until and len(s) and int(np.abs(s).max()) > 3000:
            self.times.append(now)
            self._loud_until = now + self.quiet


class Playout:
    """aiolivekit only: a bench-side :class:`playout.PlayoutBuffer` after ``AudioStream``
    and the task that releases its 10 ms chunks on a steady clock (``on_chunk(chunk, now)``,
    ``now`` = when the application got it)."""

    def __init__(self, target_ms: float, on_chunk: Any) -> None:
        from playout import PlayoutBuffer  # bench/ (this file's directory)

        self.buf = PlayoutBuffer(target_ms / 1000.0, RATE, 1, chunk_ms=10)
        self.on_chunk = on_chunk
        self._started = asyncio.Event()
        self.late_ms: list[float] = []  # wake-up after the tick's due time (scheduling)
        self.task = asyncio.ensure_future(self._run())

    def push(self, pcm: bytes, now: float) -> None:
        self.buf.push(pcm, now)
        self._started.set()

    async def _run(self) -> None:
        await self._started.wait()
        while True:
            due = self.buf.next_due()
            assert due is not None
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            for chunk in self.buf.pop_due(now):
                self.late_ms.append((now - chunk.due) * 1000)
                self.on_chunk(chunk, now)

    def stats(self) -> dict[str, Any]:
        late = sorted(self.late_ms) or [0.0]
        return {"target_ms": self.buf.target * 1000, "chunk_ms": self.buf.period * 1000,
                "mean_hold_ms": self.buf.mean_hold * 1000, "released": self.buf.released,
                "underruns": self.buf.underruns, "dropped_samples": self.buf.dropped_samples,
                "median_tick_late_ms": statistics.median(late), "max_tick_late_ms": late[-1]}

    async def aclose(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def _match(onsets: list[float], captures: list[float], period: float) -> list[float]:
    """Latency (ms) of each onset after the latest burst captured before it."""
    lat = []
    for t in onsets:
        before = [c for c in captures if c <= t]
        if before and t - before[-1] < period * 0.9:
            lat.append((t - before[-1]) * 1000)
    return sorted(lat)


def _lat_summary(lat: list[float]) -> dict[str, Any]:
    return {"latency_ms": lat, "median_ms": statistics.median(lat),
            "p95_ms": lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))],
            "bursts_detected": len(lat)}


async def mode_latency(a: dict[str, Any]) -> dict[str, Any]:
    period, count = float(a.get("period", 0.5)), int(a["count"])
    playout_ms = a.get("playout_ms")  # aiolivekit: also measure after a playout buffer
    if playout_ms is not None and SDK == "official":
        raise ValueError("playout_ms is for aiolivekit (the official SDK has NetEq)")
    sub = await connect(a["url"], a["token_sub"])
    pub_room = await connect(a["url"], a["token_pub"])
    source, _, _ = await publish_tone(pub_room, "clicks", 1000)
    silence = bytes(SPF * 2)
    burst = tone(1000, SPF, 0.5)
    captures: list[float] = []
    frame_sizes: set[int] = set()
    arrival = Onsets(period / 2)  # the frame as AudioStream yields it
    played = Onsets(period / 2)  # aiolivekit: the chunk as the playout buffer releases it
    onset_hold: list[float] = []  # arrival of the onset chunk's first sample -> release
    playout = None
    if playout_ms is not None:
        def on_chunk(ch: Any, now: float) -> None:
            n = len(played.times)
            played.feed(ch.pcm, now)
            if len(played.times) > n and ch.arrived is not None:
                onset_hold.append((now - ch.arrived) * 1000)

        playout = Playout(float(playout_ms), on_chunk)
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

    def done() -> bool:
        return len(arrival.times) >= count and (playout is None or len(played.times) >= count)

    async def consume(track: Any) -> None:
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
        try:
            async for ev in stream:
                now = time.monotonic()
                stream_started.set()
                pcm = bytes(ev.frame.data)
                frame_sizes.add(len(pcm) // 2)
                arrival.feed(pcm, now)
                if playout is not None:
                    playout.push(pcm, now)
                if done() or now > stop:
                    return
        finally:
            await stream.aclose()

    prod = asyncio.ensure_future(produce())
    track = await _first_track(sub, a["identity_pub"], 20)
    cons = asyncio.ensure_future(consume(track))
    # NetEq counters over the measured window (official only): from the first frame to the end
    await asyncio.wait({cons, asyncio.ensure_future(stream_started.wait())}, timeout=20,
                       return_when=asyncio.FIRST_COMPLETED)
    jb0 = _jitter_buffer(await sub.get_rtc_stats())
    try:
        await asyncio.wait_for(cons, count * period + 30)
    except asyncio.TimeoutError:
        pass
    if playout is not None:  # the stream has ended: later ticks would count as underruns
        await playout.aclose()
    sub_stats = await sub.get_rtc_stats()
    jb1 = _jitter_buffer(sub_stats)
    codecs_in = _codecs(sub_stats, "in")
    codecs_out = _codecs(await pub_room.get_rtc_stats(), "out")
    finished.set()
    prod.cancel()
    await asyncio.wait_for(pub_room.disconnect(), 10)
    await asyncio.wait_for(sub.disconnect(), 10)
    lat = _match(arrival.times, captures, period)
    if not lat:
        raise RuntimeError(f"no bursts detected ({len(captures)} sent, "
                           f"{len(arrival.times)} onsets)")
    res: dict[str, Any] = {
        "arrival": _lat_summary(lat),
        "bursts_sent": len(captures),
        "frame_samples": sorted(frame_sizes),
        "publish": publish_setup(),
        "codecs_sent": codecs_out,
        "codecs_received": codecs_in,
        "jitter_buffer": _jitter_window(jb0, jb1),
    }
    if playout is not None:
        plat = _match(played.times, captures, period)
        if not plat:
            raise RuntimeError(f"no bursts detected after the playout buffer "
                               f"({len(captures)} sent, {len(played.times)} onsets)")
        res["playout"] = {**_lat_summary(plat), **playout.stats(),
                          "onset_hold_ms": sorted(onset_hold)}
    return res


async def mode_ttff(a: dict[str, Any]) -> dict[str, Any]:
    """First frame at the AudioStream and, for aiolivekit with ``playout_ms``, after the
    playout buffer (``playout_first_frame`` / ``playout_first_audible``)."""
    playout_ms = a.get("playout_ms")
    if playout_ms is not None and SDK == "official":
        raise ValueError("playout_ms is for aiolivekit (the official SDK has NetEq)")
    out: list[dict[str, float]] = []
    for rep in a["reps"]:
        sub = await connect(a["url"], rep["token_sub"])
        pub_room = await connect(a["url"], rep["token_pub"])
        ident = rep["identity_pub"]
        deadline = time.monotonic() + 15
        # polls SDK state the same way on both SDKs; bounded by the deadline
        while ident not in sub.remote_participants and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        marks: dict[str, float] = {}
        done = asyncio.Event()
        readers: list[asyncio.Future[None]] = []
        playouts: list[Playout] = []

        def complete(marks: dict[str, float] = marks, done: asyncio.Event = done) -> None:
            if "first_audible" in marks and (playout_ms is None
                                             or "playout_first_audible" in marks):
                done.set()

        def on_chunk(chunk: Any, now: float, marks: dict[str, float] = marks,
                     complete: Any = complete) -> None:
            if chunk.silence:  # an underrun: nothing received to play yet
                return
            marks.setdefault("playout_first_frame", now)
            pcm = np.frombuffer(chunk.pcm, dtype=np.int16)
            if int(np.abs(pcm).max()) > 3000:
                marks.setdefault("playout_first_audible", now)
                complete()

        def on_sub(
            track: Any,
            *_: Any,
            marks: dict[str, float] = marks,
            done: asyncio.Event = done,
            readers: list[asyncio.Future[None]] = readers,
            playouts: list[Playout] = playouts,
            on_chunk: Any = on_chunk,
            complete: Any = complete,
        ) -> None:
            marks.setdefault("subscribed", time.monotonic())
            playout = Playout(float(playout_ms), on_chunk) if playout_ms is not None else None
            if playout is not None:
                playouts.append(playout)

            async def read() -> None:
                stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
                try:
                    async for ev in stream:
                        now = time.monotonic()
                        pcm_b = bytes(ev.frame.data)
                        marks.setdefault("first_frame", now)
                        if playout is not None:
                            playout.push(pcm_b, now)
                        pcm = np.frombuffer(pcm_b, dtype=np.int16)
                        if len(pcm) and int(np.abs(pcm).max()) > 3000:
                            marks.setdefault("first_audible", now)
                            complete()
                        if done.is_set():
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
        for p in playouts:
            await p.aclose()
        res = {"publish_call_ms": (t_pub - t0) * 1000}
        for k, v in marks.items():
            res[k + "_ms"] = (v - t0) * 1000
        out.append(res)
        await asyncio.wait_for(pub_room.disconnect(), 10)
        await asyncio.wait_for(sub.disconnect(), 10)
        await asyncio.sleep(0.5)
    return {"runs": out, "publish": publish_setup()}


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
    while subscribed() < want and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll
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
    for f, lst in zip(first, last, strict=True):
        rate = 0.0
        for sid, (p1, t1) in lst.items():
            if sid in f and t1 > f[sid][1]:
                rate += (p1 - f[sid][0]) / (t1 - f[sid][1])
        per_participant.append(rate)
    pps = sum(per_participant)
    emit({"event": "end"})
    stats0 = await rooms[0].get_rtc_stats()
    codecs = {"sent": _codecs(stats0, "out"), "received": _codecs(stats0, "in")}
    task.cancel()
    for r in rooms:
        try:
            await asyncio.wait_for(r.disconnect(), 10)
        except Exception as exc:  # noqa: BLE001 - the result is measured already
            print(f"room disconnect failed: {exc!r}", file=sys.stderr)
    return {
        "subscriptions": got,
        "expected": want,
        "received_pps": pps,
        "pps_per_participant": [round(x, 1) for x in per_participant],
        "inbound_streams_per_participant": [len(x) for x in last],
        "client_seconds": w1 - w0,
        "publish": publish_setup(),
        "codecs": codecs,
    }


# ---------------------------------------------------------------- audio under impairment


TONE_AMP = 8000.0
MARK_EVERY = 50  # 10 ms frames: a 30 ms 880 Hz mark every 0.5 s (latency)


async def mode_tone_pub(a: dict[str, Any]) -> dict[str, Any]:
    """Publish a continuous 440 Hz tone (amplitude ``TONE_AMP``) in 10 ms frames paced by
    the clock until wall time ``a["until"]``, with a 30 ms mark at 880 Hz (same amplitude)
    every 0.5 s; returns the wall time of each mark's first ``capture_frame`` call."""
    from tone_quality import tone_pcm  # bench/

    room = await connect(a["url"], a["token"], auto_subscribe=False)
    source = rtc.AudioSource(RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("tone", source)
    await asyncio.wait_for(room.local_participant.publish_track(track, publish_options()), 20)
    emit({"event": "published"})
    marks: list[float] = []
    start = time.monotonic()
    i = 0
    while time.time() < float(a["until"]):
        marking = i % MARK_EVERY < 3
        pcm = tone_pcm(i * 480, 480, 880.0 if marking else 440.0, TONE_AMP)
        if i % MARK_EVERY == 0:
            marks.append(time.time())
        await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), RATE, 1, 480))
        i += 1
        ahead = start + i * 0.01 - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
    codecs_out = _codecs(await room.get_rtc_stats(), "out")
    await asyncio.wait_for(room.disconnect(), 10)
    return {"marks": marks, "publish": publish_setup(), "codecs_sent": codecs_out}


async def _concealment(room: Any, track: Any) -> tuple[float, float, float]:
    """(concealed samples, samples received, NACKs sent) of the received audio so far."""
    if SDK == "official":
        jb = _jitter_buffer(await room.get_rtc_stats())
        return (jb["concealed"], jb["received"], jb["nacks"]) if jb else (0.0, 0.0, 0.0)
    for st in await track.get_stats():
        if getattr(st, "type", "") == "inbound-rtp":
            return (float(getattr(st, "concealedSamples", 0)),
                    float(getattr(st, "totalSamplesReceived", 0)),
                    float(getattr(st, "nackCount", 0)))
    return 0.0, 0.0, 0.0


async def mode_tone_sub(a: dict[str, Any]) -> dict[str, Any]:
    """Receive the ``tone_pub`` tone through ``AudioStream`` (48 kHz mono) and measure
    each window of ``a["windows"]`` (``[name, t0, t1]``, wall times): the tone measures of
    ``bench/tone_quality.py``, the mark onsets (wall time of the frame holding each) and
    the concealed share (the SDK's own ``concealedSamples`` / ``totalSamplesReceived``).
    ``BENCH_TONE_DUMP=<dir>``: each window's received PCM saved there (``.npy``)."""
    from tone_quality import analyse, mark_onsets  # bench/

    room = await connect(a["url"], a["token"])
    track = await _first_track(room, a["identity_pub"], 30)
    stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
    emit({"event": "subscribed"})
    frames: list[tuple[float, bytes]] = []
    windows = [(str(n), float(t0), float(t1)) for n, t0, t1 in a["windows"]]
    snaps: dict[str, list[tuple[float, float, float]]] = {}

    async def collect() -> None:
        async for ev in stream:
            frames.append((time.time(), bytes(ev.frame.data)))

    async def snapshot() -> None:
        for name, t0, t1 in windows:
            for t in (t0, t1):
                await asyncio.sleep(max(0.0, t - time.time()))
                snaps.setdefault(name, []).append(await _concealment(room, track))

    task = asyncio.ensure_future(collect())
    await asyncio.wait_for(snapshot(), windows[-1][2] - time.time() + 30)
    task.cancel()
    out = []
    for name, t0, t1 in windows:
        sel = [(t, d) for t, d in frames if t0 <= t < t1]
        pcm = b"".join(d for _, d in sel)
        if os.environ.get("BENCH_TONE_DUMP"):  # a directory: each window's received PCM
            np.save(os.path.join(os.environ["BENCH_TONE_DUMP"],
                                 f"{SDK}-{int(t0)}-{name}.npy"),
                    np.frombuffer(pcm, dtype=np.int16))
        q = analyse(pcm, t1 - t0, amplitude=TONE_AMP, mark_freq=880.0)
        extra = {}
        if name in a.get("return_pcm", ()):  # for a sample-by-sample comparison
            extra["pcm_b64"] = base64.b64encode(pcm).decode()
        times = np.repeat([t for t, _ in sel], [len(d) // 2 for _, d in sel]) if sel else []
        onsets = [float(times[i]) for i in mark_onsets(pcm, freq=440.0, mark_freq=880.0)]
        (c0, r0, n0), (c1, r1, n1) = snaps[name]
        out.append({"name": name, **q.as_dict(), "onsets": onsets,
                    "concealed_share": (c1 - c0) / (r1 - r0) if r1 > r0 else None,
                    "nacks": n1 - n0, **extra})
    codecs_in = _codecs(await room.get_rtc_stats(), "in")
    await asyncio.wait_for(room.disconnect(), 10)
    return {"windows": out, "codecs_received": codecs_in}


MODES = {
    "publish_cpu": mode_publish_cpu,
    "subscribe_cpu": mode_subscribe_cpu,
    "latency": mode_latency,
    "ttff": mode_ttff,
    "room": mode_room,
    "tone_pub": mode_tone_pub,
    "tone_sub": mode_tone_sub,
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
    script: str = _SELF,
) -> dict[str, Any]:
    """Run this file (or ``script``, a file that adds modes to this one's ``MODES``) with
    ``python`` (ours or the official venv's) and return its result.

    ``on_event(obj)`` (may be async) is called for every intermediate JSON line (e.g. the
    ``window``/``end`` marks of mode ``room``). Raises RuntimeError on error or timeout.
    """
    args = dict(args, timeout=max(5.0, timeout - 5.0))
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        python, script, json.dumps(args),
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
