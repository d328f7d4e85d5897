"""Reconnection after a fault (issue 13), side by side with the official Python SDK.

Equal work, same run: in one room, each SDK runs one worker process
(``bench/reconnect_worker.py``) with a publisher (continuous 440 Hz tone, 10 ms frames,
RED and DTX off) and a subscriber of it; the fault hits both SDKs' four connections at the
same instant. Faults, on livekit-server and on the embedded server (each its own server):

* ``signal_cut``: every signal connection goes through one ``TcpProxy``, reset at once;
* ``blackhole3s``: every announced ICE candidate points at a ``UdpRelay``
  (livekit-server: ``node_ip``; ours: ``DevServer(announce=...)``; ``DirectPathBlock``
  keeps the servers off the direct path); the relay drops everything for 3 s, both ways;
* ``restart``: the server process is killed (SIGKILL) and started again on the same ports
  (ours: ``python -m aiolivekit serve --dev``).

Per SDK: ``reconnected`` (fault -> the later of the publisher's and the subscriber's first
``reconnected``; absent when no ``reconnected`` came), ``audio_gap`` (the longest time
without the tone at the subscriber around the fault) and ``tone_back`` (fault -> the end of
that gap: the tone heard again). ``python bench/bench_reconnect.py`` (inside scripts/netns-run) runs it
alone and prints a table (``BENCH_RECONNECT_ONLY=embedded/restart,...`` picks cases;
``BENCH_RECONNECT_REPEAT=N`` runs each case N times, the table then gives medians: one
restart is one draw of both SDKs' randomised retry waits); ``bench/run.py`` runs it with
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import BenchContext, row  # noqa: E402
from sdk_worker import run_worker  # noqa: E402

from aiolivekit.testing.faults import (  # noqa: E402
    ProcessControl,
    TcpProxy,
    UdpRelay,
    relayed_server,
)
from aiolivekit.testing.servers import (  # noqa: E402
    LiveKitServerProcess,
    ServerInfo,
    find_livekit_server,
    free_port,
)

BENCH = "reconnect"
WORKER = str(HERE / "reconnect_worker.py")
SETUP = 25.0  # seconds for both workers to connect, publish and subscribe
PRE = 3.0     # steady tone before the fault
POST = {"signal_cut": 12.0, "blackhole3s": 12.0, "restart": 20.0}  # after the fault
OUTAGE = 3.0
SDKS = ("aiolivekit", "official")

Inject = Callable[[], Awaitable[None]]


@contextlib.asynccontextmanager
async def _restartable(kind: str, binary: str
                       ) -> AsyncIterator[tuple[ServerInfo, ProcessControl]]:
    if kind == "embedded":
        port = free_port()
        control = ProcessControl.aiolivekit_serve(port, start_timeout=30)
        info = ServerInfo("embedded", f"ws://127.0.0.1:{port}")
    else:
        srv = LiveKitServerProcess(binary)
        control = ProcessControl.livekit_server(srv, start_timeout=30)
        info = srv.info()
    async with control:
        yield info, control


async def _measure(ctx: BenchContext, info: ServerInfo, url: str, kind: str, fault: str,
                   inject: Inject) -> list[dict[str, Any]]:
    """Both SDKs' workers in one room; ``inject()`` at the fault time."""
    assert ctx.official_python is not None
    room = ctx.room("reconnect")
    fault_at = time.time() + SETUP + PRE
    end_at = fault_at + POST[fault]
    ready: set[str] = set()

    def worker(impl: str, python: str) -> Awaitable[dict[str, Any]]:
        def on_event(obj: dict[str, Any]) -> None:
            if obj.get("event") == "published":
                ready.add(impl)
        return run_worker(python, {
            "sdk": impl, "mode": "reconnect", "url": url,
            "token_pub": info.token(f"{impl}-pub", room),
            "token_sub": info.token(f"{impl}-sub", room),
            "identity_pub": f"{impl}-pub", "fault_at": fault_at, "end_at": end_at,
        }, end_at - time.time() + 40, on_event=on_event, script=WORKER)

    times: dict[str, float] = {}

    async def drive() -> None:
        await asyncio.sleep(max(0.0, fault_at - time.time()))
        if ready != set(SDKS):
            ctx.log(f"{BENCH} {kind} {fault}: not ready at the fault: {sorted(ready)}")
        times["fault"] = time.time()
        await inject()
        times["fault_end"] = time.time()
        ctx.log(f"{BENCH} {kind} {fault}: injected ({times['fault_end'] - times['fault']:.2f} s)")

    results = await asyncio.gather(worker("aiolivekit", sys.executable),
                                   worker("official", ctx.official_python), drive())
    rows: list[dict[str, Any]] = []
    t_fault = times["fault"]
    for impl, res in zip(SDKS, results[:2], strict=True):
        events = [(r, n, t) for r, n, t in res["events"]]
        firsts = {r: min((t for rr, n, t in events if rr == r and n == "reconnected"),
                         default=None) for r in ("pub", "sub")}
        summary = [f"{r}:{n}@{t - t_fault:+.2f}" for r, n, t in events]
        setup = (f"{kind}, {fault}: one room, each SDK a publisher (440 Hz, RED/DTX off) and "
                 f"its subscriber in one worker, both SDKs hit by the same fault at once")
        extra = {"setup": setup, "server": kind, "fault": fault, "events": summary,
                 "fault_seconds": round(times["fault_end"] - t_fault, 3),
                 "tone_share_before": round(res["tone_share_before"], 3),
                 "tracks_read": res["tracks_read"]}
        bench = f"{BENCH}/{kind}/{fault}"
        if firsts["pub"] is not None and firsts["sub"] is not None:
            rows.append(row(bench, impl, "reconnected",
                            max(firsts["pub"], firsts["sub"]) - t_fault, "s", **extra))
        rows.append(row(bench, impl, "reconnected_events",
                        sum(1 for _, n, _ in events if n == "reconnected"), "count", **extra))
        rows.append(row(bench, impl, "audio_gap", res["audio_gap"], "s", **extra))
        if res["tone_back_at"] is not None:
            rows.append(row(bench, impl, "tone_back", res["tone_back_at"] - t_fault, "s",
                            **extra))
    return rows


