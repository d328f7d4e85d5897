"""The engine's lazy publisher logic without a network: one shared connect attempt, data
sent while it runs goes out in call order, a failed attempt fails the queued sends and a
later send retries; the state watcher ignores a publisher that never connected.

The peer connection and data channels are small in-memory stand-ins; the real thing is
covered through real servers in tests/integration/test_lazy_publisher.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit.protocol import models as models_pb

from aiolivekit.engine.engine import EngineClosed, FullReconnectNeeded, RtcEngine
from aiolivekit.errors import ConnectError, PublishDataError


class Channel:
    def __init__(self, label: str) -> None:
        self.label = label
        self.readyState = "connecting"
        self.bufferedAmount = 0
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        assert self.readyState == "open"
        self.sent.append(data)


class PC:
    connectionState = "new"


class Transport:
    def __init__(self, target: int) -> None:
        self.target = target
        self.pc = PC()
        self.closed = False

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    async def close(self) -> None:
        self.closed = True


def _engine() -> tuple[RtcEngine, list[Any], dict[str, Channel]]:
    events: list[Any] = []
    engine = RtcEngine(events.append)
    engine.publisher = Transport(0)  # type: ignore[assignment]
    engine.subscriber = Transport(1)  # type: ignore[assignment]
    chans = {"_reliable": Channel("_reliable"), "_lossy": Channel("_lossy")}
    engine.pub_channels = chans  # type: ignore[assignment]
    return engine, events, chans


def _bring_up(engine: RtcEngine, chans: dict[str, Channel]) -> None:
    assert engine.publisher is not None
    engine.publisher.pc.connectionState = "connected"  # type: ignore[misc]
    for ch in chans.values():
        ch.readyState = "open"


async def test_sends_before_publisher_is_up_keep_call_order() -> None:
    engine, _, chans = _engine()
    attempts = 0
    up = asyncio.Event()

    async def connect(timeout: float) -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.05)
        _bring_up(engine, chans)
        up.set()
    engine._connect_publisher = connect  # type: ignore[method-assign]
    msgs = [f"m{i}".encode() for i in range(20)]
    tasks = [asyncio.ensure_future(engine.send_data(m, reliable=True)) for m in msgs]
    await asyncio.sleep(0)
    await up.wait()
    # the channel is open now, but earlier sends are still queued: this one goes after them
    await engine.send_data(b"late", reliable=True)
    await asyncio.gather(*tasks)
    await engine.send_data(b"after", reliable=True)  # fast path
    assert chans["_reliable"].sent == [*msgs, b"late", b"after"]
    assert attempts == 1
    await asyncio.gather(*(engine.ensure_publisher_connected() for _ in range(3)))
    assert attempts == 1  # already up: no new attempt


async def test_failed_attempt_fails_queued_sends_then_retries() -> None:
    engine, _, chans = _engine()
    attempts = 0

    async def connect(timeout: float) -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.02)
        if attempts == 1:
            raise ConnectError("publisher peer connection did not connect", reason="ice_timeout")
        _bring_up(engine, chans)
    engine._connect_publisher = connect  # type: ignore[method-assign]
    results = await asyncio.gather(*(engine.send_data(b"x", reliable=True) for _ in range(5)),
                                   return_exceptions=True)
    assert attempts == 1
    assert all(isinstance(r, PublishDataError) and "did not connect" in str(r)
               for r in results), results
    assert chans["_reliable"].sent == []
    # a later send starts a new attempt, which succeeds
    await engine.send_data(b"retry", reliable=True)
    assert attempts == 2
    assert chans["_reliable"].sent == [b"retry"]


async def test_concurrent_ensure_shares_one_attempt_and_its_error() -> None:
    engine, _, _ = _engine()
    attempts = 0

    async def connect(timeout: float) -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.02)
        raise ConnectError("negotiation timed out", reason="signal_timeout")
    engine._connect_publisher = connect  # type: ignore[method-assign]
    results = await asyncio.gather(*(engine.ensure_publisher_connected() for _ in range(4)),
                                   return_exceptions=True)
    assert attempts == 1
    assert [type(r) for r in results] == [ConnectError] * 4


async def test_closing_fails_a_waiting_send_cleanly() -> None:
    engine, events, _ = _engine()

    async def connect(timeout: float) -> None:
        await asyncio.sleep(30)
    engine._connect_publisher = connect  # type: ignore[method-assign]
    task = asyncio.ensure_future(engine.send_data(b"x", reliable=True))
    await asyncio.sleep(0.02)
    await engine._fail(models_pb.DisconnectReason.SIGNAL_CLOSE, "signal connection closed")
    with pytest.raises(PublishDataError):
        await asyncio.wait_for(task, 2.0)
    assert [type(e) for e in events] == [EngineClosed]


def test_state_watcher_ignores_publisher_that_never_connected() -> None:
    engine, events, _ = _engine()
    pub = engine.publisher
    assert pub is not None
    watcher = engine._make_state_watcher(pub)
    engine._connected_once = True  # joined (subscriber primary)
    pub.pc.connectionState = "failed"  # type: ignore[misc]
    watcher()
    assert not engine._tasks and not engine.closed and events == []


async def test_state_watcher_reports_publisher_failure_after_connecting() -> None:
    engine, events, _ = _engine()
    pub = engine.publisher
    assert pub is not None
    watcher = engine._make_state_watcher(pub)
    engine._connected_once = True
    pub.pc.connectionState = "connected"  # type: ignore[misc]
    watcher()
    assert not engine.closed
    pub.pc.connectionState = "failed"  # type: ignore[misc]
    watcher()
    for _ in range(100):
        if events:
            break
        await asyncio.sleep(0.01)
    # the session cannot go on, but recovering is the Room's (a full reconnect)
    assert not engine.closed
    assert [(type(e), e.reason, e.error) for e in events] == [
        (FullReconnectNeeded, models_pb.DisconnectReason.CONNECTION_TIMEOUT,
         "peer connection failed")]
    watcher()  # reported once
    assert len(events) == 1
