"""Benchmark the SFU RTP forwarder: N audio publishers x M subscribers.

The relay (TrackForwarder receivers + forwarding senders) runs in this process; the
publishers and subscribers run in a child process, so the CPU time measured here is
the relay's alone. Publishers send a pre-encoded Opus packet every ``--ptime-ms``
(aiortc's ``pack()`` path, no encoder); subscribers do not decode. Everything is on
127.0.0.1 and bounded by ``--seconds`` plus a setup timeout.

    python bench/bench_forwarder.py                       # 10-participant audio room
    python bench/bench_forwarder.py --ptime-ms 2          # 10x the packet rate
    python bench/bench_forwarder.py --profile             # cProfile of the relay

Prints one JSON line with forwarded packets/s, relay CPU and CPU µs per forwarded
packet (``1e6 / us_per_packet`` is the projected packets/s per core).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import fractions
import io
import json
import multiprocessing
import multiprocessing.connection
import os
import pstats
import sys
import time
from typing import Any

SETUP_TIMEOUT = 60.0


def _pc() -> Any:
    from aiortc import RTCConfiguration, RTCPeerConnection

    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def _recv(conn: multiprocessing.connection.Connection, timeout: float = SETUP_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not conn.poll():
        if time.monotonic() > deadline:
            raise TimeoutError("no message from the other process")
        await asyncio.sleep(0.01)
    return conn.recv()


# -- load process: publishers and subscribers -----------------------------------------


def _opus_packet() -> bytes:
    import av
    import numpy as np

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48000
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 32000
    out: list[bytes] = []
    for i in range(10):
        t = (np.arange(960) + 960 * i) / 48000
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(pcm, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = 48000
        frame.pts = 960 * i
        out += [bytes(p) for p in codec.encode(frame)]
    return out[-1]


async def _load_main(conn: multiprocessing.connection.Connection, args: dict[str, Any]) -> None:
    import av
    from aiortc import MediaStreamTrack, RTCSessionDescription

    from aiolivekit.server.forwarder import TrackForwarder
    from aiolivekit.webrtc.ice import host_addresses

    payload = _opus_packet()
    ptime = args["ptime_ms"] / 1000.0
    stop_at = time.monotonic() + args["seconds"] + SETUP_TIMEOUT

    class PacketTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.n = 0
            self.start: float | None = None

        async def recv(self) -> av.Packet:
            if self.start is None:
                self.start = time.monotonic()
            wait = self.start + self.n * ptime - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if time.monotonic() > stop_at:
                await asyncio.sleep(3600)
            packet = av.Packet(payload)
            packet.pts = self.n * 960
            packet.time_base = fractions.Fraction(1, 48000)
            self.n += 1
            return packet

    pubs = []
    offers = []
    with host_addresses(["127.0.0.1"]):
        for _ in range(args["publishers"]):
            pc = _pc()
            pc.addTransceiver(PacketTrack(), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            pubs.append(pc)
            offers.append(pc.localDescription.sdp)
    conn.send(offers)
    answers = await _recv(conn)
    for pc, sdp in zip(pubs, answers, strict=True):
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    sub_offers = await _recv(conn)
    subs = []
    sinks: list[TrackForwarder] = []
    sub_answers = []
    with host_addresses(["127.0.0.1"]):
        for sdp in sub_offers:
            pc = _pc()

            def on_track(track: MediaStreamTrack, pc: Any = pc) -> None:
                receiver = next(
                    t.receiver for t in pc.getTransceivers() if t.receiver.track is track
                )
                sinks.append(TrackForwarder.attach(receiver, track.kind))  # no decoding

            pc.on("track", on_track)
            await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            subs.append(pc)
            sub_answers.append(pc.localDescription.sdp)
    conn.send(sub_answers)

    while True:
        msg = await _recv(conn, timeout=args["seconds"] + SETUP_TIMEOUT)
        if msg == "count":
            conn.send(sum(s.packets_received for s in sinks))
        elif msg == "stop":
            break
    for pc in pubs + subs:
        await asyncio.wait_for(pc.close(), 5)
    conn.send("closed")


def _load_process(conn: multiprocessing.connection.Connection, args: dict[str, Any]) -> None:
    asyncio.run(asyncio.wait_for(_load_main(conn, args), args["seconds"] + 2 * SETUP_TIMEOUT))


# -- relay process ---------------------------------------------------------------------


async def _relay_main(args: argparse.Namespace) -> dict[str, Any]:
    from aiortc import MediaStreamTrack, RTCSessionDescription

    from aiolivekit.server.config import ForwardingOptions
    from aiolivekit.server.forwarder import TrackForwarder
    from aiolivekit.webrtc.ice import host_addresses

    options = ForwardingOptions(fast_path=not args.queue_path)
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    load_args = {"publishers": args.publishers, "ptime_ms": args.ptime_ms, "seconds": args.seconds}
    proc = ctx.Process(target=_load_process, args=(child_conn, load_args), daemon=True)
    proc.start()
    pcs = []
    try:
        offers = await _recv(conn)
        forwarders: list[TrackForwarder | None] = [None] * len(offers)
        answers = []
        with host_addresses(["127.0.0.1"]):
            for i, sdp in enumerate(offers):
                pc = _pc()
                pcs.append(pc)

                def on_track(track: MediaStreamTrack, pc: Any = pc, i: int = i) -> None:
                    receiver = next(
                        t.receiver for t in pc.getTransceivers() if t.receiver.track is track
                    )
                    forwarders[i] = TrackForwarder.attach(receiver, track.kind, options=options)

                pc.on("track", on_track)
                await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                answers.append(pc.localDescription.sdp)
        conn.send(answers)
        deadline = time.monotonic() + SETUP_TIMEOUT
        while not all(f is not None and f.packets_received for f in forwarders):
            if time.monotonic() > deadline:
                raise TimeoutError("publishers did not connect")
            await asyncio.sleep(0.05)
        fws = [f for f in forwarders if f is not None]

        # one subscriber PC per participant, receiving up to M other publishers
        sub_offers = []
        outs = []
        with host_addresses(["127.0.0.1"]):
            for i in range(args.publishers):
                pc = _pc()
                pcs.append(pc)
                outs.append(pc)
                others = [j for j in range(len(fws)) if j != i][: args.subscribers]
                for j in others:
                    fws[j].add_subscriber(pc, stream_id=f"PA_{j}|TR_{j}", track_id=f"TR_{j}")
                await pc.setLocalDescription(await pc.createOffer())
                sub_offers.append(pc.localDescription.sdp)
        conn.send(sub_offers)
        sub_answers = await _recv(conn)
        for pc, sdp in zip(outs, sub_answers, strict=True):
            await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        expected_streams = sum(f.subscriber_count for f in fws)
        deadline = time.monotonic() + SETUP_TIMEOUT
        while sum(len(f.fanout.active) for f in fws) < expected_streams:
            if time.monotonic() > deadline:
                raise TimeoutError("subscribers did not connect")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # warm-up

        profiler = cProfile.Profile() if args.profile else None
        conn.send("count")
        recv0 = await _recv(conn)
        fwd0 = sum(f.packets_forwarded for f in fws)
        in0 = sum(f.packets_received for f in fws)
        t0 = os.times()
        cpu0, wall0 = time.process_time(), time.monotonic()
        if profiler:
            profiler.enable()
        await asyncio.sleep(args.seconds)
        if profiler:
            profiler.disable()
        cpu1, wall1 = time.process_time(), time.monotonic()
        t1 = os.times()
        fwd1 = sum(f.packets_forwarded for f in fws)
        in1 = sum(f.packets_received for f in fws)
        conn.send("count")
        recv1 = await _recv(conn)
        dropped = sum(d.queue.dropped for f in fws for d in f.down_tracks())
        socket_drops = sum(d.dropped_socket for f in fws for d in f.down_tracks())
        wall = wall1 - wall0
        forwarded = fwd1 - fwd0
        cpu = cpu1 - cpu0
        result = {
            "publishers": args.publishers,
            "subscribers_per_track": min(args.subscribers, args.publishers - 1),
            "ptime_ms": args.ptime_ms,
            "path": "queue" if args.queue_path else "direct",
            "seconds": round(wall, 2),
            "received_pps": round((in1 - in0) / wall),
            "forwarded_pps": round(forwarded / wall),
            "delivered_pps": round((recv1 - recv0) / wall),
            "relay_cpu_percent": round(100 * cpu / wall, 1),
            "relay_user_percent": round(100 * (t1.user - t0.user) / wall, 1),
            "relay_sys_percent": round(100 * (t1.system - t0.system) / wall, 1),
            "us_per_forwarded_packet": round(1e6 * cpu / forwarded, 1) if forwarded else None,
            "projected_pps_per_core": round(forwarded / cpu) if cpu else None,
            "queue_drops": dropped,
            "socket_buffer_drops": socket_drops,
        }
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(
                os.environ.get("BENCH_SORT", "tottime")
            ).print_stats(40)
            print(out.getvalue(), file=sys.stderr)
        conn.send("stop")
        await _recv(conn, timeout=15)
        return result
    finally:
        for pc in pcs:
            try:
                await asyncio.wait_for(pc.close(), 5)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError) as exc:
                print(f"close failed: {exc!r}", file=sys.stderr)
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--publishers", type=int, default=10, help="audio tracks (participants)")
    parser.add_argument(
        "--subscribers", type=int, default=9, help="subscribers per track (max N-1)"
    )
    parser.add_argument(
        "--ptime-ms", type=float, default=20.0, help="packet interval per publisher"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window")
    parser.add_argument("--profile", action="store_true", help="cProfile the relay (slower)")
    parser.add_argument(
        "--queue-path",
        action="store_true",
        help="disable the direct-send fast path (every packet goes through the sender task)",
    )
    args = parser.parse_args()
    if args.publishers < 2 or args.subscribers < 1:
        parser.error("need at least 2 publishers and 1 subscriber per track")
    result = asyncio.run(asyncio.wait_for(_relay_main(args), args.seconds + 3 * SETUP_TIMEOUT))
    result["setup"] = (
        f"no server and no official counterpart: our relay (TrackForwarder receivers and "
        f"forwarding senders) alone in a fresh process; {args.publishers} publishers x "
        f"{args.subscribers} subscribers per track in a second process, a pre-encoded Opus "
        f"packet every {args.ptime_ms:g} ms per publisher (no encoder, no decoding); relay "
        f"CPU over {args.seconds:g} s")
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