async def _measure_once_more(ctx: BenchContext, info: ServerInfo, url: str, kind: str,
                             fault: str, inject: Inject) -> list[dict[str, Any]]:
    """:func:`_measure`; a worker that could not connect before the fault is run once more
    (logged, and the rows say so): seen for our client on the relayed livekit-server in
    about one join of five before ``ice_ips`` (the server left the relayed checks
    unanswered)."""
    try:
        return await _measure(ctx, info, url, kind, fault, inject)
    except RuntimeError as exc:
        if "did not connect" not in str(exc):
            raise
        first = str(exc).splitlines()[0]
        ctx.log(f"{BENCH} {kind} {fault}: {first}; once more")
    rows = await _measure(ctx, info, url, kind, fault, inject)
    for r in rows:
        r["retried_after"] = first
    return rows


async def run(ctx: BenchContext) -> list[dict[str, Any]]:
    binary = find_livekit_server()
    if binary is None or ctx.official_python is None:
        ctx.log(f"{BENCH}: needs livekit-server and the official SDK venv; skipped")
        return []
    rows: list[dict[str, Any]] = []
    only = [x for x in os.environ.get("BENCH_RECONNECT_ONLY", "").split(",") if x]

    repeat = max(1, int(os.environ.get("BENCH_RECONNECT_REPEAT", "1")))

    def wanted(kind: str, fault: str) -> bool:
        return not only or f"{kind}/{fault}" in only

    for n in range(repeat):
        for r in await _run_cases(ctx, binary, wanted):
            r["repeat"] = n
            rows.append(r)
    return rows


async def _run_cases(ctx: BenchContext, binary: str,
                     wanted: Callable[[str, str], bool]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for kind in ("livekit-server", "embedded"):
        if wanted(kind, "signal_cut") or wanted(kind, "blackhole3s"):
            async with relayed_server(kind, seed=13, binary=binary) as (info, relay):
                if wanted(kind, "signal_cut"):
                    host, port = info.url.removeprefix("ws://").rsplit(":", 1)
                    async with TcpProxy((host, int(port))) as proxy:
                        async def cut(proxy: TcpProxy = proxy) -> None:
                            await proxy.cut()
                        rows += await _measure_once_more(ctx, info, proxy.url(), kind,
                                                         "signal_cut", cut)
                if wanted(kind, "blackhole3s"):
                    async def outage(relay: UdpRelay = relay) -> None:
                        await relay.outage(OUTAGE)
                    rows += await _measure_once_more(ctx, info, info.url, kind,
                                                     "blackhole3s", outage)
        if wanted(kind, "restart"):
            async with _restartable(kind, binary) as (info, control):
                async def restart(control: ProcessControl = control) -> None:
                    await asyncio.wait_for(control.restart(kill=True), 40)
                rows += await _measure_once_more(ctx, info, info.url, kind, "restart",
                                                 restart)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per (server, fault), both SDKs side by side (the median of the
    repeats; ``reconnected`` events summed over them)."""
    values: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = {}
    for r in rows:
        key = (r["server"], r["fault"])
        values.setdefault(key, {}).setdefault(r["impl"], {}).setdefault(
            r["metric"], []).append(r["value"])
    cells: dict[tuple[str, str], dict[str, dict[str, float]]] = {
        key: {impl: {metric: (sum(v) if metric == "reconnected_events"
                              else statistics.median(v))
                     for metric, v in metrics.items()}
              for impl, metrics in by.items()}
        for key, by in values.items()}

    def fmt(v: float | None, unit: str = " s") -> str:
        return "none" if v is None else f"{v:.2f}{unit}"

    out = ["| server | fault | to `reconnected` ours / official | `reconnected` events "
           "ours / official | audio gap at the receiver ours / official |",
           "| --- | --- | --- | --- | --- |"]
    for (server, fault), by in cells.items():
        o, f = by.get("aiolivekit", {}), by.get("official", {})
        out.append(
            f"| {server} | {fault} | {fmt(o.get('reconnected'))} / "
            f"{fmt(f.get('reconnected'))} | {o.get('reconnected_events', 0):.0f} / "
            f"{f.get('reconnected_events', 0):.0f} | {fmt(o.get('audio_gap'))} / "
            f"{fmt(f.get('audio_gap'))} |")
    return "\n".join(out)


def _table_from_json(path: str) -> None:
    """``python bench/bench_reconnect.py --table FILE``: the table of the JSON rows a run
    printed."""
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("{"):
                rows.append(json.loads(line))
    print(table(rows))


async def _main() -> int:
    from aiolivekit.testing.netns import in_private_netns

    if not in_private_netns():
        print("run inside scripts/netns-run", file=sys.stderr)
        return 2
    official = Path.home() / ".cache" / "aiolivekit" / "official-venv" / "bin" / "python"
    ctx = BenchContext(official_python=str(official) if official.is_file() else None)
    load = os.getloadavg()
    rows = await run(ctx)
    for r in rows:
        print(json.dumps(r))
    print(f"\nload average at the start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(table(rows))
    for r in rows:
        if r["metric"] == "audio_gap":
            print(f"{r['server']} {r['fault']} {r['impl']}: {' '.join(r['events'])}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        _table_from_json(sys.argv[2])
        raise SystemExit(0)
    raise SystemExit(asyncio.run(_main()))
