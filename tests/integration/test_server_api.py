"""The dev server over real HTTP/WebSocket: routes, auth statuses, signalling basics and the
Twirp RoomService driven by the official ``livekit-api`` client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit import api
from livekit.protocol import models as models_pb, rtc as rtc_pb

from aiolivekit.server import DevServer
from aiolivekit.server.auth import verify_token

pytestmark = [pytest.mark.asyncio,
              pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")]


@pytest.fixture
async def server() -> AsyncIterator[DevServer]:
    async with DevServer() as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class RawClient:
    """A signalling-only participant: WebSocket + protobuf, no peer connections."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, join: rtc_pb.JoinResponse) -> None:
        self.ws = ws
        self.join = join

    async def send(self, req: rtc_pb.SignalRequest) -> None:
        await self.ws.send_bytes(req.SerializeToString())

    async def recv(self, kind: str, timeout: float = 5.0) -> rtc_pb.SignalResponse:
        """The next message of ``kind`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} within {timeout}s")
            msg = await self.ws.receive(timeout=left)
            if msg.type != aiohttp.WSMsgType.BINARY:
                raise AssertionError(f"connection ended waiting for {kind}: {msg.type}")
            resp = rtc_pb.SignalResponse.FromString(msg.data)
            if resp.WhichOneof("message") == kind:
                return resp

    async def recv_update(self, identity: str, timeout: float = 5.0,
                          **fields: object) -> models_pb.ParticipantInfo:
        """The next ParticipantUpdate about ``identity`` whose fields match ``fields``."""
        deadline = time.monotonic() + timeout
        while True:
            resp = await self.recv("update", max(0.01, deadline - time.monotonic()))
            for info in resp.update.participants:
                if info.identity == identity and all(
                        getattr(info, k) == v for k, v in fields.items()):
                    return info

    async def close(self) -> None:
        await self.ws.close()


async def connect(http: aiohttp.ClientSession, server: DevServer, identity: str,
                  query: str = "", **token_kw: object) -> RawClient:
    token = server.token(identity, **token_kw)  # type: ignore[arg-type]
    ws = await http.ws_connect(f"{server.url}/rtc?protocol=16&client_protocol=1{query}",
                               headers={"Authorization": f"Bearer {token}"})
    msg = await ws.receive(timeout=5.0)
    resp = rtc_pb.SignalResponse.FromString(msg.data)
    assert resp.WhichOneof("message") == "join"
    return RawClient(ws, resp.join)


async def test_routes_and_cors(server: DevServer, http: aiohttp.ClientSession) -> None:
    async with http.get(server.http_url + "/") as r:
        assert r.status == 200
    for path in ("/rtc/v1", "/rtc/v1/validate"):
        async with http.get(server.http_url + path) as r:
            assert r.status == 404 and r.headers["Access-Control-Allow-Origin"] == "*"
    token = server.token("alice")
    async with http.get(server.http_url + "/rtc/validate",
                        headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200 and await r.text() == "success"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    async with http.get(server.http_url + f"/rtc/validate?access_token={token}") as r:
        assert r.status == 200
    async with http.options(server.http_url + "/twirp/livekit.RoomService/ListRooms",
                            headers={"Origin": "http://x", "Access-Control-Request-Method": "POST"}
                            ) as r:
        assert r.status < 300 and r.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "make_token, status, text",
    [
        (lambda s: None, 401, "no permissions to access the room"),
        (lambda s: "garbage", 401, "invalid authorization token"),
        (lambda s: DevServer(api_key="k2", api_secret="x" * 8).token("a"), 401,
         "invalid API key: k2"),
        (lambda s: api.AccessToken("devkey", "wrong").with_identity("a").with_grants(
            api.VideoGrants(room_join=True, room="r")).to_jwt(), 401,
         "invalid token: "),
        (lambda s: api.AccessToken("devkey", "secret").with_identity("").with_grants(
            api.VideoGrants(room_join=False, room="r")).to_jwt(), 401, "permissions denied"),
        (lambda s: api.AccessToken("devkey", "secret").with_grants(
            api.VideoGrants(room_create=True)).to_jwt(), 401, "permissions denied"),
    ],
)
async def test_rtc_refusals_are_http_statuses(server: DevServer, http: aiohttp.ClientSession,
                                              make_token, status: int, text: str) -> None:  # type: ignore[no-untyped-def]
    token = make_token(server)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(server.url + "/rtc", headers=headers)
    assert info.value.status == status
    async with http.get(server.http_url + "/rtc/validate", headers=headers) as r:
        body = await r.text()
        assert r.status == status and r.headers["Access-Control-Allow-Origin"] == "*"
        assert body.startswith(text) if text.endswith(": ") else body == text


async def test_join_ping_and_peer_updates(server: DevServer, http: aiohttp.ClientSession) -> None:
    alice = await connect(http, server, "alice", name="Alice", metadata="ma",
                          query="&capabilities=CAP_PACKET_TRAILER")
    assert alice.join.participant.identity == "alice" and alice.join.participant.name == "Alice"
    assert alice.join.participant.client_protocol == 1
    assert list(alice.join.participant.capabilities) == [
        models_pb.ClientInfo.Capability.CAP_PACKET_TRAILER]
    got: dict[str, rtc_pb.SignalResponse] = {}
    while len(got) < 2:  # refresh_token and the subscriber offer, in either order
        msg = await alice.ws.receive(timeout=5)
        resp = rtc_pb.SignalResponse.FromString(msg.data)
        got[resp.WhichOneof("message")] = resp  # type: ignore[index]
    assert set(got) == {"refresh_token", "offer"}
    fresh = verify_token(got["refresh_token"].refresh_token, {"devkey": "secret"}, time.time())
    assert fresh.identity == "alice" and fresh.metadata == "ma" and fresh.video is not None
    offer = got["offer"]  # subscriber offer right after the join
    assert offer.offer.type == "offer" and "_reliable" not in offer.offer.sdp  # DCEP, in-band
    assert "m=application" in offer.offer.sdp and "127.0.0.1" in offer.offer.sdp
    await alice.send(rtc_pb.SignalRequest(ping_req=rtc_pb.Ping(timestamp=1234, rtt=5)))
    pong = await alice.recv("pong_resp")
    assert pong.pong_resp.last_ping_timestamp == 1234 and pong.pong_resp.timestamp > 0
    await alice.send(rtc_pb.SignalRequest(ping=99))
    assert (await alice.recv("pong")).pong > 0

    bob = await connect(http, server, "bob", metadata="mb")
    assert [(p.identity, p.metadata) for p in bob.join.other_participants] == [("alice", "ma")]
    upd = await alice.recv("update")
    assert upd.update.participants[0].identity == "bob"
    await bob.send(rtc_pb.SignalRequest(update_metadata=rtc_pb.UpdateParticipantMetadata(
        metadata="mb2", request_id=3)))
    rr = await bob.recv("request_response")
    assert rr.request_response.request_id == 3
    assert rr.request_response.reason == rtc_pb.RequestResponse.Reason.OK
    upd = await alice.recv("update")
    assert upd.update.participants[0].metadata == "mb2"
    assert upd.update.participants[0].version > bob.join.participant.version
    await bob.send(rtc_pb.SignalRequest(leave=rtc_pb.LeaveRequest(
        reason=models_pb.DisconnectReason.CLIENT_INITIATED)))
    upd = await alice.recv("update")
    assert upd.update.participants[0].state == models_pb.ParticipantInfo.State.DISCONNECTED
    await alice.close()
    await bob.close()


async def test_reconnect_is_refused_with_leave(server: DevServer,
                                               http: aiohttp.ClientSession) -> None:
    token = server.token("alice")
    ws = await http.ws_connect(server.url + "/rtc?reconnect=1&sid=PA_x",
                               headers={"Authorization": f"Bearer {token}"})
    msg = await ws.receive(timeout=5)
    leave = rtc_pb.SignalResponse.FromString(msg.data).leave
    assert leave.reason == models_pb.DisconnectReason.STATE_MISMATCH
    assert leave.action == rtc_pb.LeaveRequest.Action.RECONNECT
    await ws.close()


async def test_duplicate_identity_replaces(server: DevServer, http: aiohttp.ClientSession) -> None:
    first = await connect(http, server, "alice")
    second = await connect(http, server, "alice")
    leave = await first.recv("leave")
    assert leave.leave.reason == models_pb.DisconnectReason.DUPLICATE_IDENTITY
    room = server.app.rooms.get("test-room")
    assert [p.sid for p in room.participants.values()] == [second.join.participant.sid]
    await first.close()
    await second.close()


@pytest.mark.parametrize("frame", [b"\xff\xff\xff\xff", b"\x00" * (2 * 1024 * 1024 + 10)])
async def test_bad_frame_closes_only_that_connection(server: DevServer,
                                                     http: aiohttp.ClientSession,
                                                     frame: bytes) -> None:
    bad = await connect(http, server, "bad")
    good = await connect(http, server, "good")
    await bad.ws.send_bytes(frame)
    leave = await bad.recv("leave")
    assert leave.leave.action == rtc_pb.LeaveRequest.Action.DISCONNECT
    msg = await bad.ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING)
    upd = await good.recv("update")
    assert upd.update.participants[0].identity == "bad"
    assert upd.update.participants[0].state == models_pb.ParticipantInfo.State.DISCONNECTED
    await good.send(rtc_pb.SignalRequest(ping=1))
    assert (await good.recv("pong")).pong > 0
    await good.close()


async def test_livekit_api_against_dev_server(server: DevServer,
                                              http: aiohttp.ClientSession) -> None:
    alice = await connect(http, server, "alice", room="api-room", name="Alice")
    bob = await connect(http, server, "bob", room="api-room")
    lk = api.LiveKitAPI(server.http_url, server.api_key, server.api_secret)
    try:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest())
        assert [r.name for r in rooms.rooms] == ["api-room"]
        assert rooms.rooms[0].num_participants == 2
        created = await lk.room.create_room(api.CreateRoomRequest(name="empty-room"))
        assert created.sid.startswith("RM_")
        res = await lk.room.list_participants(api.ListParticipantsRequest(room="api-room"))
        assert sorted(p.identity for p in res.participants) == ["alice", "bob"]
        info = await lk.room.get_participant(api.RoomParticipantIdentity(room="api-room",
                                                                         identity="alice"))
        assert info.name == "Alice" and info.sid == alice.join.participant.sid

        updated = await lk.room.update_participant(api.UpdateParticipantRequest(
            room="api-room", identity="alice", metadata="from-api", attributes={"k": "v"}))
        assert updated.metadata == "from-api"
        own = await alice.recv_update("alice", metadata="from-api")
        other = await bob.recv_update("alice", metadata="from-api")
        assert dict(other.attributes) == {"k": "v"} and own.version == other.version

        room = await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(
            room="api-room", metadata="room-meta"))
        assert room.metadata == "room-meta"
        assert (await bob.recv("room_update")).room_update.room.metadata == "room-meta"

        await lk.room.remove_participant(api.RoomParticipantIdentity(room="api-room",
                                                                     identity="bob"))
        leave = await bob.recv("leave")
        assert leave.leave.reason == models_pb.DisconnectReason.PARTICIPANT_REMOVED
        gone = await alice.recv_update("bob", state=models_pb.ParticipantInfo.State.DISCONNECTED)
        assert gone.disconnect_reason == models_pb.DisconnectReason.PARTICIPANT_REMOVED
        res = await lk.room.list_participants(api.ListParticipantsRequest(room="api-room"))
        assert [p.identity for p in res.participants] == ["alice"]

        with pytest.raises(api.TwirpError) as info_err:
            await lk.room.get_participant(api.RoomParticipantIdentity(room="api-room",
                                                                      identity="bob"))
        assert info_err.value.status == 404 and info_err.value.code == "not_found"

        await lk.room.delete_room(api.DeleteRoomRequest(room="api-room"))
        leave = await alice.recv("leave")
        assert leave.leave.reason == models_pb.DisconnectReason.ROOM_DELETED
        rooms = await lk.room.list_rooms(api.ListRoomsRequest())
        assert [r.name for r in rooms.rooms] == ["empty-room"]
    finally:
        await lk.aclose()
        await alice.close()
        await bob.close()


async def test_pytest_plugin_fixture(livekit_dev_server: DevServer,
                                     http: aiohttp.ClientSession) -> None:
    assert livekit_dev_server.url.startswith("ws://127.0.0.1:")
    client = await connect(http, livekit_dev_server, "p")
    assert client.join.room.name == "test-room"
    await client.close()
    await asyncio.sleep(0)


async def test_json_signalling(server: DevServer, http: aiohttp.ClientSession) -> None:
    """A JSON text request is answered in JSON text frames (like livekit-server)."""
    client = await connect(http, server, "jason")
    await client.ws.send_str('{"pingReq": {"timestamp": "77"}}')
    deadline = time.monotonic() + 5
    while True:
        msg = await client.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if msg.type == aiohttp.WSMsgType.TEXT:
            break
    data = json.loads(msg.data)
    assert data["pongResp"]["lastPingTimestamp"] == "77"
    await client.ws.send_str("{not json")
    leave = await client.ws.receive(timeout=5)
    assert leave.type == aiohttp.WSMsgType.TEXT and "leave" in json.loads(leave.data)
    await client.close()


async def test_silent_signal_is_dropped_after_the_ping_timeout(
        http: aiohttp.ClientSession) -> None:
    """alice sends nothing for the ping timeout: the server sends Leave{SIGNAL_CLOSE,
    RESUME} and closes her signal; her media never connected, so she leaves at once
    (as livekit-server does for a signal lost before ICE connected). bob pings and stays."""
    async with DevServer(ping_timeout=1.0) as server:
        alice = await connect(http, server, "alice")
        bob = await connect(http, server, "bob")
        t0 = time.monotonic()
        leave = None
        while time.monotonic() - t0 < 5:
            await bob.send(rtc_pb.SignalRequest(ping_req=rtc_pb.Ping(timestamp=1)))
            try:
                leave = await alice.recv("leave", timeout=0.3)
                break
            except (AssertionError, asyncio.TimeoutError):
                continue
        assert leave is not None
        assert leave.leave.reason == models_pb.DisconnectReason.SIGNAL_CLOSE
        assert leave.leave.action == rtc_pb.LeaveRequest.Action.RESUME
        assert 0.9 <= time.monotonic() - t0 <= 3.0
        info = await bob.recv_update("alice", state=models_pb.ParticipantInfo.State.DISCONNECTED)
        assert info.disconnect_reason == models_pb.DisconnectReason.SIGNAL_CLOSE
        for _ in range(4):  # bob, pinging every 0.5 s, is kept past the timeout
            await bob.send(rtc_pb.SignalRequest(ping_req=rtc_pb.Ping(timestamp=2)))
            pong = await bob.recv("pong_resp", timeout=2)
            assert pong.pong_resp.last_ping_timestamp == 2
            await asyncio.sleep(0.5)
        room = server.app.rooms.get("test-room")
        assert [p.identity for p in room.participants.values()] == ["bob"]
        await alice.close()
        await bob.close()


async def test_resume_of_a_participant_whose_media_never_connected_is_refused(
        http: aiohttp.ClientSession) -> None:
    """A signal lost before the media connected ends the session: the resume gets
    Leave{STATE_MISMATCH, RECONNECT} (livekit-server's answer for a closed participant)."""
    async with DevServer() as server:
        alice = await connect(http, server, "alice")
        sid = alice.join.participant.sid
        await alice.close()
        await asyncio.sleep(0.3)
        token = server.token("alice")
        ws = await http.ws_connect(f"{server.url}/rtc?reconnect=1&sid={sid}&protocol=17",
                                   headers={"Authorization": f"Bearer {token}"})
        msg = await ws.receive(timeout=5)
        leave = rtc_pb.SignalResponse.FromString(msg.data).leave
        assert leave.reason == models_pb.DisconnectReason.STATE_MISMATCH
        assert leave.action == rtc_pb.LeaveRequest.Action.RECONNECT
        await ws.close()
