"""Issue 14: what a participant with a valid token must not be able to do, one test per row
of the issue's table, on both servers where the behaviour is the server's.

Where livekit-server (v1.13.5) behaves differently, the test runs on the embedded server
only and says what livekit-server does (docs/hardening.md has the table).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from livekit import api
from livekit.protocol import models as models_pb, rtc as rtc_pb

from aiolivekit import (
    AudioSource,
    ConnectError,
    LocalAudioTrack,
    ParticipantTrackPermission,
    Room,
    SignalError,
)
from aiolivekit.server import limits
from aiolivekit.testing.rawsignal import RawSignal

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

TIMEOUT = 10.0


async def _until(pred: Callable[[], bool], timeout: float = TIMEOUT, what: str = "") -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(loop(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what or pred}") from None


def _tap_signal(room: Room) -> list[rtc_pb.SignalResponse]:
    """Every SignalResponse the room's engine receives from now on."""
    seen: list[rtc_pb.SignalResponse] = []
    session = room._engine.session  # type: ignore[union-attr]
    original = session.receive

    def receive(resp: rtc_pb.SignalResponse, now: float) -> Any:
        seen.append(resp)
        return original(resp, now)

    session.receive = receive  # type: ignore[method-assign]
    return seen


async def _join(server: Any, rooms: list[Room], identity: str, room: str = "hard",
                **grants: Any) -> Room:
    r = Room()
    rooms.append(r)
    await asyncio.wait_for(r.connect(server.url, server.token(identity, room, **grants)), 30)
    return r


@pytest.fixture
async def devserver() -> AsyncIterator[Any]:
    """The embedded server itself (for tests that look inside it)."""
    from aiolivekit.server import DevServer

    async with DevServer(port=0) as server:
        yield server


@pytest.fixture
async def lkapi(any_server: Any) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(any_server.http_url, any_server.api_key, any_server.api_secret)
    yield client
    await client.aclose()


# ------------------------------------------------------------ subscription permissions


async def test_subscription_permission_revoked_at_once(any_server: Any,
                                                       rooms: list[Room]) -> None:
    """alice revokes everyone: dave, subscribed, is unsubscribed at once and told so
    (SubscriptionPermissionUpdate allowed=false); allowing him again resubscribes him."""
    alice = await _join(any_server, rooms, "alice")
    source = AudioSource(48000, 1)
    pub = await asyncio.wait_for(alice.local_participant.publish_track(
        LocalAudioTrack.create_audio_track("mic", source)), TIMEOUT)
    events: list[tuple[str, str]] = []
    dave = Room()
    rooms.append(dave)
    dave.on("track_subscribed", lambda t, p, rp: events.append(("subscribed", p.sid)))
    dave.on("track_unsubscribed", lambda t, p, rp: events.append(("unsubscribed", p.sid)))
    await asyncio.wait_for(dave.connect(any_server.url, any_server.token("dave", "hard")), 30)
    seen = _tap_signal(dave)
    await _until(lambda: ("subscribed", pub.sid) in events, what="dave subscribed")

    revoked_at = time.monotonic()
    alice.local_participant.set_track_subscription_permissions(allow_all_participants=False)
    await _until(lambda: ("unsubscribed", pub.sid) in events, 5.0, "dave unsubscribed")
    assert time.monotonic() - revoked_at < 3.0

    def updates() -> list[tuple[str, str, bool]]:
        return [(u.participant_sid, u.track_sid, u.allowed) for u in
                (r.subscription_permission_update for r in seen
                 if r.WhichOneof("message") == "subscription_permission_update")]

    alice_sid = alice.local_participant.sid
    await _until(lambda: (alice_sid, pub.sid, False) in updates(), 5.0, "permission update")
    alice.local_participant.set_track_subscription_permissions(
        allow_all_participants=False,
        participant_permissions=[ParticipantTrackPermission(participant_identity="dave",
                                                            allow_all=True)])
    await _until(lambda: (alice_sid, pub.sid, True) in updates(), 5.0, "permission granted")
    await _until(lambda: events.count(("subscribed", pub.sid)) == 2, what="resubscribed")
    assert events == [("subscribed", pub.sid), ("unsubscribed", pub.sid),
                      ("subscribed", pub.sid)]
    await source.aclose()


