"""Connect benchmark: aiolivekit vs the official ``livekit`` SDK, same server, same run.

For each SDK, ``--runs`` fresh processes (alternating SDKs) each join the official
livekit-server once and report:

* connect time: ``await room.connect(...)`` call to return (seconds),
* RSS right after connect (MiB, ``VmRSS``),
* idle CPU while connected for ``--idle`` seconds (percent of one core, all threads).

Medians are printed as a table (and written as JSON with ``--json``). Run it inside the
private network namespace (it re-executes itself through ``scripts/netns-run`` otherwise):

    scripts/netns-run python bench/bench_connect.py --runs 10 --idle 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_PY = Path(os.environ.get(
    "AIOLIVEKIT_OFFICIAL_PY", str(Path.home() / ".cache/aiolivekit/official-venv/bin/python")))
_HAVE_OFFICIAL = OFFICIAL_PY.exists()

WORKER = r'''
import asyncio, json, os, resource, sys, time

SDK, URL, TOKEN, IDLE = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0

async def main():
    if SDK == "aiolivekit":
        from aiolivekit import Room, RoomOptions
        room = Room()
        opts = RoomOptions()
    else:
        from livekit import rtc
        room = rtc.Room()
        opts = rtc.RoomOptions()
    t0 = time.perf_counter()
    await room.connect(URL, TOKEN, opts)
    connect_s = time.perf_counter() - t0
    rss = rss_mib()
    def cpu_s():
        r = resource.getrusage(resource.RUSAGE_SELF)  # all threads, microsecond resolution
        return r.ru_utime + r.ru_stime
    c0, w0 = cpu_s(), time.monotonic()
    await asyncio.sleep(IDLE)
    c1, w1 = cpu_s(), time.monotonic()
    cpu = (c1 - c0) / (w1 - w0) * 100.0
    print(json.dumps({"connect_s": connect_s, "rss_mib": rss, "idle_cpu_pct": cpu}), flush=True)
    await room.disconnect()

try:
    asyncio.run(main())
finally:
    sys.stdout.flush()
    os._exit(0)  # the official SDK may abort at interpreter exit
'''


def run_worker(python: str, sdk: str, url: str, token: str, idle: float) -> dict[str, float] | None:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    try:
        proc = subprocess.run([python, "-c", WORKER, sdk, url, token, str(idle)],
                              capture_output=True, text=True, timeout=idle + 60, env=env)
    except subprocess.TimeoutExpired:
        print(f"  {sdk}: timed out", file=sys.stderr)
        return None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)  # type: ignore[no-any-return]
    print(f"  {sdk}: no result (rc {proc.returncode}): {proc.stderr[-800:]}", file=sys.stderr)
    return None


async def bench(runs: int, idle: float, with_official: bool) -> dict[str, list[dict[str, float]]]:
    sys.path.insert(0, str(ROOT / "src"))
    from aiolivekit.testing.servers import LiveKitServerProcess, find_livekit_server, make_token

    binary = find_livekit_server()
    if binary is None:
        raise SystemExit("livekit-server binary not found (see scripts/install-deps)")
    sdks = [("aiolivekit", sys.executable)]
    if with_official:
        if _HAVE_OFFICIAL:
            sdks.append(("official", str(OFFICIAL_PY)))
        else:
            print(f"official SDK venv not found at {OFFICIAL_PY}; skipping it", file=sys.stderr)
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in sdks}
    async with LiveKitServerProcess(binary) as server:
        info = server.info()
        for i in range(runs):
            for name, python in sdks:
                token = make_token(info.api_key, info.api_secret, f"bench-{name}-{i}",
                                   room=f"bench-{i}")
                res = await asyncio.to_thread(run_worker, python, name, info.url, token, idle)
                if res is not None:
                    results[name].append(res)
                    print(f"  run {i + 1}/{runs} {name:10s} connect {res['connect_s'] * 1000:7.1f} ms"
                          f"  rss {res['rss_mib']:6.1f} MiB  idle cpu {res['idle_cpu_pct']:5.2f} %",
                          file=sys.stderr)
    return results


async def run(ctx: Any) -> list[dict[str, Any]]:
    """bench/run.py entry: ``ctx.repeat`` fresh processes per SDK on each server."""
    from common import row  # bench/ is on sys.path under run.py

    sdks = [("aiolivekit", sys.executable)]
    if ctx.official_python:
        sdks.append(("official", ctx.official_python))
    runs = max(3 if ctx.quick else 10, ctx.repeat)
    idle = 3.0 if ctx.quick else min(10.0, float(ctx.seconds) * 2)
    rows: list[dict[str, Any]] = []
    for server_name, info in ctx.servers.items():
        setup = (f"server {server_name}; each sample is a fresh process per SDK (SDKs "
                 f"alternate), joining its own empty room once with default RoomOptions, no "
                 f"tracks; connect_time = the room.connect call until it returns; RSS "
                 f"(VmRSS) right after; idle CPU (getrusage, all threads) over the next "
                 f"{idle:g} s while connected")
        for i in range(runs):
            for name, python in sdks:
                token = info.token(f"bench-{name}-{i}", ctx.room("connect"))
                res = await asyncio.to_thread(run_worker, python, name, info.url, token, idle)
                if res is None:
                    continue
                for metric, key, scale, unit in (("connect_time", "connect_s", 1000.0, "ms"),
                                                 ("rss_after_connect", "rss_mib", 1.0, "MiB"),
                                                 ("idle_cpu", "idle_cpu_pct", 1.0, "% core")):
                    rows.append(row(f"connect ({server_name})", name, metric,
                                    res[key] * scale, unit, setup=setup))
    return rows


def table(results: dict[str, list[dict[str, float]]]) -> str:
    metrics = [("connect time (ms)", "connect_s", 1000.0), ("RSS after connect (MiB)", "rss_mib", 1.0),
               ("idle CPU (% of a core)", "idle_cpu_pct", 1.0)]
    names = list(results)
    head = "| metric (median) | " + " | ".join(f"{n} (n={len(results[n])})" for n in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    for label, key, scale in metrics:
        cells = []
        for n in names:
            vals = [r[key] * scale for r in results[n]]
            cells.append(f"{statistics.median(vals):.2f}" if vals else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--no-official", action="store_true")
    parser.add_argument("--json", type=str, default="")
    args = parser.parse_args()
    if args.runs < 1 or args.runs > 100:
        raise SystemExit("--runs must be between 1 and 100")
    if os.environ.get("AIOLIVEKIT_NETNS") != "1":
        os.execv(str(ROOT / "scripts/netns-run"),
                 [str(ROOT / "scripts/netns-run"), sys.executable, *sys.argv])
    results = asyncio.run(bench(args.runs, args.idle, not args.no_official))
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
