#!/usr/bin/env python3
"""Soak: connect / publish / disconnect cycles against the embedded server (issue 13).

    PYTHONPATH=src scripts/netns-run python3 bench/soak.py [--cycles 1000] [--max-seconds 900]

One in-process ``DevServer``; each cycle a ``Room`` connects, publishes a 440 Hz track
(10 frames captured) and publishes one reliable packet, then the session ends in one of
three ways, in turn:

* ``leave``: the client disconnects;
* ``delete``: the server deletes the room (Twirp ``DeleteRoom``), the client sees
  ``disconnected(ROOM_DELETED)``;
* ``kick``: the server removes the participant (Twirp ``RemoveParticipant``), the client
  sees ``disconnected(PARTICIPANT_REMOVED)``.

After each cycle the server must have no session left (bounded wait). Every
``--sample-every`` cycles the process's RSS, asyncio task count and open file descriptors
(client and server share the process) are sampled. "Flat after warm-up": over the samples
after ``--warmup`` cycles, tasks and fds end within ``--fd-tolerance`` / ``--task-tolerance``
of where they started, no peer connection of a finished cycle is still alive (more than
were alive before the first cycle), and the
median RSS of the last third of the samples exceeds that of the first third by at most
``--rss-growth-mib``. Bounded by count and by time: the run stops at ``--max-seconds`` and says so.
Prints one JSON object (also used by tests/integration/test_soak.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

ENDINGS = ("leave", "delete", "kick")
ROOM = "soak"
CYCLE_TIMEOUT = 15.0


@dataclass
class Sample:
    cycle: int
    seconds: float
    rss_kib: int
    tasks: int
    fds: int
    pcs: int  # RTCPeerConnection objects still alive (client and server)


@dataclass
class SoakResult:
    cycles: int
    requested: int
    seconds: float
    stopped_by_time: bool
    endings: dict[str, int]
    samples: list[Sample] = field(default_factory=list)
    warmup: int = 0
    pcs_before: int = 0  # peer connections alive before the first cycle (other code's)

    def after_warmup(self) -> list[Sample]:
        return [s for s in self.samples if s.cycle >= self.warmup]

    def summary(self) -> dict[str, Any]:
        post = self.after_warmup()
        out: dict[str, Any] = {
            "cycles": self.cycles, "requested": self.requested,
            "seconds": round(self.seconds, 1), "stopped_by_time": self.stopped_by_time,
            "endings": self.endings, "warmup": self.warmup,
            "cycles_per_s": round(self.cycles / self.seconds, 2) if self.seconds else 0.0,
        }
        if len(post) >= 2:
            first, last = post[0], post[-1]
            out.update({
                "rss_mib_start": round(first.rss_kib / 1024, 1),
                "rss_mib_end": round(last.rss_kib / 1024, 1),
                "rss_mib_max": round(max(s.rss_kib for s in post) / 1024, 1),
                "rss_slope_kib_per_cycle": round(rss_slope(post), 2),
                "rss_growth_mib": round(rss_growth_mib(post), 2),
                "pcs_max": max(s.pcs for s in post),
                "tasks_start": first.tasks, "tasks_end": last.tasks,
                "tasks_max": max(s.tasks for s in post),
                "fds_start": first.fds, "fds_end": last.fds, "fds_max": max(s.fds for s in post),
            })
        return out


def rss_slope(samples: list[Sample]) -> float:
    """Least-squares RSS growth in KiB per cycle (reported)."""
    x = np.array([s.cycle for s in samples], dtype=np.float64)
    y = np.array([s.rss_kib for s in samples], dtype=np.float64)
    if len(x) < 2 or float(np.ptp(x)) == 0.0:
        return 0.0
    return float(np.polyfit(x, y, 1)[0])


def rss_growth_mib(samples: list[Sample]) -> float:
    """Median RSS of the last third of the samples minus that of the first third, MiB.
    (The allocator's RSS rises slowly and drops back in steps: a short window's slope
    says little, a leak shows as a growth between the thirds.)"""
    third = max(1, len(samples) // 3)
    first = float(np.median([s.rss_kib for s in samples[:third]]))
    last = float(np.median([s.rss_kib for s in samples[-third:]]))
    return (last - first) / 1024


def live_peer_connections() -> int:
    from aiortc import RTCPeerConnection

    return sum(1 for o in gc.get_objects() if isinstance(o, RTCPeerConnection))


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:g} s")
        await asyncio.sleep(0.01)


async def _one_cycle(server: Any, lkapi: Any, ending: str, n: int) -> None:
    from livekit import api

    from aiolivekit import (
        AudioFrame,
        AudioSource,
        DisconnectReason,
        LocalAudioTrack,
        Room,
        TrackPublishOptions,
    )

    room = Room()
    ended: list[Any] = []
    room.on("disconnected", ended.append)
    source = AudioSource(48000, 1)
    try:
        await asyncio.wait_for(room.connect(server.url, server.token(f"p{n}", room=ROOM)),
                               CYCLE_TIMEOUT)
        track = LocalAudioTrack.create_audio_track("mic", source)
        await asyncio.wait_for(room.local_participant.publish_track(
            track, TrackPublishOptions()), CYCLE_TIMEOUT)
        t = np.arange(480) / 48000
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).tobytes()
        for _ in range(10):
            await asyncio.wait_for(source.capture_frame(AudioFrame(pcm, 48000, 1, 480)),
                                   CYCLE_TIMEOUT)
        await asyncio.wait_for(room.local_participant.publish_data(b"soak"), CYCLE_TIMEOUT)
        if ending == "delete":
            await asyncio.wait_for(lkapi.room.delete_room(api.DeleteRoomRequest(room=ROOM)),
                                   CYCLE_TIMEOUT)
        elif ending == "kick":
            await asyncio.wait_for(lkapi.room.remove_participant(
                api.RoomParticipantIdentity(room=ROOM, identity=f"p{n}")), CYCLE_TIMEOUT)
        if ending != "leave":
            await _until(lambda: bool(ended), CYCLE_TIMEOUT, f"cycle {n}: disconnected")
            expected = (DisconnectReason.ROOM_DELETED if ending == "delete"
                        else DisconnectReason.PARTICIPANT_REMOVED)
            if ended != [expected]:
                raise RuntimeError(f"cycle {n} ({ending}): disconnected {ended}, "
                                   f"expected [{expected!r}]")
    finally:
        await asyncio.wait_for(room.disconnect(), CYCLE_TIMEOUT)
        await asyncio.wait_for(source.aclose(), CYCLE_TIMEOUT)
    hub = server.app.hub
    await _until(lambda: not hub.sessions, CYCLE_TIMEOUT, f"cycle {n}: server sessions gone")


async def soak(cycles: int, max_seconds: float, *, warmup: int, sample_every: int = 1,
               progress: bool = False) -> SoakResult:
    """Run the cycles; bounded by ``cycles`` and ``max_seconds``."""
    from livekit import api

    from aiolivekit.server import DevServer

    result = SoakResult(cycles=0, requested=cycles, seconds=0.0, stopped_by_time=False,
                        endings=dict.fromkeys(ENDINGS, 0), warmup=warmup)
    gc.collect()
    result.pcs_before = live_peer_connections()
    start = time.monotonic()
    async with DevServer(port=0) as server:
        lkapi = api.LiveKitAPI(server.url.replace("ws://", "http://"), server.api_key,
                               server.api_secret)
        try:
            for n in range(cycles):
                if time.monotonic() - start > max_seconds:
                    result.stopped_by_time = True
                    break
                ending = ENDINGS[n % len(ENDINGS)]
                await _one_cycle(server, lkapi, ending, n)
                result.endings[ending] += 1
                result.cycles = n + 1
                if (n + 1) % sample_every == 0 or n + 1 == cycles:
                    gc.collect()
                    await asyncio.sleep(0)
                    result.samples.append(Sample(n + 1, time.monotonic() - start, rss_kib(),
                                                 len(asyncio.all_tasks()), open_fds(),
                                                 live_peer_connections()))
                    if progress and (n + 1) % (sample_every * 10) == 0:
                        s = result.samples[-1]
                        print(f"cycle {s.cycle}: {s.seconds:.0f} s, rss {s.rss_kib / 1024:.1f} "
                              f"MiB, tasks {s.tasks}, fds {s.fds}, PCs {s.pcs}", file=sys.stderr,
                              flush=True)
        finally:
            await lkapi.aclose()
    result.seconds = time.monotonic() - start
    return result


def flatness_errors(result: SoakResult, *, rss_growth: float, task_tolerance: int,
                    fd_tolerance: int) -> list[str]:
    """What is not flat after warm-up (empty: flat)."""
    post = result.after_warmup()
    if len(post) < 2:
        return [f"only {len(post)} samples after the warm-up of {result.warmup} cycles"]
    errors = []
    first, last = post[0], post[-1]
    growth = rss_growth_mib(post)
    if growth > rss_growth:
        errors.append(f"RSS grew {growth:.2f} MiB after the warm-up (limit {rss_growth:g})")
    if max(s.pcs for s in post) > result.pcs_before:
        errors.append(f"peer connections still alive after their cycle: "
                      f"{[s.pcs for s in post]} (before the first cycle: {result.pcs_before})")
    if last.tasks - first.tasks > task_tolerance:
        errors.append(f"tasks {first.tasks} -> {last.tasks} (tolerance {task_tolerance})")
    if last.fds - first.fds > fd_tolerance:
        errors.append(f"fds {first.fds} -> {last.fds} (tolerance {fd_tolerance})")
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--sample-every", type=int, default=10)
    parser.add_argument("--rss-growth-mib", type=float, default=2.0)
    parser.add_argument("--task-tolerance", type=int, default=2)
    parser.add_argument("--fd-tolerance", type=int, default=2)
    parser.add_argument("--samples", action="store_true", help="print every sample too")
    args = parser.parse_args()
    if not 1 <= args.cycles <= 100000 or not 0 < args.max_seconds <= 86400:
        parser.error("--cycles 1..100000 and --max-seconds 0..86400")
    result = asyncio.run(soak(args.cycles, args.max_seconds, warmup=args.warmup,
                              sample_every=args.sample_every, progress=True))
    errors = flatness_errors(result, rss_growth=args.rss_growth_mib,
                             task_tolerance=args.task_tolerance, fd_tolerance=args.fd_tolerance)
    out = result.summary()
    out["loadavg_1min"] = round(os.getloadavg()[0], 2)
    out["flat"] = not errors
    out["errors"] = errors
    if args.samples:
        out["samples"] = [asdict(s) for s in result.samples]
    print(json.dumps(out))
    return 0 if not errors and not result.stopped_by_time else 1


if __name__ == "__main__":
    raise SystemExit(main())
