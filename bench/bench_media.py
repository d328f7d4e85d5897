"""CPU per published 48 kHz mono Opus track: aiolivekit's publish path vs raw aiortc.

One publisher and one subscriber RTCPeerConnection in this process over 127.0.0.1;
N audio tracks; the subscriber decodes and drains every track. Prints process CPU as a
share of one core (total and per track) and the payload bitrate per track.
``--video`` adds one VP8 640x480@30 track (RGBA frames in) per mode.

    python bench/bench_media.py [--tracks 1 4 16] [--seconds 5] [--video]
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import time
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
from aiolivekit.engine.ice import host_addresses

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


async def run(mode: str, tracks: int, seconds: float) -> dict[str, Any]:
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
            res = await asyncio.wait_for(run(mode, n, args.seconds), args.seconds + 60)
            print(json.dumps(res), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
