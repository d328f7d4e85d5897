"""Worker mode ``reconnect`` (bench/bench_reconnect.py), for both SDKs.

    python bench/reconnect_worker.py '{"sdk": "aiolivekit" | "official", "mode": "reconnect", ...}'

Two rooms of one SDK in this process: ``pub`` publishes a continuous 440 Hz tone (10 ms
frames paced by the clock), ``sub`` receives it through ``AudioStream`` (48 kHz mono,
every subscription of the publisher's audio, so a track republished after a full
reconnect is followed). Both record ``reconnecting`` / ``reconnected`` / ``disconnected``
with wall times. Only the tone of this SDK's publisher (``identity_pub``) is read: the
other SDK's publisher is in the same room. The parent injects the fault at wall time ``fault_at``; the worker runs
until ``end_at`` and reports, from the received audio cut in 20 ms chunks (a chunk is
"tone" when its level is above 1/8 of the sent amplitude and its 440 Hz projection holds
most of its energy): the longest time between two tone chunks in
``[fault_at - 0.5, end_at]`` (the audio gap at the receiver) and when that gap ended
(the tone heard again).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
import time
from typing import Any

import numpy as np
import sdk_worker
from sdk_worker import RATE, emit

AMP = 8000.0
CHUNK = 960  # 20 ms


def _is_tone(x: np.ndarray) -> bool:
    x = x.astype(np.float64)
    energy = float(np.dot(x, x))
    if energy < len(x) * (AMP / 8) ** 2 / 2:
        return False
    t = np.arange(len(x)) / RATE
    c, s = np.cos(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)
    proj = (float(np.dot(x, c)) ** 2 + float(np.dot(x, s)) ** 2) * 2 / len(x)
    return proj > 0.5 * energy


async def mode_reconnect(a: dict[str, Any]) -> dict[str, Any]:
    rtc = sdk_worker.rtc
    events: list[tuple[str, str, float]] = []
    rooms: dict[str, Any] = {}
    for role in ("pub", "sub"):
        room = rtc.Room()
        for name in ("reconnecting", "reconnected", "disconnected"):
            room.on(name, lambda *_, n=name, r=role: events.append((r, n, time.time())))
        rooms[role] = room
    chunks: list[tuple[float, bool]] = []  # (wall time the chunk was complete, tone?)
    readers: dict[str, asyncio.Task[None]] = {}  # track sid -> its reader

    async def read(track: Any) -> None:
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
        buf = np.zeros(0, dtype=np.int16)
        async for ev in stream:
            buf = np.concatenate([buf, np.frombuffer(bytes(ev.frame.data), dtype=np.int16)])
            while len(buf) >= CHUNK:
                chunks.append((time.time(), _is_tone(buf[:CHUNK])))
                buf = buf[CHUNK:]

    def on_subscribed(track: Any, _pub: Any, participant: Any) -> None:
        # only this SDK's publisher (the other SDK's is in the same room)
        if (track.kind == rtc.TrackKind.KIND_AUDIO and track.sid not in readers
                and participant.identity == a["identity_pub"]):
            readers[track.sid] = asyncio.ensure_future(read(track))

    rooms["sub"].on("track_subscribed", on_subscribed)
    await asyncio.wait_for(rooms["sub"].connect(a["url"], a["token_sub"]), 30)
    await asyncio.wait_for(rooms["pub"].connect(a["url"], a["token_pub"]), 30)
    source = rtc.AudioSource(RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("tone", source)
    opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, red=False,
                                   dtx=False)
    await asyncio.wait_for(rooms["pub"].local_participant.publish_track(track, opts), 20)
    emit({"event": "published"})

    end_at = float(a["end_at"])
    start = time.monotonic()
    i = 0
    t = np.arange(480) / RATE
    while time.time() < end_at:
        pcm = (np.sin(2 * np.pi * 440 * (t + i * 480 / RATE)) * AMP).astype(np.int16)
        try:
            await asyncio.wait_for(source.capture_frame(
                rtc.AudioFrame(pcm.tobytes(), RATE, 1, 480)), 5)
        except asyncio.TimeoutError:
            pass
        i += 1
        ahead = start + i * 0.01 - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
    for task in readers.values():
        task.cancel()
    for room in rooms.values():
        try:
            await asyncio.wait_for(room.disconnect(), 10)
        except Exception as exc:  # noqa: BLE001 - reported, the measurement stands
            events.append(("close", f"disconnect failed: {exc!r}", time.time()))
    fault_at = float(a["fault_at"])
    marks = [fault_at - 0.5] + [c for c, tone in chunks if tone and c > fault_at - 0.5]
    marks.append(end_at)
    gap, back = max((b - x, b) for x, b in itertools.pairwise(marks))
    heard_before = sum(1 for c, tone in chunks if tone and c < fault_at)
    listened = fault_at - chunks[0][0] if chunks else 0.0
    return {"events": events, "audio_gap": gap, "tone_back_at": back if back < end_at else None,
            "tone_share_before": heard_before * CHUNK / RATE / listened if listened else 0.0,
            "tracks_read": len(readers)}


sdk_worker.MODES["reconnect"] = mode_reconnect

if os.environ.get("BENCH_RECONNECT_DEBUG"):
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

if __name__ == "__main__":
    sdk_worker.main()
