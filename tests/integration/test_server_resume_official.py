"""The official ``livekit`` Python SDK resumes against our server (issue 13, server half).

alice joins through a :class:`~aiolivekit.testing.faults.TcpProxy` in front of the signal
port and publishes a 440 Hz tone; bob joins directly and listens. The proxy cuts alice's
signal (RST both ways): her SDK must emit ``reconnecting`` then ``reconnected`` (a resume:
the same participant sid, the same publication sid, no republish), bob must not see her
leave, and the tone must be heard at bob again (FFT). With the proxy refusing, a vanished
participant leaves after the departure timeout. Simulated scenarios (node failure, signal
reconnect, speaker) go through the official SDK's ``simulate_scenario``.

Runs only inside ``scripts/netns-run`` (libwebrtc ignores the loopback interface).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from livekit.protocol import models as models_pb
from test_server_official import DRIVER, OFFICIAL_PYTHON, pytestmark  # noqa: F401

from aiolivekit.server import DevServer
from aiolivekit.testing.faults import TcpProxy

TONE = 440.0
BOB_TONE = 660.0
RESUME_BOUND = 10.0       # cut -> reconnected (livekit-server: about 3 s, see the issue)
TONE_BACK_BOUND = 3.0     # reconnected -> tone heard again at bob


class Driver:
    """One official SDK participant in a subprocess, its events read as they come."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.stderr = b""

    async def start(self, url: str, token: str, steps: list[dict[str, Any]]) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            str(OFFICIAL_PYTHON), str(DRIVER), url, token, json.dumps(steps),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            if line.startswith(b"{"):
                self.events.append(json.loads(line))
                self._changed.set()
        self.events.append({"event": "eof"})
        self._changed.set()

    async def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first event matching ``pred`` (waiting up to ``timeout`` s for it)."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if pred(e):
                    return e
            if any(e.get("event") in ("eof", "error") for e in self.events):
                raise AssertionError(f"{self.name} ended: {self.events[-4:]}\n"
                                     f"{self.stderr.decode()[-2000:]}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no matching event in {timeout}s; "
                                     f"last: {self.events[-6:]}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    async def finish(self, timeout: float = 60.0) -> None:
        if self._proc is None:
            return
        try:
            await asyncio.wait_for(self._proc.wait(), timeout)
        except asyncio.TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        if self._proc.stderr is not None:
            with contextlib.suppress(Exception):
                self.stderr = await asyncio.wait_for(self._proc.stderr.read(), 5)


@contextlib.asynccontextmanager
async def drivers(*names: str) -> AsyncIterator[list[Driver]]:
    ds = [Driver(n) for n in names]
    try:
        yield ds
    finally:
        for d in ds:
            if d._proc is not None and d._proc.returncode is None:
                d._proc.kill()
            await d.finish(10)


def _step(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "step" and e.get("op") == name


def _event(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == name


def _tone(e: dict[str, Any]) -> bool:
    return abs(e.get("freq", 0) - TONE) < 5 and e.get("rms", 0) > 1000


async def run_signal_cut(url: str, token: Callable[[str], str],
                         server_sessions: Callable[[], dict[str, str]] | None = None,
                         ) -> dict[str, float]:
    """Cut alice's signal once her tone is heard at bob; returns the measured times."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    async with TcpProxy((host, int(port))) as proxy, drivers("alice", "bob") as (alice, bob):
        await alice.start(proxy.url(), token("alice"), [
            {"op": "wait_peer", "identity": "bob", "timeout": 20},
            {"op": "start_sine", "freq": TONE},
            {"op": "report_publications"},
            {"op": "wait_event", "event": "reconnected", "timeout": 40},
            {"op": "send", "payload": "after-resume", "topic": "ctl"},
            {"op": "report_publications"},
            # bob's tone reaches alice on her ICE-restarted subscriber PC, also once
            # libwebrtc has pruned the old candidate pairs
            {"op": "sleep", "seconds": 4},
            {"op": "measure_audio", "seconds": 1.0, "timeout": 15},
            {"op": "send", "payload": "heard", "topic": "ctl"},
            {"op": "wait_data", "payload": "done", "timeout": 40},
            {"op": "leave"},
        ])
        await bob.start(url, token("bob"), [
            {"op": "wait_peer", "identity": "alice", "timeout": 20},
            {"op": "start_sine", "freq": BOB_TONE},
            {"op": "monitor_audio", "seconds": 16, "window": 0.2, "timeout": 20},
            {"op": "wait_data", "payload": "after-resume", "timeout": 20},
            {"op": "wait_data", "payload": "heard", "timeout": 30},
            {"op": "send", "payload": "done", "topic": "ctl"},
            {"op": "sleep", "seconds": 1},
            {"op": "leave"},
        ])
        before = await alice.wait(_step("report_publications"), 30)
        await bob.wait(_tone, 20)
        sid_before = (await alice.wait(_event("connected"), 1))["sid"]
        if server_sessions is not None:
            assert list(server_sessions().values()).count("alice") == 1
        t_cut = time.time()
        await proxy.cut()
        reconnecting = await alice.wait(_event("reconnecting"), 20)
        reconnected = await alice.wait(_event("reconnected"), RESUME_BOUND + 20)
        after_resume = server_sessions() if server_sessions is not None else {}
        tone_back = await bob.wait(lambda e: _tone(e) and e["t"] > reconnected["t"], 20)
        await bob.wait(_step("wait_data"), 30)
        await alice.wait(_step("leave"), 30)
        await bob.wait(_step("leave"), 30)
    # a resume: no full reconnect, the same publication, bob saw no leave
    after = [e for e in alice.named("step") if e.get("op") == "report_publications"][-1]
    assert before["sids"] and after["sids"] == before["sids"], (before, after)
    assert not alice.named("local_track_republished")
    assert reconnecting["t"] <= reconnected["t"]
    heard = [e for e in alice.named("step") if e.get("op") == "measure_audio"][-1]
    assert heard["ok"] and abs(heard["freq"] - BOB_TONE) < 5 and heard["rms"] > 1000, heard
    assert len(alice.named("reconnected")) == 1
    # until alice leaves at the end (after bob's "done"), bob sees no leave or unpublish
    end = next(e for e in bob.events if _step("wait_data")(e))
    before_end = bob.events[:bob.events.index(end)]
    assert not [e for e in before_end if e.get("event") == "participant_disconnected"
                and e.get("identity") == "alice"]
    assert not [e for e in before_end if e.get("event") == "track_unpublished"]
    assert [e for e in bob.events if e.get("event") == "data"
            and e.get("payload") == "after-resume" and e.get("from") == "alice"]
    if server_sessions is not None:  # the same participant (sid) on the server
        assert after_resume.get(sid_before) == "alice", after_resume
    windows = [e for e in bob.named("audio_window") if e["t"] > t_cut]
    gaps = [e["t"] for e in windows if not _tone(e)]
    longest = run = 0
    for e in windows:
        run = 0 if _tone(e) else run + 1
        longest = max(longest, run)
    if gaps:
        print("silent windows (s after reconnected):",
              [round(t - reconnected["t"], 2) for t in gaps])
    return {
        "longest_gap_s": longest * 0.2,
        "cut_to_reconnecting": reconnecting["t"] - t_cut,
        "cut_to_reconnected": reconnected["t"] - t_cut,
        "reconnected_to_tone": max(0.0, tone_back["t"] - reconnected["t"]),
        "silent_windows_after_cut": float(len(gaps)),
    }


async def test_official_sdk_resumes_after_a_signal_cut() -> None:
    async with DevServer(port=0) as server:
        def sessions() -> dict[str, str]:
            return {sid: s.identity for sid, s in server.app.hub.sessions.items()}

        times = await run_signal_cut(server.url, server.token, sessions)
        print("embedded server:", {k: round(v, 3) for k, v in times.items()})
        assert times["cut_to_reconnected"] < RESUME_BOUND, times
        assert times["reconnected_to_tone"] < TONE_BACK_BOUND, times
        await asyncio.sleep(0.5)
        assert server.app.rooms.get("test-room").participants == {}


async def test_vanished_participant_leaves_after_the_departure_timeout() -> None:
    """alice vanishes (her process is frozen with SIGSTOP, then her signal is cut): she
    stays in the room (bob sees no leave, her media transport is not closed) until the
    departure timeout, then bob sees her leave."""
    departure = 3.0
    async with DevServer(port=0, departure_timeout=departure) as server:
        async with TcpProxy(("127.0.0.1", server.port)) as proxy, \
                drivers("alice", "bob") as (alice, bob):
            await alice.start(proxy.url(), server.token("alice"), [
                {"op": "wait_peer", "identity": "bob", "timeout": 20},
                {"op": "start_sine", "freq": TONE},
                {"op": "sleep", "seconds": 30},
            ])
            await bob.start(server.url, server.token("bob"), [
                {"op": "wait_peer", "identity": "alice", "timeout": 20},
                {"op": "wait_disconnect", "identity": "alice", "timeout": 40},
                {"op": "leave"},
            ])
            await alice.wait(_event("published"), 30)
            await bob.wait(_event("track_subscribed"), 20)
            assert alice._proc is not None
            os.kill(alice._proc.pid, signal.SIGSTOP)
            t_cut = time.time()
            await proxy.cut()
            # still there while the timeout runs
            await asyncio.sleep(departure - 1.0)
            assert not bob.named("participant_disconnected")
            room = server.app.rooms.get("test-room")
            assert [p.identity for p in room.participants.values()] == ["alice", "bob"] or \
                sorted(p.identity for p in room.participants.values()) == ["alice", "bob"]
            gone = await bob.wait(_event("participant_disconnected"), departure + 10)
            t_gone = time.time()
            assert gone["identity"] == "alice"
            print(f"departure: bob saw alice leave {t_gone - t_cut:.2f}s after the cut "
                  f"(departure timeout {departure}s)")
            assert departure - 0.5 <= t_gone - t_cut <= departure + 5.0
            assert sorted(p.identity for p in room.participants.values()) == ["bob"]
            await bob.wait(_step("leave"), 20)
            alice._proc.kill()


@pytest.mark.parametrize("kind,full", [("SIMULATE_SIGNAL_RECONNECT", False),
                                       # the signal closes again on resume: the SDK
                                       # rejoins (as on livekit-server, checked there)
                                       ("SIMULATE_DISCONNECT_SIGNAL_ON_RESUME", True),
                                       ("SIMULATE_NODE_FAILURE", True)])
async def test_official_simulate_scenario(kind: str, full: bool) -> None:
    """Signal reconnect: a resume (same sid). Node failure: the server drops the
    participant without a Leave; the resume is refused (Leave RECONNECT) and the SDK
    rejoins with a new sid and republishes (bob sees alice leave and come back)."""
    async with DevServer(port=0) as server, drivers("alice", "bob") as (alice, bob):
        await alice.start(server.url, server.token("alice"), [
            {"op": "wait_peer", "identity": "bob", "timeout": 20},
            {"op": "start_sine", "freq": TONE},
            {"op": "report_publications"},
            {"op": "wait_data", "payload": "go", "timeout": 20},
            {"op": "simulate", "kind": kind},
            {"op": "wait_event", "event": "reconnected", "timeout": 30},
            {"op": "report_publications"},
            {"op": "wait_data", "payload": "done", "timeout": 30},
            {"op": "leave"},
        ])
        await bob.start(server.url, server.token("bob"), [
            {"op": "wait_peer", "identity": "alice", "timeout": 20},
            {"op": "wait_event", "event": "track_subscribed", "timeout": 20},
            {"op": "send", "payload": "go", "topic": "ctl"},
            {"op": "wait_event", "event": "track_subscribed", "count": 2 if full else 1,
             "timeout": 30},
            {"op": "measure_audio", "seconds": 1.0, "timeout": 20},
            {"op": "send", "payload": "done", "topic": "ctl"},
            {"op": "sleep", "seconds": 1},
            {"op": "leave"},
        ])
        sid_before = (await alice.wait(_event("connected"), 30))["sid"]
        await alice.wait(_event("reconnected"), 40)
        audio = await bob.wait(_step("measure_audio"), 40)
        await alice.wait(_step("leave"), 30)
        await bob.wait(_step("leave"), 30)
    assert abs(audio["freq"] - TONE) < 5, audio
    assert len(alice.named("reconnected")) == 1
    left = [e for e in bob.named("participant_disconnected") if e["identity"] == "alice"]
    pubs = [e for e in alice.events if e.get("op") == "report_publications"]
    if full:
        assert left, bob.events[-10:]
        assert alice.named("local_track_republished")
    else:
        assert not left
        assert pubs[0]["sids"] == pubs[-1]["sids"]
        assert not alice.named("local_track_republished")
    assert sid_before


async def test_official_simulate_speaker_update() -> None:
    """SIMULATE_SPEAKER: livekit-server makes the participant an active speaker (level
    0.9) for 3 s; both clients see it start and stop."""
    async with DevServer(port=0) as server, drivers("alice", "bob") as (alice, bob):
        await alice.start(server.url, server.token("alice"), [
            {"op": "wait_peer", "identity": "bob", "timeout": 20},
            {"op": "simulate", "kind": "SIMULATE_SPEAKER"},
            {"op": "wait_data", "payload": "done", "timeout": 20},
            {"op": "leave"},
        ])
        await bob.start(server.url, server.token("bob"), [
            {"op": "wait_peer", "identity": "alice", "timeout": 20},
            {"op": "wait_event", "event": "active_speakers_changed", "count": 2,
             "timeout": 15},
            {"op": "send", "payload": "done", "topic": "ctl"},
            {"op": "leave"},
        ])
        await alice.wait(_step("leave"), 40)
        await bob.wait(_step("leave"), 40)
    changes = bob.named("active_speakers_changed")
    assert changes[0]["args"] == [["alice"]], changes
    assert changes[1]["args"] == [[]], changes
    assert 2.0 < changes[1]["t"] - changes[0]["t"] < 5.0, changes


async def test_official_speakers_and_connection_quality_from_media() -> None:
    """Speaker updates from the RFC 6464 audio level of alice's tone (libwebrtc sets it
    from the real signal): bob sees alice speak, then stop once she mutes; both get
    connection-quality updates (EXCELLENT on loopback)."""
    async with DevServer(port=0) as server, drivers("alice", "bob") as (alice, bob):
        await alice.start(server.url, server.token("alice"), [
            {"op": "wait_peer", "identity": "bob", "timeout": 20},
            {"op": "start_sine", "freq": TONE},
            {"op": "wait_data", "payload": "speaking", "timeout": 20},
            {"op": "mute", "muted": True},
            {"op": "wait_data", "payload": "done", "timeout": 20},
            {"op": "leave"},
        ])
        await bob.start(server.url, server.token("bob"), [
            {"op": "wait_peer", "identity": "alice", "timeout": 20},
            {"op": "wait_event", "event": "active_speakers_changed", "timeout": 15},
            {"op": "send", "payload": "speaking", "topic": "ctl"},
            {"op": "wait_event", "event": "active_speakers_changed", "count": 2,
             "timeout": 15},
            {"op": "wait_event", "event": "connection_quality_changed", "timeout": 15},
            {"op": "send", "payload": "done", "topic": "ctl"},
            {"op": "leave"},
        ])
        await alice.wait(_step("leave"), 40)
        await bob.wait(_step("leave"), 40)
    changes = bob.named("active_speakers_changed")
    assert changes[0]["args"] == [["alice"]], changes
    assert changes[1]["args"] == [[]], changes
    quality = bob.named("connection_quality_changed")
    # (participant, quality): bob hears about himself and alice, both EXCELLENT (2)
    assert sorted(q["args"][0] for q in quality) == ["alice", "bob"], quality
    assert {q["args"][1] for q in quality} == {str(int(models_pb.ConnectionQuality.EXCELLENT))}


@pytest.mark.livekit_server
async def test_signal_cut_side_by_side_with_livekit_server() -> None:
    """The same signal cut against livekit-server and our server in one run: the
    official SDK's time from the cut to ``reconnected`` on ours is within 1 s of
    livekit-server's (both are dominated by the SDK's own reconnect timing)."""
    import tempfile

    from conftest import _skip_reason_livekit_server

    from aiolivekit.testing.servers import LiveKitServerProcess, find_livekit_server

    reason = _skip_reason_livekit_server()
    if reason:
        pytest.skip(reason)
    binary = find_livekit_server()
    assert binary is not None
    log = tempfile.NamedTemporaryFile(prefix="livekit-server-", suffix=".log", delete=False)
    log.close()
    async with LiveKitServerProcess(binary, log_path=log.name) as proc:
        info = proc.info()
        theirs = await run_signal_cut(info.url, lambda ident: info.token(ident))
    async with DevServer(port=0) as server:
        ours = await run_signal_cut(server.url, server.token)
    print("livekit-server:", {k: round(v, 3) for k, v in theirs.items()})
    print("embedded server:", {k: round(v, 3) for k, v in ours.items()})
    assert ours["cut_to_reconnected"] <= theirs["cut_to_reconnected"] + 1.0, (ours, theirs)
    assert ours["silent_windows_after_cut"] <= theirs["silent_windows_after_cut"] + 2, \
        (ours, theirs)


async def _restart_run(url: str, token: Callable[[str], str],
                       control: Any) -> dict[str, float]:
    """Crash (SIGKILL) and restart the server process under two official SDK participants:
    the resume finds no session (a new process), both rejoin (full reconnect), alice
    republishes her tone and bob hears it again."""
    async with drivers("alice", "bob") as (alice, bob):
        await alice.start(url, token("alice"), [
            {"op": "wait_peer", "identity": "bob", "timeout": 20},
            {"op": "start_sine", "freq": TONE},
            {"op": "wait_event", "event": "reconnected", "timeout": 60},
            {"op": "wait_data", "payload": "done", "timeout": 60},
            {"op": "leave"},
        ])
        await bob.start(url, token("bob"), [
            {"op": "wait_peer", "identity": "alice", "timeout": 20},
            {"op": "wait_event", "event": "track_subscribed", "timeout": 20},
            {"op": "wait_event", "event": "track_subscribed", "count": 2, "timeout": 60},
            {"op": "measure_audio", "seconds": 0.5, "skip": 0.1, "timeout": 20},
            {"op": "send", "payload": "done", "topic": "ctl"},
            {"op": "sleep", "seconds": 1},
            {"op": "leave"},
        ])
        await bob.wait(lambda e: e.get("event") == "track_subscribed", 30)
        await asyncio.sleep(1.0)
        t_restart = time.time()
        assert control.pid is not None
        os.kill(control.pid, signal.SIGKILL)   # a crash: no Leave reaches the clients
        await control.restart(down_for=1.0)
        reconnected = await alice.wait(_event("reconnected"), 60)
        audio = await bob.wait(_step("measure_audio"), 60)
        t_heard = time.time()
        await alice.wait(_step("leave"), 30)
        await bob.wait(_step("leave"), 30)
    assert audio["ok"] and abs(audio["freq"] - TONE) < 5, audio
    assert alice.named("local_track_republished")
    assert len(alice.named("reconnected")) == 1 and len(bob.named("reconnected")) == 1
    return {"restart_to_reconnected": reconnected["t"] - t_restart,
            "restart_to_tone_measured": t_heard - t_restart}


async def test_official_sdk_rejoins_after_a_server_crash() -> None:
    """``aiolivekit serve`` (a subprocess) crashes and restarts: the official SDKs' resume
    is refused (Leave{STATE_MISMATCH, RECONNECT}: the new process has no session) and they
    rejoin; the same crash of livekit-server in the same run, when it is available."""
    import socket

    from conftest import _skip_reason_livekit_server

    from aiolivekit.server.auth import make_token
    from aiolivekit.testing.faults import ProcessControl
    from aiolivekit.testing.servers import LiveKitServerProcess, find_livekit_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def token(identity: str) -> str:
        return make_token("devkey", "secret", identity, "test-room")

    async with ProcessControl.aiolivekit_serve(port, start_timeout=30) as control:
        ours = await _restart_run(f"ws://127.0.0.1:{port}", token, control)
    print("aiolivekit serve crash:", {k: round(v, 3) for k, v in ours.items()})
    assert ours["restart_to_reconnected"] < 20, ours
    binary = find_livekit_server()
    if _skip_reason_livekit_server() is None and binary is not None:
        lk = LiveKitServerProcess(binary)
        async with ProcessControl.livekit_server(lk, start_timeout=30) as control:
            theirs = await _restart_run(lk.url, lambda i: lk.info().token(i), control)
        print("livekit-server crash:", {k: round(v, 3) for k, v in theirs.items()})


async def test_dead_media_transport_asks_for_a_full_reconnect(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's ICE consent for alice expires (its checks' answers are dropped, as
    on a dead path): its aioice agent closes, which no ICE restart can revive, so after
    the cleanup delay the server sends Leave{CONNECTION_TIMEOUT, RECONNECT} and the
    official SDK rejoins as a new participant (bob sees the old one leave)."""
    from aiolivekit.webrtc import consent

    monkeypatch.setattr(consent, "CONSENT_INTERVAL", 0.5)
    monkeypatch.setattr(consent, "CONSENT_EXPIRY", 2.0)
    async with DevServer(port=0) as server, drivers("alice", "bob") as (alice, bob):
        await alice.start(server.url, server.token("alice"), [
            {"op": "wait_peer", "identity": "bob", "timeout": 20},
            {"op": "wait_data", "payload": "go", "timeout": 20},
            {"op": "wait_event", "event": "reconnected", "timeout": 40},
            {"op": "wait_data", "payload": "done", "timeout": 30},
            {"op": "leave"},
        ])
        await bob.start(server.url, server.token("bob"), [
            {"op": "wait_peer", "identity": "alice", "timeout": 20},
            {"op": "send", "payload": "go", "topic": "ctl"},
            {"op": "wait_disconnect", "identity": "alice", "timeout": 40},
            {"op": "wait_peer", "identity": "alice", "timeout": 20},
            {"op": "send", "payload": "done", "topic": "ctl"},
            {"op": "leave"},
        ])
        first = (await alice.wait(_event("connected"), 30))["sid"]
        await alice.wait(_step("wait_data"), 30)
        monkeypatch.setattr(consent.ConsentKeeper, "response", lambda self, data: False)
        t0 = time.time()
        await alice.wait(_event("reconnected"), 40)
        elapsed = time.time() - t0
        monkeypatch.undo()  # the new session's consent works again
        await bob.wait(_step("leave"), 40)
        await alice.wait(_step("leave"), 40)
    print(f"dead transport: alice reconnected {elapsed:.2f}s after the consent answers stopped")
    assert all(e["ok"] for e in bob.named("step") + alice.named("step")), bob.events[-8:]
    rejoined = [e for e in bob.events if e.get("event") == "participant_connected"]
    assert rejoined and rejoined[-1]["sid"] != first, rejoined
    assert first and elapsed > 2.0
