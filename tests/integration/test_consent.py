"""RFC 7675 consent checks of the client's ICE connection, through real servers.

The client takes the checks over from aioice (``engine/consent.py``): they are sent
(early, with the server's keepalive answers, or on their own timer), the server's
responses are verified and credited, and when responses stop, consent expires and
the connection ends as it would with aioice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from aiolivekit import Room
from aiolivekit._compat.aiortc import ice_connections as _ice_connections
from aiolivekit.webrtc import consent, stun_keepalive

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def _keeper(room: Room) -> Any:
    engine = room._engine
    assert engine is not None and engine.subscriber is not None
    conns = _ice_connections(engine.subscriber.pc)
    assert len(conns) == 1
    return conns[0], consent.keeper_of(conns[0])


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _join_with_keeper(room: Room, server: Any, identity: str) -> tuple[Any, Any]:
    await asyncio.wait_for(room.connect(server.url, server.token(identity)), 30)
    conn, keeper = _keeper(room)
    assert keeper is not None  # taken over from aioice when the PC connected
    return conn, keeper


async def test_consent_checks_answered_and_credited(
    any_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consent, "CONSENT_INTERVAL", 1.0)
    monkeypatch.setattr(consent, "CONSENT_EARLY", 0.4)
    room = Room()
    try:
        conn, keeper = await _join_with_keeper(room, any_server, "consent")
        assert conn._query_consent_task is None  # aioice's own task was stopped
        await _until(lambda: keeper.schedule.ok_count >= 4, 15, "four answered checks")
        schedule = keeper.schedule
        assert schedule.sent_count - schedule.ok_count <= 1  # at most one outstanding
        assert not schedule.expired(asyncio.get_running_loop().time())
        assert room._engine is not None and room._engine.subscriber is not None
        assert room._engine.subscriber.pc.connectionState == "connected"
        assert room.isconnected()
    finally:
        await room.disconnect()


async def test_consent_expiry_ends_the_session(
    any_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consent, "CONSENT_INTERVAL", 0.5)
    monkeypatch.setattr(consent, "CONSENT_EXPIRY", 2.5)
    room = Room()
    reconnecting = asyncio.Event()
    reconnected = asyncio.Event()
    events: list[str] = []
    for name in ("reconnecting", "reconnected", "disconnected"):
        room.on(name, lambda *_, n=name: events.append(n))
    room.on("reconnecting", lambda *_: reconnecting.set())
    room.on("reconnected", lambda *_: reconnected.set())
    try:
        conn, keeper = await _join_with_keeper(room, any_server, "expiry")
        old_sid = room.local_participant.sid
        # from now on the server's answers are lost (as on a dead path)
        original = consent.ConsentKeeper.response
        monkeypatch.setattr(consent.ConsentKeeper, "response", lambda self, data: False)
        started = time.monotonic()
        # the dead PC ends this session; the room recovers with a full reconnect (issue 13)
        await asyncio.wait_for(reconnecting.wait(), 20)
        elapsed = time.monotonic() - started
        assert keeper.stopped and conn._closing
        assert elapsed >= 1.0, elapsed  # not before consent could have expired
        monkeypatch.setattr(consent.ConsentKeeper, "response", original)  # path healed
        await asyncio.wait_for(reconnected.wait(), 20)
        assert events == ["reconnecting", "reconnected"]
        assert room.isconnected() and room.local_participant.sid != old_sid
    finally:
        await room.disconnect()


async def test_embedded_server_keeps_consent_and_answers_checks_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The embedded server does what the client does: its consent checks of each
    participant are taken over from aioice, and the participant's checks on the
    nominated pair are answered by the keepalive fast path."""
    from aiolivekit.server import DevServer

    monkeypatch.setattr(consent, "CONSENT_INTERVAL", 1.0)
    monkeypatch.setattr(consent, "CONSENT_EARLY", 0.4)
    answered: list[Any] = []
    original = consent.keepalive_answered

    def counting(conn: Any) -> None:
        answered.append(conn)
        original(conn)

    monkeypatch.setattr(consent, "keepalive_answered", counting)
    async with DevServer(port=0) as server:
        room = Room()
        try:
            await asyncio.wait_for(room.connect(server.url, server.token("watched")), 30)
            session = next(iter(server.app.hub.sessions.values()))
            conns = _ice_connections(session._sub)
            assert len(conns) == 1
            conn = conns[0]
            await _until(lambda: consent.keeper_of(conn) is not None, 5, "the server's keeper")
            keeper = consent.keeper_of(conn)
            assert conn._query_consent_task is None  # aioice's own task was stopped
            assert conn._protocols and all(stun_keepalive.fast_path_installed(p) for p in conn._protocols)
            # the server's checks are answered by the client, the client's by the server
            await _until(lambda: keeper.schedule.ok_count >= 3, 15, "three answered checks")
            await _until(lambda: conn in answered, 10, "a client check answered fast")
            assert not keeper.schedule.expired(asyncio.get_running_loop().time())
            assert room.isconnected()
        finally:
            await room.disconnect()