# ------------------------------------------------------------ room limits


async def test_max_participants_refuses_the_extra_join(any_server: Any, rooms: list[Room],
                                                       lkapi: api.LiveKitAPI) -> None:
    await lkapi.room.create_room(api.CreateRoomRequest(name="capped", max_participants=3))
    for i in range(3):
        await _join(any_server, rooms, f"p{i}", "capped")
    with pytest.raises(ConnectError) as info:
        await _join(any_server, rooms, "p3", "capped")
    assert info.value.status == 500  # livekit-server's status for ErrMaxParticipantsExceeded
    listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room="capped"))
    assert sorted(p.identity for p in listed.participants) == ["p0", "p1", "p2"]
    await rooms[0].disconnect()
    await asyncio.sleep(1.0)
    await _join(any_server, rooms, "p4", "capped")  # a seat freed: in


async def test_empty_and_departure_timeouts(any_server: Any, rooms: list[Room],
                                            lkapi: api.LiveKitAPI) -> None:
    """A room nobody joins closes after empty_timeout; one everybody left, after
    departure_timeout (and not before)."""
    await lkapi.room.create_room(api.CreateRoomRequest(name="never-joined", empty_timeout=1,
                                                       departure_timeout=1))
    await lkapi.room.create_room(api.CreateRoomRequest(name="left", empty_timeout=600,
                                                       departure_timeout=8))
    room = await _join(any_server, rooms, "leaver", "left")
    await room.disconnect()
    left_at = time.monotonic()

    async def names() -> set[str]:
        resp = await lkapi.room.list_rooms(api.ListRoomsRequest())
        return {r.name for r in resp.rooms}

    deadline = time.monotonic() + 30
    while "never-joined" in await names():
        assert time.monotonic() < deadline, "empty_timeout=1 room never closed"
        await asyncio.sleep(0.5)
    assert "left" in await names()
    assert time.monotonic() - left_at < 8, "the departure_timeout check is no longer meaningful"
    while "left" in await names():
        assert time.monotonic() < deadline, "departure_timeout=8 room never closed"
        await asyncio.sleep(0.5)
    assert time.monotonic() - left_at >= 7.5  # not before departure_timeout


async def test_participant_field_caps_from_the_client(any_server: Any,
                                                      rooms: list[Room]) -> None:
    """UpdateParticipantMetadata: livekit-server's caps and texts (LIMIT_EXCEEDED)."""
    room = await _join(any_server, rooms, "meta")
    other = await _join(any_server, rooms, "watcher")
    lp = room.local_participant
    with pytest.raises(SignalError, match="exceeds metadata size limit"):
        await asyncio.wait_for(lp.set_metadata("m" * (limits.MAX_METADATA_SIZE + 1)), TIMEOUT)
    with pytest.raises(SignalError, match="exceeds name length limit"):
        await asyncio.wait_for(lp.set_name("n" * (limits.MAX_NAME_LENGTH + 1)), TIMEOUT)
    with pytest.raises(SignalError, match="exceeds attributes size limit"):
        await asyncio.wait_for(lp.set_attributes({"k": "v" * limits.MAX_ATTRIBUTES_SIZE}),
                               TIMEOUT)
    # exactly at the limits: accepted and fanned out
    await asyncio.wait_for(lp.set_metadata("m" * limits.MAX_METADATA_SIZE), TIMEOUT)
    await asyncio.wait_for(lp.set_name("n" * limits.MAX_NAME_LENGTH), TIMEOUT)
    remote = other.remote_participants
    await _until(lambda: "meta" in remote
                 and len(remote["meta"].metadata) == limits.MAX_METADATA_SIZE
                 and remote["meta"].name == "n" * limits.MAX_NAME_LENGTH, what="fan-out")


