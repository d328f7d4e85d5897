"""Server-initiated changes reach the Room: removal (Leave), duplicate identity, room and
participant metadata from the server API, server-sent data, admin mute."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from livekit import api

from aiolivekit import (
    AudioFrame,
    AudioSource,
    ConnectionState,
    DataPacketKind,
    DisconnectReason,
    LocalAudioTrack,
    Room,
)

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

TIMEOUT = 10.0
ROOM = "test-room"


class Recorder:
    def __init__(self, room: Room, *names: str) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        for name in names:
            room.on(name, self._make(name))

    def _make(self, name: str) -> Callable[..., None]:
        def handler(*args: Any) -> None:
            self.events.append((name, args))
        return handler

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [a for n, a in self.events if n == name]

    async def wait_for(self, pred: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async def loop() -> None:
            while not pred():
                await asyncio.sleep(0.02)
        await asyncio.wait_for(loop(), timeout)


@pytest.fixture
async def lkapi(any_server: Any) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(any_server.http_url, any_server.api_key, any_server.api_secret)
    yield client
    await client.aclose()


async def _join(server: Any, identity: str, **kw: Any) -> Room:
    room = Room()
    await asyncio.wait_for(room.connect(server.url, server.token(identity, **kw)), 30)
    return room


@pytest.mark.compat('server_api', client="aiolivekit")
async def test_removed_by_server(any_server: Any, lkapi: api.LiveKitAPI) -> None:
    alice = await _join(any_server, "alice")
    rec = Recorder(alice, "connection_state_changed", "disconnected")
    await lkapi.room.remove_participant(api.RoomParticipantIdentity(room=ROOM, identity="alice"))
    await rec.wait_for(lambda: len(rec.events) == 2)
    assert rec.events == [("connection_state_changed", (ConnectionState.CONN_DISCONNECTED,)),
                          ("disconnected", (DisconnectReason.PARTICIPANT_REMOVED,))]
    assert not alice.isconnected()
    assert alice.local_participant.disconnect_reason == DisconnectReason.PARTICIPANT_REMOVED
    await alice.disconnect()  # no-op
    assert len(rec.events) == 2


async def test_duplicate_identity_ends_first_session(any_server: Any) -> None:
    first = await _join(any_server, "dup")
    rec = Recorder(first, "disconnected")
    second = await _join(any_server, "dup")
    try:
        await rec.wait_for(lambda: len(rec.events) == 1)
        assert rec.events == [("disconnected", (DisconnectReason.DUPLICATE_IDENTITY,))]
        assert second.isconnected() and not first.isconnected()
    finally:
        await second.disconnect()


@pytest.mark.compat('server_api', client="aiolivekit")
async def test_metadata_from_server_api(any_server: Any, lkapi: api.LiveKitAPI) -> None:
    alice = await _join(any_server, "alice", metadata="a0", name="Alice")
    bob = await _join(any_server, "bob")
    try:
        rec_a = Recorder(alice, "room_metadata_changed", "participant_metadata_changed",
                         "participant_name_changed", "participant_attributes_changed")
        rec_b = Recorder(bob, "room_metadata_changed", "participant_metadata_changed")
        await lkapi.room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room=ROOM, metadata="room-meta-1"))
        await rec_a.wait_for(lambda: rec_a.of("room_metadata_changed") != [])
        await rec_b.wait_for(lambda: rec_b.of("room_metadata_changed") != [])
        assert rec_a.of("room_metadata_changed") == [("", "room-meta-1")]
        assert alice.metadata == "room-meta-1" and bob.metadata == "room-meta-1"

        await lkapi.room.update_participant(api.UpdateParticipantRequest(
            room=ROOM, identity="alice", metadata="a1", name="Alice2",
            attributes={"x": "1"}))
        await rec_a.wait_for(lambda: rec_a.of("participant_attributes_changed") != [])
        lp = alice.local_participant
        assert rec_a.of("participant_metadata_changed") == [(lp, "a0", "a1")]
        assert rec_a.of("participant_name_changed") == [(lp, "Alice", "Alice2")]
        assert rec_a.of("participant_attributes_changed") == [({"x": "1"}, lp)]
        assert (lp.metadata, lp.name, lp.attributes) == ("a1", "Alice2", {"x": "1"})
        await rec_b.wait_for(lambda: rec_b.of("participant_metadata_changed") != [])
        ra = bob.remote_participants["alice"]
        assert rec_b.of("participant_metadata_changed")[-1] == (ra, "a0", "a1")
        assert ra.name == "Alice2" and ra.attributes == {"x": "1"}
    finally:
        await alice.disconnect()
        await bob.disconnect()


async def test_server_sent_data_has_no_participant(any_server: Any,
                                                   lkapi: api.LiveKitAPI) -> None:
    alice = await _join(any_server, "alice")
    try:
        got: list[Any] = []
        alice.on("data_received", got.append)
        await lkapi.room.send_data(api.SendDataRequest(
            room=ROOM, data=b"from-server", kind=api.DataPacket.Kind.RELIABLE, topic="srv"))

        async def wait() -> None:
            while not got:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(wait(), TIMEOUT)
        (pkt,) = got
        assert (pkt.data, pkt.topic, pkt.participant) == (b"from-server", "srv", None)
        assert pkt.kind == DataPacketKind.KIND_RELIABLE
    finally:
        await alice.disconnect()


@pytest.mark.compat('server_api', client="aiolivekit")
async def test_admin_mute_mutes_local_track(any_server: Any, lkapi: api.LiveKitAPI) -> None:
    alice = await _join(any_server, "alice")
    source = AudioSource(48000, 1)

    async def feed() -> None:
        silence = AudioFrame(np.zeros(480, np.int16).tobytes(), 48000, 1, 480)
        while True:
            await source.capture_frame(silence)
    feeder = asyncio.ensure_future(feed())
    try:
        rec = Recorder(alice, "track_muted")
        track = LocalAudioTrack.create_audio_track("mic", source)
        pub = await alice.local_participant.publish_track(track)
        await asyncio.sleep(0.5)  # the server learns the track from the media
        await lkapi.room.mute_published_track(api.MuteRoomTrackRequest(
            room=ROOM, identity="alice", track_sid=pub.sid, muted=True))
        await rec.wait_for(lambda: len(rec.events) >= 1)
        assert rec.events[0] == ("track_muted", (alice.local_participant, pub))
        assert track.muted and pub.muted
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        await alice.disconnect()
        await source.aclose()


async def test_server_shutdown_disconnects() -> None:
    """Both servers end the session on shutdown; the Room reports it once, without hanging."""
    from aiolivekit.server import DevServer
    from aiolivekit.testing.servers import make_token

    server = DevServer(port=0)
    await server.start()
    room = Room()
    try:
        await room.connect(server.url, make_token(server.api_key, server.api_secret, "x"))
        rec = Recorder(room, "connection_state_changed", "disconnected")
        await asyncio.wait_for(server.aclose(), 15)
        await rec.wait_for(lambda: len(rec.events) == 2)
        assert rec.events[0] == ("connection_state_changed", (ConnectionState.CONN_DISCONNECTED,))
        (reason,) = rec.events[1][1]
        assert reason in (DisconnectReason.SERVER_SHUTDOWN, DisconnectReason.SIGNAL_CLOSE)
        assert not room.isconnected()
    finally:
        await room.disconnect()
        await server.aclose()


async def test_official_server_shutdown_disconnects() -> None:
    from aiolivekit.testing.servers import LiveKitServerProcess, find_livekit_server, make_token

    binary = find_livekit_server()
    if binary is None or os.environ.get("AIOLIVEKIT_NETNS") != "1":
        pytest.skip("needs livekit-server inside scripts/netns-run")
    proc = LiveKitServerProcess(binary)
    await proc.start()
    room = Room()
    # a lost server is retried (issue 13); a short policy keeps the test short
    from aiolivekit.engine.reconnect import RetryPolicy

    room._retry_policy = RetryPolicy(attempts=3, first_delay=0.1, max_delay=0.2)
    try:
        await room.connect(proc.url, make_token(proc.api_key, proc.api_secret, "x"))
        rec = Recorder(room, "connection_state_changed", "disconnected", "reconnecting",
                       "reconnected")
        await proc.stop()  # SIGTERM, then a second one: the server closes its rooms
        await rec.wait_for(lambda: "disconnected" in [n for n, _ in rec.events], timeout=20)
        # the server says why (LeaveRequest, action DISCONNECT): no reconnection attempt
        assert rec.events == [
            ("connection_state_changed", (ConnectionState.CONN_DISCONNECTED,)),
            ("disconnected", (DisconnectReason.SERVER_SHUTDOWN,))]
        assert not room.isconnected()
    finally:
        await room.disconnect()
        await proc.stop()
