"""Media-path and server faults (issue 13), on both servers, with real WebRTC.

* **3 s UDP blackhole** of the media path: every ICE candidate the server announces points
  at a user-space :class:`~aiolivekit.testing.faults.UdpRelay` (livekit-server:
  ``rtc.node_ip``; the embedded server: ``DevServer(announce=...)``) and
  :class:`~aiolivekit.testing.faults.DirectPathBlock` keeps the server off the clients'
  direct addresses, so all media and data cross the relay; the relay drops everything
  for 3 s, both directions, then heals. The signal (TCP) is untouched.
* **signal cut with the relay as the only media path**: the resume's ICE restarts must
  work when the server cannot reach the clients' own candidates (as behind a NAT).
* **server restart**: the server process is killed (SIGKILL) and started again on the same
  ports (the embedded server as ``python -m aiolivekit serve --dev --port P``). The new
  process does not know the session: the resume is refused and a full reconnect is the
  expected path (``local_track_republished``, new participant sid); the reliable messages
  the killed server had not acknowledged are sent again on the new session. The sender
  rejoins after the receiver (a server forwards data only to the participants in its room:
  what is sent while the receiver is not back is not for it, on either server).

For each: the events, a 440 Hz tone published across the fault heard again (FFT) within a
stated time, 1 000 numbered reliable messages sent across it, an RPC in flight answered or
failed clearly (never a hang). Measured numbers are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from test_reconnect import (
    N_MESSAGES,
    TIMEOUT,
    Recorder,
    ToneMonitor,
    _publish_tone,
    _remote_track,
    _until,
    _wait_heard,
)

from aiolivekit import Room, RpcError
from aiolivekit.testing import faults
from aiolivekit.testing.faults import ProcessControl, TcpProxy, UdpRelay
from aiolivekit.testing.servers import (
    LiveKitServerProcess,
    ServerInfo,
    find_livekit_server,
    free_port,
)

pytestmark = [pytest.mark.netns,
              pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")]

IN_NETNS = os.environ.get("AIOLIVEKIT_NETNS") == "1"
OUTAGE_S = 3.0
#: Stated bounds (a loaded 2-core machine; measured values are printed).
MAX_TONE_BACK_AFTER_HEAL_S = 3.0   # blackhole healed -> tone heard again
MAX_RESTART_RECONNECT_S = 8.0      # server back up -> reconnected
MAX_LOST_AT_KILL = 4  # acknowledged by the killed server, not forwarded (see the test)
MAX_TONE_BACK_AFTER_RESTART_S = 6.0  # reconnected -> tone heard again at the subscriber
MAX_RELAYED_RESUME_GAP_S = 1.0     # signal cut, relay-only media: longest tone gap
RPC_TIMEOUT = 15.0  # the callee's own deadline is 15 - 7 = 8 s (data/rpc.py)
EVENTS = ("reconnecting", "reconnected", "disconnected", "local_track_republished")


def _skip_unless_livekit_server() -> str:
    binary = find_livekit_server()
    if binary is None:
        pytest.skip("livekit-server binary not installed (scripts/install-deps builds it)")
    if not IN_NETNS:
        pytest.skip("livekit-server runs only inside the namespace of scripts/netns-run")
    return binary


@dataclass
class Relayed:
    info: ServerInfo
    relay: UdpRelay


@contextlib.asynccontextmanager
async def relayed_server(kind: str) -> AsyncIterator[Relayed]:
    """``kind``'s server with every announced ICE candidate behind one UdpRelay."""
    if not IN_NETNS:
        pytest.skip("DirectPathBlock needs the private namespace of scripts/netns-run")
    binary = _skip_unless_livekit_server() if kind == "livekit-server" else None
    async with faults.relayed_server(kind, seed=13, binary=binary) as (info, relay):
        yield Relayed(info, relay)


@contextlib.asynccontextmanager
async def restartable_server(kind: str) -> AsyncIterator[tuple[ServerInfo, ProcessControl]]:
    """``kind``'s server as a subprocess that a test can kill and start again."""
    if kind == "embedded":
        port = free_port()
        control = ProcessControl.aiolivekit_serve(port, start_timeout=30)
        info = ServerInfo("embedded", f"ws://127.0.0.1:{port}")
    else:
        srv = LiveKitServerProcess(_skip_unless_livekit_server())
        control = ProcessControl.livekit_server(srv, start_timeout=30)
        info = srv.info()
    async with control:
        yield info, control