async def test_five_big_metadata_participants_do_not_lock_the_room(
        any_server: Any, rooms: list[Room]) -> None:
    """Five participants trying 1.9 MiB of metadata each are refused; a sixth joins (its
    JoinResponse stays far below the client's 8 MiB frame cap)."""
    for i in range(5):
        r = await _join(any_server, rooms, f"big{i}")
        with pytest.raises(SignalError, match="exceeds metadata size limit"):
            await asyncio.wait_for(r.local_participant.set_metadata("x" * (1900 * 1024)),
                                   TIMEOUT)
    late = await _join(any_server, rooms, "late")
    assert sorted(late.remote_participants) == [f"big{i}" for i in range(5)]
    assert all(p.metadata == "" for p in late.remote_participants.values())


async def test_participant_field_caps_from_twirp(any_server: Any, rooms: list[Room],
                                                 lkapi: api.LiveKitAPI) -> None:
    """Twirp UpdateParticipant: invalid_argument with livekit-server's message."""
    await _join(any_server, rooms, "target")
    cases = [
        ({"metadata": "m" * (limits.MAX_METADATA_SIZE + 1)},
         "metadata size exceeds limits 524288"),
        ({"name": "n" * (limits.MAX_NAME_LENGTH + 1)}, "name length exceeds limits 256"),
        ({"attributes": {"k": "v" * limits.MAX_ATTRIBUTES_SIZE}},
         "attribute size exceeds limits 65536"),
    ]
    for kw, message in cases:
        with pytest.raises(api.TwirpError) as info:
            await lkapi.room.update_participant(api.UpdateParticipantRequest(
                room="hard", identity="target", **kw))
        assert (info.value.code, info.value.message) == ("invalid_argument", message)
    p = await lkapi.room.update_participant(api.UpdateParticipantRequest(
        room="hard", identity="target", metadata="m" * limits.MAX_METADATA_SIZE))
    assert len(p.metadata) == limits.MAX_METADATA_SIZE


async def test_add_track_layers_and_codecs_bounded(devserver: Any) -> None:
    """One AddTrack with 10 000 layers / 2 000 codecs is refused (LIMIT_EXCEEDED) and
    nothing is stored. (livekit-server 1.13.5 stores all 10 000 layers.)"""
    async with RawSignal(devserver.url, devserver.token("alice", "hard")) as s:
        req = rtc_pb.AddTrackRequest(
            cid="c1", name="v", type=models_pb.TrackType.VIDEO,
            source=models_pb.TrackSource.CAMERA,
            layers=[models_pb.VideoLayer(quality=i % 3, width=i) for i in range(10000)],
            simulcast_codecs=[rtc_pb.SimulcastCodec(codec="vp8", cid=f"c{i}")
                              for i in range(2000)])
        await s.send(rtc_pb.SignalRequest(add_track=req))
        resp = await s.wait_for("request_response")
        assert resp is not None
        rr = resp.request_response
        assert rr.reason == rtc_pb.RequestResponse.Reason.LIMIT_EXCEEDED
        assert rr.message == "too many layers (10000 > 4)"
        participant = next(iter(devserver.app.rooms.get("hard").participants.values()))
        assert participant.tracks == {}
        ok = rtc_pb.AddTrackRequest(cid="c2", name="v", type=models_pb.TrackType.VIDEO,
                                    source=models_pb.TrackSource.CAMERA,
                                    layers=[models_pb.VideoLayer(quality=q) for q in range(3)])
        await s.send(rtc_pb.SignalRequest(add_track=ok))
        published = await s.wait_for("track_published")
        assert published is not None and len(published.track_published.track.layers) == 3


# ------------------------------------------------------------ data channel


