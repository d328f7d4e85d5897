"""Received audio under loss, jitter and reordering (issue 20), through a real server.

A 440 Hz tone (with a 30 ms 880 Hz mark every 0.5 s, for latency) goes alice -> server ->
bob, with RED as the official SDK publishes by default; the user-space ``UdpRelay`` sits between the server and the clients
(``docs/faults.md``) and impairs what the server sends. For each condition bob's
``AudioStream`` output over a measured window must hold the tone in >= 99 % of its 10 ms
windows, with no hole longer than one concealed 20 ms frame; on the clean network the
playout buffer's latency stays within 5 ms of the pass-through path (carol, subscribed
with ``AIOLIVEKIT_AUDIO_PLAYOUT=0``, in the same room at the same time). dave, subscribed
through the same relay on a clean path, is the control for the machine's own share: the
>= 99 % is of what the machine lets through (``_check``). Audio NACK: ``_run_nack``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiolivekit import (
    AudioFrame,
    AudioSource,
    AudioStream,
    LocalAudioTrack,
    Room,
    TrackKind,
    TrackPublishOptions,
    TrackSource,
)
from aiolivekit.testing.faults import ImpairmentConfig, UdpRelay, relayed_server
from aiolivekit.testing.servers import find_livekit_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from tone_quality import analyse, mark_onsets, tone_pcm

pytestmark = [pytest.mark.netns]

IN_NETNS = os.environ.get("AIOLIVEKIT_NETNS") == "1"
TIMEOUT = 10.0
RATE = 48000
AMP = 8000.0
MARK_EVERY = 50  # 10 ms frames: a mark every 0.5 s
SETTLE, MEASURE = 1.5, 6.0

CONDITIONS: list[tuple[str, ImpairmentConfig]] = [
    ("clean", ImpairmentConfig()),
    ("loss 5%", ImpairmentConfig(loss=0.05)),
    ("jitter 40±20 ms reordered", ImpairmentConfig(delay=0.040, jitter=0.020, reorder=True)),
    ("loss 5% + jitter", ImpairmentConfig(loss=0.05, delay=0.040, jitter=0.020, reorder=True)),
    ("bursts of 3 lost", ImpairmentConfig(loss=0.02, burst=3)),
]


class _Recorder:
    """Every frame an AudioStream yields, with the monotonic time it was yielded."""

    def __init__(self, track: Any) -> None:
        self.frames: list[tuple[float, bytes]] = []
        self.stream = AudioStream(track, sample_rate=RATE, num_channels=1)
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for ev in self.stream:
            self.frames.append((time.monotonic(), bytes(ev.frame.data)))

    def window(self, t0: float, t1: float) -> tuple[bytes, float]:
        """PCM of the frames yielded in [t0, t1) and the time of the first one."""
        sel = [(t, d) for t, d in self.frames if t0 <= t < t1]
        return b"".join(d for _, d in sel), (sel[0][0] if sel else t0)

    async def aclose(self) -> None:
        await self.stream.aclose()
        await asyncio.wait_for(self.task, TIMEOUT)


class _Publisher:
    """alice's tone, 10 ms frames paced by the monotonic clock; ``marks``: the capture
    time of each mark's first frame."""

    def __init__(self) -> None:
        self.source = AudioSource(RATE, 1)
        self.marks: list[float] = []
        self.marking = False
        self._stop = False
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        start = time.monotonic()
        i = 0
        while not self._stop:
            if self.marking and i % MARK_EVERY < 3:  # 30 ms marks
                pcm = tone_pcm(i * 480, 480, 880.0, AMP)
                if i % MARK_EVERY == 0:
                    self.marks.append(time.monotonic())
            else:
                pcm = tone_pcm(i * 480, 480, 440.0, AMP)
            await self.source.capture_frame(AudioFrame(pcm.tobytes(), RATE, 1, 480))
            i += 1
            ahead = start + i * 0.01 - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)

    async def aclose(self) -> None:
        self._stop = True
        await asyncio.wait_for(self.task, TIMEOUT)