async def _join(info: ServerInfo, rooms: list[Room], identity: str) -> Room:
    room = Room()
    rooms.append(room)
    await asyncio.wait_for(room.connect(info.url, info.token(identity)), 30)
    return room


class Traffic:
    """alice -> bob: numbered reliable messages (3 ms apart) and one slow RPC."""

    def __init__(self, alice: Room, bob: Room) -> None:
        self.alice, self.bob = alice, bob
        self.received: list[int] = []
        self.send_errors: list[str] = []
        self.send_started: list[float] = []  # when publish_data was called for each
        bob.on("data_received", self._on_data)

        @bob.local_participant.register_rpc_method("slow-echo")
        async def slow_echo(data: Any) -> str:
            await asyncio.sleep(1.0)
            return "echo:" + data.payload

        self.sender: asyncio.Future[None] | None = None
        self.rpc: asyncio.Future[str] | None = None
        self.rpc_started = 0.0

    def _on_data(self, packet: Any) -> None:
        if packet.topic == "seq":
            self.received.append(int(packet.data.decode()))

    def start_sending(self) -> None:
        async def send_all() -> None:
            for i in range(N_MESSAGES):
                self.send_started.append(time.monotonic())
                try:
                    await self.alice.local_participant.publish_data(str(i).encode(),
                                                                    topic="seq")
                except Exception as exc:  # noqa: BLE001 - recorded and asserted on
                    self.send_errors.append(f"{i}: {exc!r}")
                await asyncio.sleep(0.003)
        self.sender = asyncio.ensure_future(send_all())

    def start_rpc(self) -> None:
        self.rpc_started = time.monotonic()
        self.rpc = asyncio.ensure_future(self.alice.local_participant.perform_rpc(
            destination_identity="bob", method="slow-echo", payload="x",
            response_timeout=RPC_TIMEOUT))

    async def rpc_outcome(self) -> tuple[str, float]:
        """``("answer", s)`` or ``("RpcError <code>", s)``: never a hang (bounded)."""
        assert self.rpc is not None
        try:
            answer = await asyncio.wait_for(self.rpc, RPC_TIMEOUT + 7.0)
            assert answer == "echo:x"
            outcome = "answer"
        except RpcError as exc:
            outcome = f"RpcError {exc.code} {exc.message}"
        return outcome, time.monotonic() - self.rpc_started

    async def close(self) -> None:
        for task in (self.sender, self.rpc):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


@pytest.mark.parametrize("kind", ["embedded", "livekit-server"])
async def test_udp_blackhole_3s(kind: str, rooms: list[Room]) -> None:
    async with relayed_server(kind) as srv:
        bob = await _join(srv.info, rooms, "bob")
        alice = await _join(srv.info, rooms, "alice")
        tone, pub = await _publish_tone(alice)
        traffic = Traffic(alice, bob)
        monitor = None
        try:
            monitor = ToneMonitor(await _remote_track(bob, "alice"))
            await _wait_heard(monitor, 0.0, count=10)
            through = dict(srv.relay.stats.sent)
            rec_a = Recorder(alice, *EVENTS)
            rec_b = Recorder(bob, *EVENTS)
            sid_before = pub.sid
            traffic.start_sending()
            await _until(lambda: len(traffic.received) >= 200, step=0.005)
            traffic.start_rpc()
            await asyncio.sleep(0.2)  # the request is at bob, the answer not yet sent
            t_fault = time.monotonic()
            outage = srv.relay.start_outage(OUTAGE_S)
            await asyncio.wait_for(outage, OUTAGE_S + 5)
            t_heal = time.monotonic()
            assert traffic.sender is not None
            await asyncio.wait_for(traffic.sender, TIMEOUT * 2)
            rpc_outcome, rpc_s = await traffic.rpc_outcome()
            await _until(lambda: len(traffic.received) >= N_MESSAGES, TIMEOUT)
            t_back = await _wait_heard(monitor, t_heal)
            await asyncio.sleep(2.0)  # a late duplicate or a late reconnect would show now
            gap = monitor.longest_gap(t_fault - 0.5, t_back + 0.5)
            print(f"\n[{kind}] 3 s UDP blackhole: alice {rec_a.names()} bob {rec_b.names()}; "
                  f"tone back {t_back - t_heal:.3f} s after the heal (gap {gap:.3f} s); "
                  f"rpc {rpc_outcome} in {rpc_s:.2f} s; "
                  f"relay dropped {srv.relay.up.stats.dropped} up "
                  f"{srv.relay.down.stats.dropped} down")
            # all of it crossed the relay (the blackhole was a real one)
            assert srv.relay.stats.sent["down"] > through["down"] + 100
            # alice's audio (~50 packets/s) stopped at the relay: 3 s of it at least
            assert srv.relay.up.stats.dropped.get("blackhole", 0) > 120
            assert srv.relay.down.stats.dropped.get("blackhole", 0) > 0
            assert traffic.received == list(range(N_MESSAGES))
            assert traffic.send_errors == []
            assert rpc_outcome == "answer"
            assert t_back - t_heal < MAX_TONE_BACK_AFTER_HEAL_S
            assert pub.sid == sid_before
            # 3 s is below every detector (RFC 7675 consent: 30 s; the signal is untouched):
            # the session rides it out on the same ICE pair, no reconnection at all
            assert rec_a.names() == [] and rec_b.names() == [], (rec_a.names(), rec_b.names())
            assert alice.isconnected() and bob.isconnected()
        finally:
            await traffic.close()
            if monitor is not None:
                await monitor.close()
            await tone.close()


