"""Room basics against real servers (embedded + official): join, participants, info updates,
data packets, leave, connect errors and cancellation."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

import pytest

from aiolivekit import ConnectError, ConnectionState, DataPacketKind, DisconnectReason, Room
from aiolivekit.errors import PublishDataError, SignalError
from aiolivekit.testing.servers import make_token
from aiolivekit.types import RoomOptions, RtcConfiguration

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

TIMEOUT = 10.0


class Recorder:
    """Records (event, args) of a Room in order."""

    def __init__(self, room: Room, *names: str) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self._changed = asyncio.Event()
        for name in names:
            room.on(name, self._make(name))

    def _make(self, name: str) -> Callable[..., None]:
        def handler(*args: Any) -> None:
            self.events.append((name, args))
            self._changed.set()
        return handler

    def names(self) -> list[str]:
        return [n for n, _ in self.events]

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [a for n, a in self.events if n == name]

    async def wait_for(self, pred: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async def loop() -> None:
            while not pred():
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(loop(), timeout)


async def _join(server: Any, rooms: list[Room], identity: str, **kw: Any) -> Room:
    room = Room()
    rooms.append(room)
    options = kw.pop("options", None)
    await asyncio.wait_for(room.connect(server.url, server.token(identity, **kw), options), 30)
    return room


@pytest.mark.compat('connect', 'participants', client="aiolivekit")
async def test_two_participants_see_each_other(any_server: Any, rooms: list[Room]) -> None:
    alice = await _join(any_server, rooms, "alice", name="Alice", metadata="meta-a",
                        attributes={"role": "host"})
    rec_a = Recorder(alice, "participant_connected")
    assert alice.isconnected() and alice.connection_state == ConnectionState.CONN_CONNECTED
    assert (await alice.sid).startswith("RM_") and alice.name == "test-room"
    lp = alice.local_participant
    assert (lp.identity, lp.name, lp.metadata, lp.attributes) == ("alice", "Alice", "meta-a",
                                                                  {"role": "host"})
    assert lp.sid.startswith("PA_")

    bob = Room()
    rooms.append(bob)
    rec_b = Recorder(bob, "participant_connected", "connection_state_changed", "connected")
    await bob.connect(any_server.url, any_server.token("bob", name="Bob"))
    # alice was there before: present on return, without participant_connected
    assert list(bob.remote_participants) == ["alice"]
    ra = bob.remote_participants["alice"]
    assert (ra.sid, ra.identity, ra.name, ra.metadata, ra.attributes) == (
        lp.sid, "alice", "Alice", "meta-a", {"role": "host"})
    assert rec_b.of("participant_connected") == []
    assert rec_b.names() == ["connection_state_changed", "connected"]
    assert rec_b.of("connection_state_changed") == [(ConnectionState.CONN_CONNECTED,)]
    assert await bob.sid == await alice.sid

    await rec_a.wait_for(lambda: len(rec_a.of("participant_connected")) == 1)
    (p,) = rec_a.of("participant_connected")[0]
    assert p.identity == "bob" and p.name == "Bob" and alice.remote_participants["bob"] is p


@pytest.mark.compat('metadata', client="aiolivekit")
async def test_metadata_name_attribute_updates(any_server: Any, rooms: list[Room]) -> None:
    alice = await _join(any_server, rooms, "alice", metadata="m0", name="A0",
                        attributes={"k1": "v1", "k2": "v2"})
    bob = await _join(any_server, rooms, "bob")
    rec = Recorder(bob, "participant_metadata_changed", "participant_name_changed",
                   "participant_attributes_changed")
    lp = alice.local_participant
    await lp.set_metadata("m1")
    assert lp.metadata == "m1"
    await lp.set_name("A1")
    assert lp.name == "A1"
    await lp.set_attributes({"k1": "v1b", "k2": "", "k3": "v3"})
    assert lp.attributes == {"k1": "v1b", "k3": "v3"}
    ra = bob.remote_participants["alice"]
    await rec.wait_for(lambda: len(rec.events) >= 3)
    assert rec.events[0] == ("participant_metadata_changed", (ra, "m0", "m1"))
    assert rec.events[1] == ("participant_name_changed", (ra, "A0", "A1"))
    name, (changed, who) = rec.events[2]
    assert name == "participant_attributes_changed" and who is ra
    assert changed == {"k1": "v1b", "k2": "", "k3": "v3"}
    assert (ra.metadata, ra.name, ra.attributes) == ("m1", "A1", {"k1": "v1b", "k3": "v3"})


async def test_update_without_permission_raises(any_server: Any, rooms: list[Room]) -> None:
    alice = await _join(any_server, rooms, "alice", can_update_metadata=False, metadata="m0")
    with pytest.raises(SignalError):
        await alice.local_participant.set_metadata("nope")
    assert alice.local_participant.metadata == "m0"


@pytest.mark.compat('data', 'data_lossy', 'data_targeted', client="aiolivekit")
async def test_data_packets_reliable_lossy_topics_destinations(any_server: Any,
                                                             rooms: list[Room]) -> None:
    alice = await _join(any_server, rooms, "alice")
    bob = await _join(any_server, rooms, "bob")
    carol = await _join(any_server, rooms, "carol")
    got: dict[str, list[Any]] = {"bob": [], "carol": []}
    bob.on("data_received", lambda d: got["bob"].append(d))
    carol.on("data_received", lambda d: got["carol"].append(d))
    lp = alice.local_participant
    await lp.publish_data(b"r1", topic="chat")
    await lp.publish_data("r2 \u00e9")  # str -> UTF-8
    await lp.publish_data(b"to-bob", destination_identities=["bob"], topic="dm")
    for i in range(5):
        await lp.publish_data(b"lossy%d" % i, reliable=False, topic="l")
        await asyncio.sleep(0.01)
    await lp.publish_data(b"end")

    async def done() -> None:
        while not (any(d.data == b"end" for d in got["bob"])
                   and any(d.data == b"end" for d in got["carol"])):
            await asyncio.sleep(0.02)
    await asyncio.wait_for(done(), TIMEOUT)
    await asyncio.sleep(0.2)
    reliable_bob = [(d.data, d.topic) for d in got["bob"] if d.kind == DataPacketKind.KIND_RELIABLE]
    assert reliable_bob == [(b"r1", "chat"), ("r2 \u00e9".encode(), None), (b"to-bob", "dm"),
                            (b"end", None)]
    reliable_carol = [d.data for d in got["carol"] if d.kind == DataPacketKind.KIND_RELIABLE]
    assert reliable_carol == [b"r1", "r2 \u00e9".encode(), b"end"]  # not the DM
    lossy = [d for d in got["bob"] if d.kind == DataPacketKind.KIND_LOSSY]
    assert len(lossy) >= 4  # loopback: lossy normally arrives
    assert all(d.topic == "l" and d.data.startswith(b"lossy") for d in lossy)
    assert all(d.participant is bob.remote_participants["alice"] for d in got["bob"])

    # refused before sending
    with pytest.raises(PublishDataError):
        await lp.publish_data(b"x" * 16000, reliable=False)
    with pytest.raises(PublishDataError):
        await lp.publish_data(b"x" * 300_000)
    # the other way: once alice knows bob (the official server batches join updates),
    # his packets are attributed to him
    rec: list[Any] = []
    alice.on("data_received", lambda d: rec.append(d))

    async def known() -> None:
        while "bob" not in alice.remote_participants:
            await asyncio.sleep(0.02)
    await asyncio.wait_for(known(), TIMEOUT)
    await bob.local_participant.publish_data(b"back", topic="b")

    async def back() -> None:
        while not rec:
            await asyncio.sleep(0.02)
    await asyncio.wait_for(back(), TIMEOUT)
    assert [(d.data, d.topic) for d in rec] == [(b"back", "b")]
    assert rec[0].participant is alice.remote_participants["bob"]


async def test_participant_without_subscribe_permission(any_server: Any,
                                                        rooms: list[Room]) -> None:
    """can_subscribe=False: no subscriber PC offer; data comes over our publisher PC."""
    alice = await _join(any_server, rooms, "alice")
    rec = Recorder(alice, "participant_connected", "participant_active")
    mute = await _join(any_server, rooms, "listener", can_subscribe=False)
    assert mute.isconnected() and list(mute.remote_participants) == ["alice"]
    await rec.wait_for(lambda: "listener" in alice.remote_participants)
    got: list[Any] = []
    mute.on("data_received", got.append)
    await alice.local_participant.publish_data(b"to-listener", topic="x")
    await mute.local_participant.publish_data(b"from-listener")

    async def wait() -> None:
        while not got:
            await asyncio.sleep(0.02)
    await asyncio.wait_for(wait(), TIMEOUT)
    assert [(d.data, d.topic) for d in got] == [(b"to-listener", "x")]
    assert got[0].participant is mute.remote_participants["alice"]


async def test_participant_active_event(any_server: Any, rooms: list[Room]) -> None:
    alice = await _join(any_server, rooms, "alice")
    rec = Recorder(alice, "participant_connected", "participant_active")
    await _join(any_server, rooms, "bob")
    await rec.wait_for(lambda: "participant_active" in rec.names())
    assert rec.names() == ["participant_connected", "participant_active"]
    (p,) = rec.of("participant_active")[0]
    assert p is alice.remote_participants["bob"] and p.identity == "bob"


@pytest.mark.compat('participants', client="aiolivekit")
async def test_leave_events(any_server: Any, rooms: list[Room]) -> None:
    alice = await _join(any_server, rooms, "alice")
    rec_a = Recorder(alice, "participant_connected", "participant_disconnected")
    bob = await _join(any_server, rooms, "bob")
    await rec_a.wait_for(lambda: "bob" in alice.remote_participants)
    rec_b = Recorder(bob, "connection_state_changed", "disconnected")
    seen_in_dict: list[bool] = []
    alice.on("participant_disconnected",
             lambda p: seen_in_dict.append(p.identity in alice.remote_participants))
    await bob.disconnect()
    assert rec_b.events == [("connection_state_changed", (ConnectionState.CONN_DISCONNECTED,)),
                            ("disconnected", (DisconnectReason.CLIENT_INITIATED,))]
    assert not bob.isconnected()
    with pytest.raises(RuntimeError):
        await bob.sid
    await bob.disconnect()  # no-op
    assert len(rec_b.events) == 2
    await rec_a.wait_for(lambda: len(rec_a.events) == 2)
    assert rec_a.names() == ["participant_connected", "participant_disconnected"]
    (p,) = rec_a.of("participant_disconnected")[0]
    assert p.identity == "bob" and p.disconnect_reason == DisconnectReason.CLIENT_INITIATED
    assert seen_in_dict == [False] and "bob" not in alice.remote_participants


@pytest.mark.compat('connect_errors', client="aiolivekit")
async def test_bad_tokens_give_server_reason(any_server: Any) -> None:
    room = Room()
    with pytest.raises(ConnectError) as info:
        await room.connect(any_server.url, "not-a-jwt")
    assert info.value.status == 401 and info.value.reason == "unauthorized"
    assert "invalid authorization token" in info.value.message
    with pytest.raises(ConnectError) as info:
        await room.connect(any_server.url, make_token("otherkey", "othersecret-0123456789", "x"))
    assert info.value.status == 401 and "invalid API key" in info.value.message
    bad_sig = make_token(any_server.api_key, "wrong-secret-0123456789", "x")
    with pytest.raises(ConnectError) as info:
        await room.connect(any_server.url, bad_sig)
    assert info.value.status == 401 and "invalid" in info.value.message
    assert "signature" in info.value.message.lower()
    assert bad_sig not in info.value.message  # the server echoes it; we redact it
    with pytest.raises(ConnectError) as info:
        await room.connect(any_server.url, any_server.token("x", ttl=-300))
    assert info.value.status == 401 and "expired" in info.value.message
    assert room.connection_state == ConnectionState.CONN_DISCONNECTED
    with pytest.raises(Exception, match="before connecting"):
        _ = room.local_participant
    # the same Room still connects afterwards
    await room.connect(any_server.url, any_server.token("x"))
    assert room.isconnected()
    await room.disconnect()


async def test_connect_cancel_is_clean(any_server: Any) -> None:
    before = {t for t in asyncio.all_tasks() if not t.done()}
    for delay in (0.0, 0.01, 0.05, 0.1):
        room = Room()
        task = asyncio.ensure_future(room.connect(any_server.url, any_server.token("c")))
        await asyncio.sleep(delay)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:  # connected before the cancel landed
            await room.disconnect()
        assert room.connection_state == ConnectionState.CONN_DISCONNECTED
        assert not room.isconnected()
    await asyncio.sleep(0.3)
    leaked = {t for t in asyncio.all_tasks() if not t.done()} - before - {asyncio.current_task()}
    assert not {t for t in leaked if "lk-" in t.get_name()}, leaked
    gc.collect()
    # the server kept no ghost participant of ours that blocks a fresh join
    room = Room()
    await room.connect(any_server.url, any_server.token("c"))
    assert room.isconnected()
    await room.disconnect()


async def test_ice_failure_gives_ice_error(any_server: Any) -> None:
    # no local address to gather on: ICE cannot succeed, the signal step does
    room = Room()
    opts = RoomOptions(ice_timeout=3.0, rtc_config=RtcConfiguration(host_addresses=[]))
    with pytest.raises(ConnectError) as info:
        await asyncio.wait_for(room.connect(any_server.url, any_server.token("noice"), opts), 20)
    assert info.value.reason == "ice_timeout" and info.value.status is None
    assert "ICE" in info.value.message
    assert room.connection_state == ConnectionState.CONN_DISCONNECTED
    await room.connect(any_server.url, any_server.token("noice"))
    assert room.isconnected()
    await room.disconnect()
    with pytest.raises(RuntimeError):
        await room.get_rtc_stats()


async def test_signal_timeout_on_silent_server() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        room = Room()
        with pytest.raises(ConnectError) as info:
            await room.connect(f"ws://127.0.0.1:{port}", "t", RoomOptions(connect_timeout=0.5))
        assert info.value.reason == "signal_timeout" and info.value.status is None
        assert "timed out" in info.value.message
    finally:
        server.close()