async def test_oversized_sctp_message_refused(any_server: Any, rooms: list[Room]) -> None:
    """A 16 MiB data-channel message (the client's own limit bypassed) never reaches the
    others; on the embedded server its sender is disconnected (SIGNAL_CLOSE)."""
    from aiolivekit._compat.aiortc_sctp import sctp_send_unchecked

    a = await _join(any_server, rooms, "a")
    b = await _join(any_server, rooms, "b")
    got: list[int] = []
    b.on("data_received", lambda packet: got.append(len(packet.data)))
    await a.local_participant.publish_data(b"hello")
    await _until(lambda: got == [5], what="the small packet")
    channel = a._engine.pub_channels["_reliable"]  # type: ignore[union-attr]
    packet = models_pb.DataPacket(kind=models_pb.DataPacket.Kind.RELIABLE,
                                  user=models_pb.UserPacket(payload=b"x" * (16 << 20)))
    sctp_send_unchecked(channel, packet.SerializeToString())
    if any_server.kind == "embedded":
        await _until(lambda: a.connection_state == 0, 15, "the sender disconnected")
    else:
        await asyncio.sleep(6)
    assert got == [5]
    c = await _join(any_server, rooms, "c")  # the server is fine
    await b.local_participant.publish_data(b"after")
    seen: list[bytes] = []
    c.on("data_received", lambda packet: seen.append(packet.data))
    await b.local_participant.publish_data(b"after2")
    await _until(lambda: b"after2" in seen, what="data after the attack")


# ------------------------------------------------------------ Twirp


async def _twirp_head_only(http_url: str, token: str, length: int = 10_000_000,
                           method: str = "CreateRoom") -> tuple[str, float]:
    """POST with a Content-Length of ``length`` and no body sent: the status line the
    server answers with before the body (or '' after 3 s) and how long it took."""
    host, port = http_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write((f"POST /twirp/livekit.RoomService/{method} HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {token}\r\n"
                      f"Content-Type: application/protobuf\r\nContent-Length: {length}\r\n\r\n"
                      ).encode())
        await writer.drain()
        start = time.monotonic()
        try:
            line = await asyncio.wait_for(reader.readline(), 3.0)
        except asyncio.TimeoutError:
            return "", time.monotonic() - start
        return line.decode().strip(), time.monotonic() - start
    finally:
        writer.close()


async def test_twirp_refuses_a_bad_token_before_the_body(any_server: Any) -> None:
    from aiolivekit.server.auth import make_token

    forged = make_token(any_server.api_key, "not-the-secret", "x", "hard")
    line, took = await _twirp_head_only(any_server.http_url, forged)
    assert line.startswith("HTTP/1.1 401"), line
    assert took < 1.0


async def test_twirp_authorises_before_the_body_and_bounds_it(devserver: Any) -> None:
    """A join-only token is refused before the body is read (livekit-server 1.13.5 waits
    for the whole body first); a body over the cap is 413 from its Content-Length."""
    line, took = await _twirp_head_only(devserver.http_url,
                                        devserver.token("x", "hard"))
    assert line.startswith("HTTP/1.1 401"), line
    assert took < 1.0
    admin = api.AccessToken(devserver.api_key, devserver.api_secret) \
        .with_grants(api.VideoGrants(room_create=True)).to_jwt()
    line, _ = await _twirp_head_only(devserver.http_url, admin,
                                     length=limits.MAX_TWIRP_BODY + 1)
    assert line.startswith("HTTP/1.1 413"), line
    lk = api.LiveKitAPI(devserver.http_url, devserver.api_key,
                        devserver.api_secret)
    try:  # a legitimate call still works
        room = await lk.room.create_room(api.CreateRoomRequest(name="after-413"))
        assert room.name == "after-413"
    finally:
        await lk.aclose()


# ------------------------------------------------------------ signal-level bounds