def _latencies(rec: _Recorder, marks: list[float], t0: float, t1: float) -> list[float]:
    """ms from each mark's capture to the frame holding its onset (yielded in [t0, t1))."""
    sel = [(t, d) for t, d in rec.frames if t0 <= t < t1]
    times = np.repeat([t for t, _ in sel], [len(d) // 2 for _, d in sel])
    pcm = np.frombuffer(b"".join(d for _, d in sel), dtype=np.int16)
    out = []
    for idx in mark_onsets(pcm, freq=440.0, mark_freq=880.0):
        got = float(times[idx])
        before = [m for m in marks if m <= got]
        if before and got - before[-1] < 0.4:
            out.append((got - before[-1]) * 1000)
    return out


@asynccontextmanager
async def _server_via_relay(kind: str) -> AsyncIterator[tuple[str, Any, UdpRelay]]:
    """``kind``'s server with its media behind the relay (aiolivekit.testing.faults.rig)."""
    if kind == "livekit-server" and find_livekit_server() is None:
        pytest.skip("livekit-server binary not installed (scripts/test installs it with go)")
    async with relayed_server(kind, seed=20) as (info, relay):
        yield info.url, lambda identity: info.token(identity, room="r"), relay


async def _subscribe(room: Room, url: str, token: str) -> Any:
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @room.on("track_subscribed")
    def _on_track(track: Any, *_: Any) -> None:
        if track.kind == TrackKind.KIND_AUDIO and not got.done():
            got.set_result(track)

    await asyncio.wait_for(room.connect(url, token), TIMEOUT * 2)
    return await asyncio.wait_for(got, TIMEOUT * 2)


def _local_addresses(room: Room) -> list[tuple[str, int]]:
    """The addresses ``room``'s subscriber connection sends from (its ICE candidates)."""
    from aiolivekit._compat.aiortc import ice_connections

    engine = room._engine
    assert engine is not None and engine.subscriber is not None
    return [(c.host, c.port) for conn in ice_connections(engine.subscriber.pc)
            for c in conn.local_candidates]


async def _run_conditions(url: str, token: Any, relay: UdpRelay, impair: Any,
                          monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """bob (playout buffer) and carol (pass-through) through the impaired downlink; dave
    (playout buffer) through the same relay on a clean path: the control that measures
    what the machine itself costs (a loaded machine delays this process's event loop,
    which holds the publisher, the relay and the subscribers alike)."""
    alice, bob, carol, dave = Room(), Room(), Room(), Room()
    pub = _Publisher()
    recs: list[_Recorder] = []
    results: dict[str, Any] = {}
    try:
        await asyncio.wait_for(alice.connect(url, token("alice")), TIMEOUT * 2)
        mic = LocalAudioTrack.create_audio_track("mic", pub.source)
        # RED on, as the official SDK publishes by default (the scenario)
        pub_info = await alice.local_participant.publish_track(
            mic, TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE, red=True))
        assert pub_info.mime_type == "audio/red"
        bob_track = await _subscribe(bob, url, token("bob"))
        monkeypatch.setenv("AIOLIVEKIT_AUDIO_PLAYOUT", "0")  # carol: today's pass-through
        carol_track = await _subscribe(carol, url, token("carol"))
        monkeypatch.delenv("AIOLIVEKIT_AUDIO_PLAYOUT")
        dave_track = await _subscribe(dave, url, token("dave"))
        impair(relay, None, clean=_local_addresses(dave))
        bob_rec, carol_rec = _Recorder(bob_track), _Recorder(carol_track)
        dave_rec = _Recorder(dave_track)
        recs = [bob_rec, carol_rec, dave_rec]
        # steady state: the subscriptions' start-up (a burst of queued packets) out of the
        # playout buffer's 2 s jitter window before the clean network is measured
        await asyncio.sleep(2.5)
        for name, cfg in CONDITIONS:
            impair(relay, cfg)
            pub.marking = name == "clean"
            await asyncio.sleep(SETTLE)
            before = _counters(bob_track)
            t0 = time.monotonic()
            await asyncio.sleep(MEASURE)
            t1 = time.monotonic()
            res: dict[str, Any] = {"publisher_fec_loss": mic._rtc_track.expected_loss}
            res["bob_playout"] = {k: v - before[k] for k, v in _counters(bob_track).items()
                                  if v != before[k]}
            for who, rec in (("bob", bob_rec), ("dave", dave_rec)):
                pcm, _ = rec.window(t0, t1)
                res[who] = analyse(pcm, t1 - t0, amplitude=AMP,
                                   mark_freq=880.0 if name == "clean" else None).as_dict()
            if name == "clean":
                res["latency_bob"] = _latencies(bob_rec, pub.marks, t0, t1)
                res["latency_carol"] = _latencies(carol_rec, pub.marks, t0, t1)
            inbound = [st for st in await bob_track.get_stats() if st.type == "inbound-rtp"]
            res["bob_target_current_delay"] = [getattr(inbound[0], "targetDelay", None),
                                               getattr(inbound[0], "currentDelay", None)]
            results[name] = res
        impair(relay, ImpairmentConfig())
        stats = [s for s in await bob_track.get_stats() if s.type == "inbound-rtp"]
        results["stats"] = {k: getattr(stats[0], k, None) for k in (
            "concealedSamples", "totalSamplesReceived", "jitterBufferDelay",
            "jitterBufferEmittedCount", "fecPacketsRecovered", "redPacketsRecovered",
            "packetsDiscarded", "insertedSamplesForDeceleration",
            "removedSamplesForAcceleration")}
    finally:
        for rec in recs:
            await rec.aclose()
        await pub.aclose()
        for room in (alice, bob, carol, dave):
            await room.disconnect()
    return results


def _counters(track: Any) -> dict[str, int]:
    """bob's playout buffer counters (their change over a condition is printed)."""
    stats = dataclasses.asdict(_buffer(track).buffer.stats)
    return {k: v for k, v in stats.items() if isinstance(v, int)}


def _check(results: dict[str, Any]) -> None:
    """>= 99 % of bob's windows hold the tone, no hole longer than 2 windows, beyond what
    dave (same process, same publisher, same relay, clean path, in the same seconds) lost:
    on an idle machine dave loses nothing and this is the absolute target; under load the
    windows the machine costs everyone are not charged to the network."""
    table = json.dumps(results, indent=1, default=str)
    stats = results["stats"]
    assert stats["jitterBufferEmittedCount"] and stats["concealedSamples"] > 0, table
    assert stats["redPacketsRecovered"] > 10, table  # single losses came back from RED
    for name, _ in CONDITIONS:
        q, ctl = results[name]["bob"], results[name]["dave"]
        machine = 1.0 - ctl["tone_share"]
        assert q["tone_share"] >= 0.99 - machine, f"{name}: {table}"
        assert q["longest_gap_windows"] <= max(2, ctl["longest_gap_windows"]), f"{name}: {table}"
    clean = results["clean"]
    bob, carol = clean["latency_bob"], clean["latency_carol"]
    assert len(bob) >= 8 and len(carol) >= 8, table
    assert statistics.median(bob) <= statistics.median(carol) + 5.0, table


@pytest.mark.livekit_server
async def test_tone_survives_the_network_livekit_server(monkeypatch: pytest.MonkeyPatch) -> None:
    if not IN_NETNS:
        pytest.skip("needs the private namespace of scripts/netns-run")

    def impair(relay: UdpRelay, cfg: ImpairmentConfig | None,
               clean: list[tuple[str, int]] | None = None) -> None:
        # one route: every client's downstream (publisher: RTCP), but dave's
        for addr in clean or []:
            relay.routes[0].configure_client(addr, down=ImpairmentConfig())
        if cfg is not None:
            relay.configure(down=cfg)

    async def attempt() -> dict[str, Any]:
        async with _server_via_relay("livekit-server") as (url, token, relay):
            return await _run_conditions(url, token, relay, impair, monkeypatch)
    await _measure_twice(attempt)


async def test_tone_survives_the_network_embedded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    if not IN_NETNS:
        pytest.skip("needs the private namespace of scripts/netns-run")

    def impair(relay: UdpRelay, cfg: ImpairmentConfig | None,
               clean: list[tuple[str, int]] | None = None) -> None:
        for route in relay.routes:  # bob's and carol's downstream only (dave's route: clean)
            if cfg is not None and route.label in ("bob:subscriber", "carol:subscriber"):
                route.configure(down=cfg, seed=21)

    async def attempt() -> dict[str, Any]:
        async with _server_via_relay("embedded") as (url, token, relay):
            return await _run_conditions(url, token, relay, impair, monkeypatch)
    await _measure_twice(attempt)


async def _measure_twice(attempt: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """Run the conditions; if :func:`_check` fails, print that attempt's numbers and run
    them once more, on a new server, which must pass. This measures real-time playout in
    one process on a shared machine (dave, the control, takes out what the machine costs
    everyone, not a stall that hits bob alone); a second failure fails the test."""
    results = await attempt()
    print(json.dumps(results, indent=1, default=str))
    try:
        _check(results)
        return
    except AssertionError as exc:
        print(f"\nfirst attempt failed ({str(exc).splitlines()[0][:120]}): measuring again")
    results = await attempt()
    print(json.dumps(results, indent=1, default=str))
    _check(results)


# ---------------------------------------------------------------------------- audio NACK

NACK_MEASURE = 8.0


def _buffer(track: Any) -> Any:
    from aiolivekit._compat import aiortc as aiortc_compat

    return aiortc_compat.jitter_buffer(track._receiver)


async def _run_nack(url: str, token: Any, relay: UdpRelay, impair: Any,
                    monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """alice publishes Opus without RED (livekit-server then offers NACK for audio); bob
    NACKs, carol (``AIOLIVEKIT_AUDIO_NACK=0``) does not; the same 5 % loss on both
    downlinks (the relay's drops are counted)."""
    from aiolivekit._compat.aiortc import receiver_codecs
    from aiolivekit._compat.aiortc_nack import codec_has_nack

    alice, bob, carol = Room(), Room(), Room()
    pub = _Publisher()
    recs: list[_Recorder] = []
    out: dict[str, Any] = {}
    try:
        await asyncio.wait_for(alice.connect(url, token("alice")), TIMEOUT * 2)
        mic = LocalAudioTrack.create_audio_track("mic", pub.source)
        pub_info = await alice.local_participant.publish_track(
            mic, TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE, red=False))
        assert pub_info.mime_type == "audio/opus"
        bob_track = await _subscribe(bob, url, token("bob"))
        monkeypatch.setenv("AIOLIVEKIT_AUDIO_NACK", "0")
        carol_track = await _subscribe(carol, url, token("carol"))
        monkeypatch.delenv("AIOLIVEKIT_AUDIO_NACK")
        out["negotiated_nack"] = [
            any(codec_has_nack(c) for c in receiver_codecs(t._receiver).values())
            for t in (bob_track, carol_track)]
        bob_rec, carol_rec = _Recorder(bob_track), _Recorder(carol_track)
        recs = [bob_rec, carol_rec]
        await asyncio.sleep(2.5)
        before = {n: _buffer(t).buffer.stats.packets_lost
                  for n, t in (("bob", bob_track), ("carol", carol_track))}
        dropped0 = impair(relay, ImpairmentConfig(loss=0.05))
        t0 = time.monotonic()
        await asyncio.sleep(NACK_MEASURE)
        t1 = time.monotonic()
        dropped1 = impair(relay, ImpairmentConfig())
        await asyncio.sleep(0.5)  # retransmissions still on their way
        out["relay_dropped"] = dropped1 - dropped0
        for name, track, rec in (("bob", bob_track, bob_rec), ("carol", carol_track, carol_rec)):
            jb = _buffer(track)
            stats = {st.type: st for st in await track.get_stats()}["inbound-rtp"]
            pcm, _ = rec.window(t0, t1)
            out[name] = {
                "declared_lost": jb.buffer.stats.packets_lost - before[name],
                "nackCount": getattr(stats, "nackCount", None),
                "nackPacketsRequested": getattr(stats, "nackPacketsRequested", None),
                "nackPacketsRecovered": getattr(stats, "nackPacketsRecovered", None),
                "nackPacketsLate": getattr(stats, "nackPacketsLate", None),
                "rtt": jb.nack.rtt if jb.nack is not None else None,
                "tone": analyse(pcm, t1 - t0, amplitude=AMP).as_dict(),
            }
    finally:
        for rec in recs:
            await rec.aclose()
        await pub.aclose()
        for room in (alice, bob, carol):
            await room.disconnect()
    return out


def _check_nack(out: dict[str, Any]) -> None:
    table = json.dumps(out, indent=1, default=str)
    bob, carol = out["bob"], out["carol"]
    assert out["negotiated_nack"] == [True, True], table  # carol only sends none
    assert out["relay_dropped"] >= 10, table  # the relay really dropped packets
    assert carol["nackCount"] == 0 and carol["declared_lost"] >= 5, table
    assert bob["nackCount"] >= 1 and bob["nackPacketsRequested"] >= 1, table
    # NACKed packets came back in time and were played, not concealed: bob declares
    # fewer losses than carol, who lost as much at the relay
    assert bob["nackPacketsRecovered"] >= 3, table
    assert bob["declared_lost"] < carol["declared_lost"], table
    # and what was played is the tone (the tone shares themselves differ by a window or
    # two either way: waiting for a retransmission is concealed too, and the machine's
    # own stalls are in the same range; test_tone_survives_* holds the >= 99 %)
    assert bob["tone"]["tone_share"] >= 0.95 and bob["tone"]["snr_db"] >= 20, table


@pytest.mark.livekit_server
async def test_audio_nack_recovers_lost_packets_livekit_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    if not IN_NETNS:
        pytest.skip("needs the private namespace of scripts/netns-run")

    def impair(relay: UdpRelay, cfg: ImpairmentConfig) -> int:
        relay.configure(down=cfg)
        return relay.impairment("down").stats.dropped_total

    async with _server_via_relay("livekit-server") as (url, token, relay):
        out = await _run_nack(url, token, relay, impair, monkeypatch)
    print(json.dumps(out, indent=1, default=str))
    _check_nack(out)


async def test_audio_nack_recovers_lost_packets_embedded_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    if not IN_NETNS:
        pytest.skip("needs the private namespace of scripts/netns-run")

    def impair(relay: UdpRelay, cfg: ImpairmentConfig) -> int:
        dropped = 0
        for route in relay.routes:
            if route.label in ("bob:subscriber", "carol:subscriber"):
                if route.down is not None:  # the route's own impairment
                    dropped += route.down.stats.dropped_total
                route.configure(down=cfg, seed=21)
        return dropped

    async with _server_via_relay("embedded") as (url, token, relay):
        out = await _run_nack(url, token, relay, impair, monkeypatch)
    print(json.dumps(out, indent=1, default=str))
    _check_nack(out)