@pytest.mark.parametrize("kind", ["embedded", "livekit-server"])
async def test_signal_cut_with_the_relay_as_the_only_media_path(kind: str,
                                                                 rooms: list[Room]) -> None:
    """A resume where the server cannot reach the clients' own candidates (as behind a
    NAT): after the server's ICE restart of the subscriber PC it learns the client's
    address only from the client's checks. They go out at once (consent
    ``checks_after_restart``); waiting for the next scheduled check cut the tone for
    3-5 s on livekit-server."""
    async with relayed_server(kind) as srv:
        host, port = srv.info.url.removeprefix("ws://").rsplit(":", 1)
        async with TcpProxy((host, int(port))) as proxy:
            info = ServerInfo(kind, proxy.url(), srv.info.api_key, srv.info.api_secret)
            bob = await _join(info, rooms, "bob")
            alice = await _join(info, rooms, "alice")
            tone, pub = await _publish_tone(alice)
            traffic = Traffic(alice, bob)
            monitor = None
            try:
                monitor = ToneMonitor(await _remote_track(bob, "alice"))
                await _wait_heard(monitor, 0.0, count=10)
                rec_a, rec_b = Recorder(alice, *EVENTS), Recorder(bob, *EVENTS)
                traffic.start_sending()
                await _until(lambda: len(traffic.received) >= 200, step=0.005)
                t_cut = time.monotonic()
                assert await proxy.cut() == 2
                await rec_a.wait_for(lambda: "reconnected" in rec_a.names())
                await rec_b.wait_for(lambda: "reconnected" in rec_b.names())
                assert traffic.sender is not None
                await asyncio.wait_for(traffic.sender, TIMEOUT * 2)
                await _until(lambda: len(traffic.received) >= N_MESSAGES, TIMEOUT)
                t_back = await _wait_heard(monitor, t_cut + 0.05)
                await asyncio.sleep(2.0)
                gap = monitor.longest_gap(t_cut - 0.5, time.monotonic())
                print(f"\n[{kind}] signal cut, relay-only media: reconnected "
                      f"{rec_a.time_of('reconnected') - t_cut:.3f} s; tone gap {gap:.3f} s "
                      f"(back {t_back - t_cut:.3f} s after the cut)")
                assert rec_a.names() == ["reconnecting", "reconnected"]
                assert rec_b.names() == ["reconnecting", "reconnected"]
                assert traffic.received == list(range(N_MESSAGES))
                assert gap < MAX_RELAYED_RESUME_GAP_S
                assert pub.sid in alice.local_participant.track_publications
            finally:
                await traffic.close()
                if monitor is not None:
                    await monitor.close()
                await tone.close()


