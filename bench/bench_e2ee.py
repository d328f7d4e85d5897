"""CPU cost of end-to-end encryption per published audio track: aiolivekit vs the official SDK.

Standalone (not yet part of ``bench/run.py``)::

    scripts/netns-run python3 bench/bench_e2ee.py [--tracks 4] [--seconds 5] [--repeat 2]

For each SDK (``bench/sdk_worker.py`` mode ``publish_cpu``, the same code for both, each
run in a fresh worker process, order alternating) one participant publishes ``tracks``
48 kHz mono tone tracks (Opus max 32 kbit/s, RED and DTX off) to the embedded server,
without and with a shared E2EE key; the worker's CPU (getrusage, all threads) over
``seconds`` after a 2 s warm-up. Prints one JSON line per run and the medians, with the
machine's load average (other work on the machine blurs differences this small).
Video and the subscribing side are not measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sdk_worker import run_worker  # noqa: E402

from aiolivekit.server import DevServer  # noqa: E402

OFFICIAL = Path.home() / ".cache" / "aiolivekit" / "official-venv" / "bin" / "python"


async def main(tracks: int, seconds: float, repeat: int) -> None:
    sdks = [("aiolivekit", sys.executable)]
    if OFFICIAL.is_file():
        sdks.append(("official", str(OFFICIAL)))
    results: dict[tuple[str, bool], list[float]] = {}
    async with DevServer(port=0) as server:
        n = 0
        for rep in range(repeat):
            for e2ee in (False, True):
                for sdk, python in (sdks if rep % 2 == 0 else sdks[::-1]):
                    n += 1
                    args = {"sdk": sdk, "mode": "publish_cpu", "url": server.url,
                            "token": server.token("pub", f"e2ee-bench-{n}"), "tracks": tracks,
                            "seconds": seconds, "warmup": 2.0, "bitrate": 32000, "red": False,
                            "dtx": False, "e2ee": "bench-shared-key" if e2ee else ""}
                    res = await run_worker(python, args, timeout=seconds + 90)
                    per_track = float(res["cpu_pct_per_track"])
                    results.setdefault((sdk, e2ee), []).append(per_track)
                    print(json.dumps({"sdk": sdk, "e2ee": e2ee, "tracks": tracks,
                                      "cpu_pct_per_track": round(per_track, 3),
                                      "payload_kbps_per_track":
                                          round(res["payload_kbps_per_track"], 1),
                                      "load": os.getloadavg()[0]}), flush=True)
    for sdk, _ in sdks:
        off = statistics.median(results[(sdk, False)])
        on = statistics.median(results[(sdk, True)])
        print(f"{sdk:10s} {tracks} tracks: {off:.2f} -> {on:.2f} % of a core per track "
              f"(e2ee cost {on - off:+.2f})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracks", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    asyncio.run(main(a.tracks, a.seconds, a.repeat))
