"""CPU cost of end-to-end encryption per track: aiolivekit vs the official SDK.

Standalone (not part of ``bench/run.py``)::

    scripts/netns-run python3 bench/bench_e2ee.py [--parts audio_pub audio_sub video]
        [--tracks 4] [--seconds 10] [--repeat 2]

Every measurement runs without and with a shared E2EE key (the same key and key
derivation on both SDKs), each worker a fresh process, the order of the SDKs alternating
between repeats, on the embedded server; CPU = ``getrusage`` of the worker (all threads)
over ``seconds`` after a warm-up. The cost of E2EE is the difference of the medians.

* ``audio_pub``: one participant publishes ``tracks`` 48 kHz mono tone tracks (Opus max
  32 kbit/s, RED and DTX off; ``sdk_worker.py`` mode ``publish_cpu``): its CPU per track.
* ``audio_sub``: an aiolivekit publisher (the same for both SDKs) publishes ``tracks``
  such tracks; the measured SDK subscribes to all of them and reads each through an
  ``AudioStream`` (mode ``subscribe_cpu``): its CPU per track, and the share of 10 ms
  windows that carried the tone (decryption must work for the number to count).
* ``video``: one 1280x720 VP8 camera track at 30 fps, 1.5 Mbit/s cap, published and
  subscribed (``VideoStream``) by the measured SDK (``bench_video.py``'s workers): the
  publisher's and the subscriber's CPU, and the delivered size and frame rate.

Prints one JSON line per run and a summary with the machine's load average (other work
on the machine blurs differences this small).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_video  # noqa: E402
from sdk_worker import run_worker  # noqa: E402

from aiolivekit.server import DevServer  # noqa: E402

OFFICIAL = Path.home() / ".cache" / "aiolivekit" / "official-venv" / "bin" / "python"
KEY = "bench-shared-key"
WARMUP = 3.0
VIDEO_WARMUP = 8.0  # the publisher's bandwidth estimate ramps up first

Results = dict[tuple[str, str, bool], list[float]]  # (sdk, metric, e2ee) -> values


def _note(results: Results, sdk: str, metric: str, e2ee: bool, value: float | None) -> None:
    if value is not None:
        results.setdefault((sdk, metric, e2ee), []).append(float(value))


async def audio_pub(server: DevServer, sdk: str, python: str, e2ee: bool, n: int,
                    tracks: int, seconds: float) -> dict[str, Any]:
    args = {"sdk": sdk, "mode": "publish_cpu", "url": server.url,
            "token": server.token("pub", f"e2ee-apub-{n}"), "tracks": tracks,
            "seconds": seconds, "warmup": WARMUP, "bitrate": 32000, "red": False,
            "dtx": False, "e2ee": KEY if e2ee else ""}
    res = await run_worker(python, args, timeout=seconds + 90)
    return {"cpu_pct_per_track": res["cpu_pct_per_track"],
            "payload_kbps_per_track": round(res["payload_kbps_per_track"], 1)}


async def audio_sub(server: DevServer, sdk: str, python: str, e2ee: bool, n: int,
                    tracks: int, seconds: float) -> dict[str, Any]:
    room = f"e2ee-asub-{n}"
    key = KEY if e2ee else ""
    # the publisher outlives the subscriber's connect, warm-up and window
    pub_args = {"sdk": "aiolivekit", "mode": "publish_cpu", "url": server.url,
                "token": server.token("pub", room), "tracks": tracks,
                "seconds": seconds + WARMUP + 20, "warmup": 0.5, "bitrate": 32000,
                "red": False, "dtx": False, "e2ee": key}
    sub_args = {"sdk": sdk, "mode": "subscribe_cpu", "url": server.url,
                "token": server.token("sub", room), "publisher": "pub", "tracks": tracks,
                "seconds": seconds, "warmup": WARMUP, "e2ee": key}
    publisher = asyncio.ensure_future(run_worker(sys.executable, pub_args,
                                                 timeout=seconds + 120))
    try:
        res = await run_worker(python, sub_args, timeout=seconds + 90)
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
    return {"cpu_pct_per_track": res["cpu_pct_per_track"],
            "tone_share": round(res["tone_share"], 3)}


async def video(server: DevServer, sdk: str, python: str, e2ee: bool, n: int,
                tracks: int, seconds: float) -> dict[str, Any]:
    del python, tracks  # bench_video picks the interpreter by SDK; one track
    r = await bench_video.one(server, sdk, 1280, 720, 30.0, 1_500_000, seconds, VIDEO_WARMUP,
                              f"e2ee-video-{n}", sub_sdk=sdk, e2ee=KEY if e2ee else "")
    return {"publisher_cpu_pct": r["publisher_cpu_pct"],
            "subscriber_cpu_pct": r["subscriber_cpu_pct"],
            "delivered_size": r["delivered_size"], "delivered_fps": r["delivered_fps"]}


PARTS = {"audio_pub": audio_pub, "audio_sub": audio_sub, "video": video}


async def main(parts: list[str], tracks: int, seconds: float, repeat: int) -> None:
    sdks = [("aiolivekit", sys.executable)]
    if OFFICIAL.is_file():
        sdks.append(("official", str(OFFICIAL)))
    load0 = os.getloadavg()
    results: Results = {}
    async with DevServer(port=0) as server:
        n = 0
        for part in parts:
            for rep in range(repeat):
                for e2ee in (False, True):
                    for sdk, python in (sdks if rep % 2 == 0 else sdks[::-1]):
                        n += 1
                        res = await PARTS[part](server, sdk, python, e2ee, n, tracks, seconds)
                        print(json.dumps({"part": part, "sdk": sdk, "e2ee": e2ee,
                                          "tracks": 1 if part == "video" else tracks, **res,
                                          "load": round(os.getloadavg()[0], 2)}), flush=True)
                        for metric, value in res.items():
                            if metric.startswith("cpu_pct") or metric.endswith("cpu_pct"):
                                _note(results, sdk, f"{part}.{metric}", e2ee, value)
    print(f"\nload average at the start {load0[0]:.2f}, at the end {os.getloadavg()[0]:.2f}; "
          f"medians of {repeat}, {seconds:g} s windows")
    for (sdk, metric, e2ee), _ in sorted(results.items()):
        if e2ee:
            continue
        off = statistics.median(results[(sdk, metric, False)])
        on_values = results.get((sdk, metric, True))
        if not on_values:
            continue
        on = statistics.median(on_values)
        print(f"{metric:36s} {sdk:10s} {off:6.2f} -> {on:6.2f} % of a core "
              f"(e2ee cost {on - off:+.2f})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS))
    ap.add_argument("--tracks", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    asyncio.run(main(a.parts, a.tracks, a.seconds, a.repeat))