@pytest.mark.parametrize("kind", ["embedded", "livekit-server"])
async def test_server_restart_full_reconnect(kind: str, rooms: list[Room]) -> None:
    async with restartable_server(kind) as (info, control):
        bob = await _join(info, rooms, "bob")
        alice = await _join(info, rooms, "alice")
        tone, pub = await _publish_tone(alice)
        traffic = Traffic(alice, bob)
        monitors: list[ToneMonitor] = []
        try:
            monitors.append(ToneMonitor(await _remote_track(bob, "alice")))
            await _wait_heard(monitors[0], 0.0, count=10)
            rec_a = Recorder(alice, *EVENTS)
            rec_b = Recorder(bob, *EVENTS)
            sid_before, psid_before = pub.sid, alice.local_participant.sid
            # alice rejoins once bob is back: the new server forwards data only to those in
            # its room (as livekit-server does), so what alice sends again must find bob there
            full_attempt = alice._attempt_full

            async def full_after_bob() -> None:
                await rec_b.wait_for(lambda: "reconnected" in rec_b.names(), 30)
                await full_attempt()
            alice._attempt_full = full_after_bob  # type: ignore[method-assign]
            traffic.start_sending()
            await _until(lambda: len(traffic.received) >= 200, step=0.005)
            traffic.start_rpc()
            await asyncio.sleep(0.2)
            t_fault = time.monotonic()
            await asyncio.wait_for(control.restart(down_for=0.0, kill=True), 40)
            t_up = time.monotonic()
            await rec_a.wait_for(lambda: "reconnected" in rec_a.names()
                                 or "disconnected" in rec_a.names(), 30)
            await rec_b.wait_for(lambda: "reconnected" in rec_b.names()
                                 or "disconnected" in rec_b.names(), 30)
            t_rec = max(rec_a.time_of("reconnected"), rec_b.time_of("reconnected"))
            new_track = await _remote_track_not(bob, "alice", sid_before)
            monitors.append(ToneMonitor(new_track))
            t_back = await _wait_heard(monitors[-1], t_rec)
            assert traffic.sender is not None
            await asyncio.wait_for(traffic.sender, TIMEOUT * 2)
            rpc_outcome, rpc_s = await traffic.rpc_outcome()
            await asyncio.sleep(2.0)
            got = traffic.received
            missing = sorted(set(range(N_MESSAGES)) - set(got))
            print(f"\n[{kind}] server restart (down {t_up - t_fault:.2f} s): alice "
                  f"{rec_a.names()} {alice.reconnect_stats[-1]['attempts']}, bob "
                  f"{rec_b.names()}; reconnected {t_rec - t_up:.3f} s after the server was "
                  f"up; tone back {t_back - t_rec:.3f} s after reconnected "
                  f"({t_back - t_fault:.3f} s after the kill); {len(got)} messages, missing "
                  f"{_ranges(missing)}; rpc {rpc_outcome} in {rpc_s:.2f} s")
            # the restarted server does not know the session: a full reconnect, once
            assert rec_a.names() == ["reconnecting", "local_track_republished", "reconnected"]
            assert rec_b.names() == ["reconnecting", "reconnected"]
            assert alice.local_participant.sid != psid_before and pub.sid != sid_before
            _, _, (rpub, previous) = next(e for e in rec_a.events
                                          if e[1] == "local_track_republished")
            assert rpub is pub and previous == sid_before
            assert t_rec - t_up < MAX_RESTART_RECONNECT_S
            assert t_back - t_rec < MAX_TONE_BACK_AFTER_RESTART_S
            # at most once and in order: what the killed server had not acknowledged is
            # sent again on the new session (same numbering), and bob drops what it had.
            # What it had acknowledged but not yet forwarded when it was killed is gone for
            # every sender (its SCTP saw it delivered): seen once in ~12 runs, 2 messages,
            # so a short run of missing numbers at the kill is allowed, nothing else
            assert got == sorted(set(got)), (
                f"{len(got) - len(set(got))} duplicates, ordered {got == sorted(got)}")
            assert len(missing) <= MAX_LOST_AT_KILL and (
                not missing or missing[-1] - missing[0] < MAX_LOST_AT_KILL), (
                f"missing {_ranges(missing)}")
            assert traffic.send_errors == []
            assert rpc_s < RPC_TIMEOUT + 3.0
            assert rpc_outcome == "answer" or rpc_outcome.startswith("RpcError")
            assert alice.isconnected() and bob.isconnected()
        finally:
            await traffic.close()
            for monitor in monitors:
                await monitor.close()
            await tone.close()


async def _remote_track_not(room: Room, identity: str, old_sid: str) -> Any:
    """The first subscribed track of ``identity`` whose sid is not ``old_sid``."""
    def find() -> Any:
        p = room.remote_participants.get(identity)
        for pub in (p.track_publications.values() if p is not None else ()):
            if pub.track is not None and pub.sid != old_sid:
                return pub.track
        return None
    await _until(lambda: find() is not None, TIMEOUT)
    return find()


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    out: list[str] = []
    start = prev = values[0]
    for v in [*values[1:], -1]:
        if v != prev + 1:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = v
        prev = v
    return ",".join(out)