async def test_pending_candidates_are_bounded(devserver: Any) -> None:
    """Trickle before any offer: at most MAX_PENDING_CANDIDATES kept, oversized ones
    dropped; the connection stays usable."""
    async with RawSignal(devserver.url, devserver.token("t", "hard")) as s:
        small = '{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}'
        for _ in range(limits.MAX_PENDING_CANDIDATES + 50):
            await s.send(rtc_pb.SignalRequest(trickle=rtc_pb.TrickleRequest(
                candidateInit=small, target=rtc_pb.SignalTarget.PUBLISHER)))
        for _ in range(5):
            await s.send(rtc_pb.SignalRequest(trickle=rtc_pb.TrickleRequest(
                candidateInit="x" * (1 << 20), target=rtc_pb.SignalTarget.SUBSCRIBER)))
        await s.send(rtc_pb.SignalRequest(ping_req=rtc_pb.Ping(timestamp=7)))
        pong = await s.wait_for("pong_resp")
        assert pong is not None and pong.pong_resp.last_ping_timestamp == 7
        session = next(iter(devserver.app.hub.sessions.values()))
        assert [len(session._pending_remote[t]) for t in (0, 1)] == \
            [limits.MAX_PENDING_CANDIDATES, 0]


async def _sleeping_websocket(server: Any, identity: str) -> asyncio.StreamWriter:
    """Join with a WebSocket that reads its 101 and JoinResponse, then never reads again
    (a 4 KiB receive buffer, so that the server's sends back up soon)."""
    token = server.token(identity, "hard")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write((f"GET /rtc?access_token={token}&protocol=16&auto_subscribe=0 HTTP/1.1\r\n"
                  "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101"), head
    return writer


async def test_slow_reader_is_disconnected(devserver: Any, rooms: list[Room]) -> None:
    """A participant that stops reading while others make the server queue signal
    messages for it (512 KiB metadata updates) is disconnected once MAX_OUT_QUEUE_BYTES
    are queued, instead of the server holding them."""
    writer = await _join(devserver, rooms, "writer")
    sleeper = await _sleeping_websocket(devserver, "sleeper")
    try:
        room = devserver.app.rooms.get("hard")
        await _until(lambda: len(room.participants) == 2, what="the sleeper joined")
        start = time.monotonic()
        updates = 0
        while any(p.identity == "sleeper" for p in room.participants.values()):
            assert updates < 100, "100 x 512 KiB queued and the sleeper still in the room"
            await asyncio.wait_for(writer.local_participant.set_metadata(
                str(updates % 10) * limits.MAX_METADATA_SIZE), TIMEOUT)
            updates += 1
            await asyncio.sleep(0)
        assert time.monotonic() - start < 9  # not the 10 s send timeout
        assert updates * limits.MAX_METADATA_SIZE > limits.MAX_OUT_QUEUE_BYTES
        await _until(lambda: all(sess.identity != "sleeper"
                                 for sess in devserver.app.hub.sessions.values()),
                     what="the sleeper's session closed")
    finally:
        sleeper.close()


# ------------------------------------------------------------ E2EE


@pytest.mark.parametrize("option", ["e2ee", "encryption"])
async def test_e2ee_requested_never_connects_in_clear(devserver: Any, option: str) -> None:
    """``RoomOptions(encryption=...)`` raises before any I/O: the server never sees the
    participant (the issue saw a warning and an unencrypted connection)."""
    from aiolivekit import RoomOptions, UnsupportedOptionError

    room = Room()
    with pytest.raises(UnsupportedOptionError) as info:
        await asyncio.wait_for(room.connect(
            devserver.url, devserver.token("secretive", "hard"),
            RoomOptions(**{option: {"key_provider": "shared", "shared_key": b"k" * 32}})), 10)
    assert info.value.issue == 17
    await asyncio.sleep(0.3)
    assert devserver.app.hub.sessions == {} and "hard" not in devserver.app.rooms.rooms
    assert room.connection_state == 0
