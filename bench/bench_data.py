"""Data-path benchmarks: RPC round trip, reliable publish_data round trip, text-stream throughput.

For each implementation two participants join one room on one server:

* ``rpc_rtt`` -- sequential ``perform_rpc`` calls to an echo method (median, p99 in ms);
* ``data_rtt_100B`` / ``data_rtt_10KB`` -- ``publish_data`` (reliable) to the peer, which
  publishes the same bytes back; time until the echo arrives (median, p99 in ms);
* ``text_stream`` -- ``send_text`` of 10 MB of random text to the peer (``compress=False``),
  time until its reader has it all (MB/s; the received text is checked).

Each SDK runs the same loops in a fresh process of its own (this file re-executed with
``--worker``: ours with this python, the official ``livekit`` SDK with its venv's python),
never in the process that hosts the embedded server. Run with ``bench/run.py``
(``--only data``) or on its own inside the namespace::

    scripts/netns-run python bench/bench_data.py [--quick]

The worker imports only the SDK it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

_SELF = os.path.abspath(__file__)
OFFICIAL_PY = os.path.expanduser("~/.cache/aiolivekit/official-venv/bin/python")
TEXT_BYTES = 10 * 1024 * 1024
STEP_TIMEOUT = 60.0


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100.0 * (len(ordered) - 1))))
    return ordered[k]


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p99": _pct(values, 99), "n": len(values)}


def _text(n: int) -> str:
    """About ``n`` bytes of random mixed-width text (UTF-8-safe chunking is exercised)."""
    import random

    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 é日🎉"
    avg = sum(len(c.encode()) for c in alphabet) / len(alphabet)
    return "".join(rng.choices(alphabet, k=int(n / avg)))


# --------------------------------------------------------------------------- shared loops
# Both implementations expose the same API names, so the measuring code is shared: `rtc` is
# `livekit.rtc` in the worker and `aiolivekit` here.


async def measure(rtc: Any, url: str, tok_a: str, tok_b: str, n: int, text_bytes: int,
                  deadline_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + deadline_s
    a, b = rtc.Room(), rtc.Room()
    await asyncio.wait_for(a.connect(url, tok_a), 20)
    await asyncio.wait_for(b.connect(url, tok_b), 20)
    out: dict[str, Any] = {}
    try:
        for _ in range(200):
            if a.remote_participants and b.remote_participants:
                break
            await asyncio.sleep(0.05)
        a_id, b_id = a.local_participant.identity, b.local_participant.identity

        # -- RPC round trip
        async def echo(data: Any) -> str:
            return data.payload

        b.local_participant.register_rpc_method("echo", echo)
        for _ in range(5):  # warm-up
            await a.local_participant.perform_rpc(destination_identity=b_id, method="echo",
                                                  payload="w")
        rtts: list[float] = []
        for i in range(n):
            if loop.time() > stop_at:
                break
            t0 = time.perf_counter()
            r = await asyncio.wait_for(a.local_participant.perform_rpc(
                destination_identity=b_id, method="echo", payload=f"p{i}"), STEP_TIMEOUT)
            rtts.append((time.perf_counter() - t0) * 1000)
            assert r == f"p{i}"
        out["rpc_rtt"] = _summary(rtts)

        # -- reliable publish_data round trip
        pongs: asyncio.Queue[bytes] = asyncio.Queue()

        tasks: set[asyncio.Future[Any]] = set()  # keeps the echo/reader tasks referenced

        def keep(fut: asyncio.Future[Any]) -> None:
            tasks.add(fut)
            fut.add_done_callback(tasks.discard)

        def on_b(pkt: Any) -> None:
            if pkt.topic == "ping":
                keep(asyncio.ensure_future(b.local_participant.publish_data(
                    pkt.data, reliable=True, topic="pong", destination_identities=[a_id])))

        def on_a(pkt: Any) -> None:
            if pkt.topic == "pong":
                pongs.put_nowait(pkt.data)

        b.on("data_received", on_b)
        a.on("data_received", on_a)
        for label, size in (("data_rtt_100B", 100), ("data_rtt_10KB", 10_000)):
            samples: list[float] = []
            for i in range(n + 5):
                if loop.time() > stop_at:
                    break
                payload = (f"{i:08d}".encode() * (size // 8 + 1))[:size]
                t0 = time.perf_counter()
                await a.local_participant.publish_data(payload, reliable=True, topic="ping",
                                                       destination_identities=[b_id])
                got = await asyncio.wait_for(pongs.get(), STEP_TIMEOUT)
                assert got == payload
                if i >= 5:
                    samples.append((time.perf_counter() - t0) * 1000)
            out[label] = _summary(samples)

        # -- text stream throughput
        text = _text(text_bytes)
        encoded = len(text.encode())
        done: asyncio.Future[str] = loop.create_future()

        def on_text(reader: Any, who: str) -> None:
            async def read() -> None:
                try:
                    done.set_result(await reader.read_all())
                except Exception as exc:  # noqa: BLE001 - reported by the waiter
                    done.set_exception(exc)
            keep(asyncio.ensure_future(read()))

        b.register_text_stream_handler("bulk", on_text)
        t0 = time.perf_counter()
        # compress=False: the official SDK would deflate the text; measure the transport
        await asyncio.wait_for(a.local_participant.send_text(
            text, topic="bulk", destination_identities=[b_id], compress=False), 300)
        got_text = await asyncio.wait_for(done, 300)
        elapsed = time.perf_counter() - t0
        assert got_text == text, "text stream corrupted"
        out["text_stream"] = {"mb_per_s": encoded / elapsed / 1e6, "seconds": elapsed,
                              "bytes": encoded}
    finally:
        await asyncio.gather(a.disconnect(), b.disconnect(), return_exceptions=True)
    return out


# --------------------------------------------------------------------------- rows


def _rows(impl: str, server: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    from common import row

    rows = []
    for key in ("rpc_rtt", "data_rtt_100B", "data_rtt_10KB"):
        if key in res:
            s = res[key]
            name = f"{key} [{server}]"
            rows.append(row(name, impl, "median", s["median"], "ms", server=server, n=s["n"]))
            rows.append(row(name, impl, "p99", s["p99"], "ms", server=server, n=s["n"]))
    if "text_stream" in res:
        t = res["text_stream"]
        mb = round(t["bytes"] / 1e6)
        rows.append(row(f"text_stream_{mb}MB [{server}]", impl, "throughput", t["mb_per_s"],
                        "MB/s", server=server, seconds=t["seconds"]))
    return rows


async def _in_worker(python: str, sdk: str, url: str, tok_a: str, tok_b: str, n: int,
                     text_bytes: int, timeout: float) -> dict[str, Any]:
    """Run ``measure`` for ``sdk`` in a fresh process (this file with ``--worker``)."""
    args = json.dumps({"sdk": sdk, "url": url, "a": tok_a, "b": tok_b, "n": n,
                       "text_bytes": text_bytes, "deadline": timeout - 30})
    proc = await asyncio.create_subprocess_exec(
        python, _SELF, "--worker", args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{sdk} worker timed out") from None
    for line in out.decode().splitlines():
        if line.startswith("{"):
            res = json.loads(line)
            if "error" in res:
                raise RuntimeError(f"{sdk} worker: {res['error']}")
            return res  # type: ignore[no-any-return]
    raise RuntimeError(f"{sdk} worker printed nothing; stderr: {err.decode()[-2000:]}")


def _setup(server: str, n: int, text_bytes: int) -> str:
    return (f"server {server}; each SDK in a fresh worker process (bench_data.py --worker, "
            f"the same measuring code for both; order alternates per repetition) holding both "
            f"participants A and B in one room; rpc_rtt: {n} sequential perform_rpc calls "
            f"A->B to an echo method; data_rtt: {n} reliable publish_data A->B, B publishes "
            f"the same bytes back (5 warm-up round trips not counted); text_stream: send_text "
            f"of {text_bytes / 1e6:.1f} MB of random text A->B, compress=False, until B's "
            f"reader has it all (content checked)")


async def run(ctx: Any) -> list[dict[str, Any]]:
    n = 50 if ctx.quick else 200
    text_bytes = TEXT_BYTES // 4 if ctx.quick else TEXT_BYTES
    servers = [("livekit-server", ctx.livekit)] if ctx.livekit else []
    if not ctx.quick or not servers:
        servers.append(("embedded", ctx.embedded))
    sdks = [("aiolivekit", sys.executable)]
    if ctx.official_python:
        sdks.append(("official", ctx.official_python))
    rows: list[dict[str, Any]] = []
    for name, server in servers:
        setup = _setup(name, n, text_bytes)
        for rep in range(1 if ctx.quick else max(1, min(ctx.repeat, 2))):
            for sdk, python in (sdks if rep % 2 == 0 else sdks[::-1]):
                room = ctx.room("data")
                ctx.log(f"data: {sdk} on {name}")
                try:
                    res = await _in_worker(python, sdk, server.url,
                                           server.token("bench-a", room),
                                           server.token("bench-b", room), n, text_bytes, 300)
                except RuntimeError as exc:
                    ctx.log(f"data: {sdk} failed: {exc}")
                    continue
                rows += [dict(r, setup=setup) for r in _rows(sdk, name, res)]
    return rows


# --------------------------------------------------------------------------- entry points


def _worker(arg: str) -> None:
    """Run ``measure`` with one SDK (``cfg["sdk"]``) and print one JSON line."""
    cfg = json.loads(arg)
    if cfg["sdk"] == "official":
        from livekit import rtc
    else:
        import aiolivekit as rtc

    async def main() -> dict[str, Any]:
        return await measure(rtc, cfg["url"], cfg["a"], cfg["b"], cfg["n"], cfg["text_bytes"],
                             cfg["deadline"])

    try:
        res = asyncio.run(main())
    except BaseException as exc:  # noqa: BLE001 - reported as JSON
        res = {"error": repr(exc)}
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
    os._exit(0)  # the official SDK may abort at interpreter exit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", metavar="JSON")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.worker:
        _worker(args.worker)
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import BenchContext

    from aiolivekit.server import DevServer
    from aiolivekit.testing.netns import in_private_netns
    from aiolivekit.testing.servers import LiveKitServerProcess, ServerInfo, find_livekit_server

    have_official = in_private_netns() and os.path.exists(OFFICIAL_PY)

    async def go() -> None:
        servers: dict[str, ServerInfo] = {}
        async with DevServer(port=0) as dev:
            servers["embedded"] = ServerInfo("embedded", dev.url, dev.api_key, dev.api_secret)
            binary = find_livekit_server() if in_private_netns() else None
            ctx = BenchContext(servers=servers, quick=args.quick, repeat=1,
                               official_python=OFFICIAL_PY if have_official else None)
            if binary:
                async with LiveKitServerProcess(binary) as lk:
                    servers["livekit-server"] = lk.info()
                    rows = await run(ctx)
            else:
                rows = await run(ctx)
        for r in rows:
            print(json.dumps(r))

    asyncio.run(go())


if __name__ == "__main__":
    main()
