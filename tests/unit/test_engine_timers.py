"""The engine's timer loop (asyncio shell around SignalSession's timers): pings go out at
the ping interval, a silent server is detected as a ping timeout, and a deadline that moves
earlier wakes the loop. Runs the real loop against an in-memory signal transport."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from livekit.protocol import models as models_pb, rtc as rtc_pb

from aiolivekit.engine.engine import EngineClosed, RtcEngine, SignalLost


class MemoryTransport:
    """Stands in for the WebSocket: records what the engine sends, replays responses."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, rtc_pb.SignalRequest]] = []
        self.incoming: asyncio.Queue[rtc_pb.SignalResponse | None] = asyncio.Queue()
        self.closed = False
        self.aborted = False

    async def send(self, req: rtc_pb.SignalRequest) -> None:
        self.sent.append((time.monotonic(), req))

    async def recv(self) -> rtc_pb.SignalResponse | None:
        return await self.incoming.get()

    async def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True
        self.aborted = True

    def pings(self) -> list[float]:
        return [t for t, r in self.sent if r.WhichOneof("message") == "ping_req"]


def _join(ping_interval: int, ping_timeout: int) -> rtc_pb.SignalResponse:
    return rtc_pb.SignalResponse(join=rtc_pb.JoinResponse(
        room=models_pb.Room(name="r", sid="RM_x"),
        participant=models_pb.ParticipantInfo(sid="PA_me", identity="me"),
        ping_interval=ping_interval, ping_timeout=ping_timeout))


def _pong() -> rtc_pb.SignalResponse:
    return rtc_pb.SignalResponse(pong_resp=rtc_pb.Pong(
        last_ping_timestamp=int(time.time() * 1000), timestamp=int(time.time() * 1000)))


def _engine(join: rtc_pb.SignalResponse | None) -> tuple[RtcEngine, MemoryTransport, list[Any]]:
    events: list[Any] = []
    engine = RtcEngine(events.append)
    ws = MemoryTransport()
    engine._ws = ws  # type: ignore[assignment]
    if join is not None:
        engine.session.receive(join, time.time())
    engine._recv_task = engine._spawn(engine._recv_loop(ws), "recv")  # type: ignore[arg-type]
    engine._timer_task = engine._spawn(engine._timer_loop(), "timer")
    return engine, ws, events


async def test_pings_at_interval_while_server_answers() -> None:
    engine, ws, events = _engine(_join(ping_interval=1, ping_timeout=2))
    start = time.monotonic()
    try:
        # the server keeps answering: no timeout, one ping per second
        while time.monotonic() - start < 3.4:
            await asyncio.sleep(0.25)
            ws.incoming.put_nowait(_pong())
        pings = ws.pings()
        assert len(pings) == 4, pings  # t = 0, 1, 2, 3
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert all(0.9 <= g <= 1.2 for g in gaps), gaps
        assert not engine.closed
        assert not [e for e in events if isinstance(e, EngineClosed)]
    finally:
        await engine.close()


async def test_ping_timeout_detected_when_server_silent() -> None:
    engine, ws, events = _engine(_join(ping_interval=1, ping_timeout=2))
    start = time.monotonic()
    try:
        for _ in range(40):
            if any(isinstance(e, SignalLost) for e in events):
                break
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - start
        # the signal is dropped and reported for a resume; the session itself lives on
        lost = [e for e in events if isinstance(e, SignalLost)]
        assert len(lost) == 1 and lost[0].error.startswith("ping timeout"), lost
        assert lost[0].reason == models_pb.ReconnectReason.RR_SIGNAL_DISCONNECTED
        assert 1.9 <= elapsed <= 2.6, elapsed
        assert len(ws.pings()) in (2, 3)  # t = 0, 1 (and maybe 2, same instant as timeout)
        assert ws.aborted and not engine.closed
        assert not any(isinstance(e, EngineClosed) for e in events)
        pings = len(ws.pings())
        await asyncio.sleep(1.2)
        assert len(ws.pings()) == pings  # no pings into a dead connection
        assert len([e for e in events if isinstance(e, SignalLost)]) == 1
    finally:
        await engine.close()


async def test_earlier_deadline_wakes_the_sleeping_loop() -> None:
    engine, ws, _events = _engine(None)  # no join yet: nothing due, the loop sleeps long
    try:
        await asyncio.sleep(0.2)
        assert ws.pings() == []
        assert engine._wake_fut is not None and not engine._wake_fut.done()
        t0 = time.monotonic()
        engine.session.receive(_join(ping_interval=5, ping_timeout=0), time.time())
        engine._rearm()  # deadline moved from "none" to now
        for _ in range(50):
            if ws.pings():
                break
            await asyncio.sleep(0.01)
        assert ws.pings() and ws.pings()[0] - t0 < 0.3
        # a later deadline (next ping in 5 s) does not wake the loop again
        fut = engine._wake_fut
        assert fut is not None
        engine._rearm()
        assert not fut.done()
        assert len(ws.pings()) == 1
    finally:
        await engine.close()
