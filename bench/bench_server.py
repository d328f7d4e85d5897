"""Server CPU per forwarded packet: a 10-participant audio room on our server vs livekit-server.

Each participant publishes one 48 kHz Opus tone track (max 32 kbit/s, RED off, DTX off:
the same plain Opus payload to both servers; our server does not negotiate RED, so the
official client's default RED would make livekit-server forward bigger packets) and
auto-subscribes to the other nine (no decoding). All participants run in one client process (``bench/sdk_worker.py``
mode ``room``, the same client SDK for both servers). The servers run as their own
processes so their CPU can be read from ``/proc/<pid>/stat`` (user+sys, all threads):

* ours: ``python -m aiolivekit serve --port N`` (a fresh process),
* the official ``livekit-server`` (a fresh process, not the one shared by ``run.py``).

Forwarded packets: the nominal 10 x 9 x 50 = 4500/s (20 ms Opus packets) is the
denominator; the subscribers' inbound RTP counts (per stream, over the stats' own
timestamps) are reported next to it as ``delivered_pps_counted``. Reported: server CPU %
of one core (user and sys too), CPU µs per forwarded packet and the packets/s per core it
extrapolates to (``1e6 / µs``).

With ``--pin`` (and as a second set of rows from ``run.py``) the servers start on the first
CPU only and the client process on the others, so a server's CPU per packet is measured
without the load generator evicting its caches; livekit-server then runs with
GOMAXPROCS=1.

    scripts/netns-run python bench/bench_server.py [--participants 10] [--seconds 10]
        [--client aiolivekit|official] [--pin] [--repeat N]

Each result line also has ``threads_cpu_pct`` (the server's busiest threads, % of a core).
Profiling our server (only ours runs then): ``--profile PATH`` (cProfile; its overhead
distorts a packet-rate workload) or ``--sample PATH`` (a 1 kHz sampler of the event-loop
thread's Python stack, collapsed stacks; set ``BENCH_SERVER_SNIPPET=file.py`` to run the
server under another wrapper instead, e.g. one that times chosen functions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import BenchContext, ServerInfo, row  # noqa: E402
from sdk_worker import run_worker  # noqa: E402

from aiolivekit.testing.servers import (  # noqa: E402
    DEFAULT_KEY,
    DEFAULT_SECRET,
    LiveKitServerProcess,
    find_livekit_server,
    free_port,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
OFFICIAL_PY = Path.home() / ".cache" / "aiolivekit" / "official-venv" / "bin" / "python"
# the official SDK is the lighter client here (Rust media path, no decoding without a
# stream); the same client runs against both servers
DEFAULT_CLIENT = "official"


def proc_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, sys) CPU seconds of process ``pid`` (all its threads) from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime (14, 15)


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """user+sys CPU seconds per thread of process ``pid`` ("tid:name" keys)."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, _, rest = f.read().rpartition(")")
        except OSError:
            continue
        fields = rest.split()
        name = head.partition("(")[2]
        out[f"{tid}:{name}"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


_PROFILE_SNIPPET = (
    "import cProfile, sys, time\n"
    "from aiolivekit.cli import main\n"
    "out = sys.argv[1]\n"
    "prof = cProfile.Profile(time.process_time)\n"
    "prof.enable()\n"
    "try:\n"
    "    main(sys.argv[2:])\n"
    "finally:\n"
    "    prof.disable()\n"
    "    prof.dump_stats(out)\n"
)


# sampling profiler for the server's event-loop thread: every ~1 ms its Python stack is
# recorded (collapsed "f1;f2;f3 count" lines written at exit); cheap enough to leave the
# packet rate intact, unlike cProfile. Samples whose innermost frame is the selector are
# the idle loop. The GIL switch interval is lowered so samples are not all taken at the
# loop's GIL-releasing calls.
_SAMPLE_SNIPPET = (
    "import collections, sys, threading, time, atexit, signal\n"
    "from aiolivekit.cli import main\n"
    "out = sys.argv[1]\n"
    "counts = collections.Counter()\n"
    "main_id = threading.main_thread().ident\n"
    "stop = False\n"
    "def sampler():\n"
    "    while not stop:\n"
    "        time.sleep(0.001)\n"
    "        f = sys._current_frames().get(main_id)\n"
    "        stack = []\n"
    "        while f is not None:\n"
    "            c = f.f_code\n"
    "            stack.append(f'{c.co_filename.rsplit(\"/\", 2)[-1]}:{c.co_name}')\n"
    "            f = f.f_back\n"
    "        counts[';'.join(reversed(stack))] += 1\n"
    "def dump():\n"
    "    global stop\n"
    "    stop = True\n"
    "    with open(out, 'w') as fh:\n"
    "        for k, v in counts.most_common():\n"
    "            fh.write(f'{k} {v}\\n')\n"
    "atexit.register(dump)\n"
    "sys.setswitchinterval(0.0002)\n"
    "threading.Thread(target=sampler, daemon=True).start()\n"
    "main(sys.argv[2:])\n"
)


class OurServerProcess:
    """``python -m aiolivekit serve`` on a free loopback port."""

    def __init__(self, profile: str | None = None, sample: str | None = None) -> None:
        self.profile = profile
        self.sample = sample
        custom = os.environ.get("BENCH_SERVER_SNIPPET")  # a file with another wrapper
        self.sample_snippet = Path(custom).read_text() if custom else _SAMPLE_SNIPPET
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="bench-serve-", suffix=".log", delete=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def info(self) -> ServerInfo:
        return ServerInfo("aiolivekit-serve", f"ws://127.0.0.1:{self.port}", DEFAULT_KEY,
                          DEFAULT_SECRET)

    async def start(self, timeout: float = 20.0) -> None:
        # cProfile with a CPU-time clock (its default clock is wall time, which would charge
        # a blocking/descheduled syscall to the function); written at SIGTERM (clean exit)
        prof = ["-c", _PROFILE_SNIPPET, self.profile] if self.profile else ["-m", "aiolivekit"]
        if self.sample:
            prof = ["-c", self.sample_snippet, self.sample]
        self.proc = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, *prof, "serve", "--bind", "127.0.0.1",
             "--port", str(self.port), "--keys", f"{DEFAULT_KEY}:{DEFAULT_SECRET}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aiolivekit serve exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError("aiolivekit serve did not start listening in time")

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        self.log.close()


async def measure(
    server: ServerInfo, pid: int, client_python: str, client_sdk: str, participants: int,
    seconds: float, room: str,
) -> dict[str, Any]:
    marks: dict[str, tuple[tuple[float, float], float]] = {}
    threads: dict[str, dict[str, float]] = {}

    def on_event(obj: dict[str, Any]) -> None:
        if obj.get("event") in ("window", "end"):
            marks[obj["event"]] = (proc_cpu_seconds(pid), time.monotonic())
            threads[obj["event"]] = thread_cpu_seconds(pid)

    tokens = [server.token(f"p{i}", room) for i in range(participants)]
    res = await run_worker(
        client_python,
        {"sdk": client_sdk, "mode": "room", "url": server.url, "tokens": tokens,
         "seconds": seconds, "warmup": 2.0, "bitrate": 32000, "red": False, "dtx": False},
        timeout=seconds + 150,
        on_event=on_event,
    )
    if "window" not in marks or "end" not in marks:
        raise RuntimeError(f"room worker gave no measurement window: {res}")
    ((u0, s0), w0), ((u1, s1), w1) = marks["window"], marks["end"]
    wall = w1 - w0
    cpu = (u1 - u0) + (s1 - s0)
    # per-packet cost over the nominal forwarded rate (N x (N-1) x 50/s of 20 ms packets):
    # the subscribers' own counts are reported too but vary by a few % with stats timing
    pps = float(participants * (participants - 1) * 50)
    per_thread = {
        k: round(100 * (v - threads["window"].get(k, 0.0)) / wall, 2)
        for k, v in threads.get("end", {}).items()
    }
    busy_threads = dict(sorted(((k, v) for k, v in per_thread.items() if v > 0.0),
                               key=lambda kv: -kv[1])[:8])
    return {
        "nominal_pps": pps,
        "server_user_pct": 100 * (u1 - u0) / wall,
        "server_sys_pct": 100 * (s1 - s0) / wall,
        "subscriptions": res["subscriptions"],
        "expected_subscriptions": res["expected"],
        "delivered_pps": float(res["received_pps"]),
        "pps_per_participant": res.get("pps_per_participant"),
        "inbound_streams_per_participant": res.get("inbound_streams_per_participant"),
        "server_cpu_pct": 100 * cpu / wall,
        "us_per_packet": 1e6 * cpu / wall / pps if pps else None,
        "pps_per_core": pps * wall / cpu if cpu else None,
        "threads_cpu_pct": busy_threads,
        "threads": len(per_thread),
        "publish": res.get("publish"),
        "codecs": res.get("codecs"),
    }


async def run_all(
    participants: int, seconds: float, repeat: int, client: str, log: Any = print,
    profile: str | None = None, sample: str | None = None, pin: bool = False,
) -> list[dict[str, Any]]:
    client_python = str(OFFICIAL_PY) if client == "official" else sys.executable
    if client == "official" and not OFFICIAL_PY.is_file():
        client, client_python = "aiolivekit", sys.executable
    rows: list[dict[str, Any]] = []
    bench = f"server_{participants}p_audio_room [client={client}{', pinned' if pin else ''}]"
    setup = (
        f"each server a fresh process started for this benchmark (ours: python -m aiolivekit "
        f"serve; official: livekit-server{', GOMAXPROCS=1' if pin else ''}), measured one "
        f"after the other in the same room shape: {participants} participants in one client "
        f"process ({client} SDK, the same for both servers), each publishing one 48 kHz mono "
        f"tone track, Opus max 32 kbit/s, RED off and DTX off (so both servers forward the "
        f"same plain Opus payload; our server does not negotiate RED), subscribed to the "
        f"other {participants - 1} without decoding; server CPU (user+sys, all threads, "
        f"/proc) over {seconds:g} s windows; "
        + ("servers pinned to the first CPU, the client to the others"
           if pin else "servers and client share all CPUs"))
    ours = OurServerProcess(profile, sample)
    binary = None if profile or sample else find_livekit_server()
    lk = LiveKitServerProcess(binary, log_path=os.devnull) if binary else None
    cpus = sorted(os.sched_getaffinity(0))
    pin = pin and len(cpus) >= 2
    try:
        if pin:  # the servers start on (and inherit) the first CPU only
            os.sched_setaffinity(0, {cpus[0]})
        await ours.start()
        if lk is not None:
            await lk.start()
        if pin:  # this process and the client worker it spawns: the other CPUs
            os.sched_setaffinity(0, set(cpus[1:]))
            log(f"bench_server: servers pinned to CPU {cpus[0]}, clients to {cpus[1:]}")
        for rep in range(repeat):
            targets: list[tuple[str, ServerInfo, int]] = [("aiolivekit", ours.info(), ours.pid)]
            if lk is not None and lk._proc is not None:
                targets.append(("official", lk.info(), lk._proc.pid))
            for impl, info, pid in targets:
                room = f"srv-{rep}-{int(time.time() * 1000) % 100000}"
                try:
                    m = await measure(info, pid, client_python, client, participants, seconds,
                                      room)
                except Exception as exc:  # noqa: BLE001 - the load generator failed: this window is lost
                    # (the official SDK's client has panicked parsing its own WebRTC stats)
                    log(f"bench_server {impl}: window {rep} failed: {exc!r:.2000}")
                    rows.append(row(bench, impl, "failed_windows", 1, "count", setup=setup))
                    continue
                log(f"bench_server {impl}: {json.dumps(m)}")
                extra = {"subscriptions": m["subscriptions"],
                         "expected_subscriptions": m["expected_subscriptions"],
                         "setup": setup, "publish": m["publish"], "codecs": m["codecs"]}
                rows.append(row(bench, impl, "server_cpu", m["server_cpu_pct"], "% of a core",
                                **extra))
                rows.append(row(bench, impl, "server_cpu_user", m["server_user_pct"],
                                "% of a core", **extra))
                rows.append(row(bench, impl, "server_cpu_sys", m["server_sys_pct"],
                                "% of a core", **extra))
                rows.append(row(bench, impl, "forwarded_pps_nominal", m["nominal_pps"],
                                "packets/s", **extra))
                rows.append(row(bench, impl, "delivered_pps_counted", m["delivered_pps"],
                                "packets/s", **extra))
                if m["us_per_packet"] is not None:
                    rows.append(row(bench, impl, "cpu_per_forwarded_packet", m["us_per_packet"],
                                    "µs", **extra))
                if m["pps_per_core"] is not None:
                    rows.append(row(bench, impl, "packets_per_core", m["pps_per_core"],
                                    "packets/s (extrapolated)", **extra))
    finally:
        if pin:
            os.sched_setaffinity(0, set(cpus))
        await ours.stop()
        if lk is not None:
            await lk.stop()
    return rows


async def run(ctx: BenchContext) -> list[dict[str, Any]]:
    # 10-s windows, at least three per server (the median is reported): on a shared VM a
    # single short window of this room varies by about +-10 %
    seconds = min(ctx.seconds, 5.0) if ctx.quick else max(10.0, ctx.seconds)
    repeat = 1 if ctx.quick else max(3, ctx.repeat)
    # unpinned (clients and servers share both CPUs) and pinned (each server alone on one
    # CPU, the clients on the others: per-core cost without the load generator's interference)
    rows = await run_all(10, seconds, repeat, DEFAULT_CLIENT, ctx.log)
    if len(os.sched_getaffinity(0)) >= 2:
        rows += await run_all(10, seconds, repeat, DEFAULT_CLIENT, ctx.log, pin=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--participants", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--client", choices=("aiolivekit", "official"), default=DEFAULT_CLIENT)
    ap.add_argument("--pin", action="store_true",
                    help="servers on the first CPU, clients on the others (less interference)")
    ap.add_argument("--profile", metavar="PATH",
                    help="run only our server, under cProfile, writing its stats to PATH "
                         "(read with: python -m pstats PATH)")
    ap.add_argument("--sample", metavar="PATH",
                    help="run only our server under a 1 kHz stack sampler of its event-loop "
                         "thread, writing collapsed stacks to PATH")
    args = ap.parse_args()
    from aiolivekit.testing.netns import in_private_netns

    if not in_private_netns():
        netns_run = HERE.parent / "scripts" / "netns-run"
        os.execv(str(netns_run), [str(netns_run), sys.executable, *sys.argv])
    rows = asyncio.run(run_all(args.participants, args.seconds, args.repeat, args.client,
                               lambda m: print(m, file=sys.stderr), args.profile,
                               args.sample, args.pin))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
