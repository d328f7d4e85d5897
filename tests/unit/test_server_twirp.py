"""Twirp RoomService core: protobuf/JSON codec, grants, error JSON and statuses."""

from __future__ import annotations

import json
import warnings

import jwt
from livekit.protocol import models as models_pb, room as room_pb

from aiolivekit.server.auth import VideoGrant
from aiolivekit.server.rooms import Disconnect, RoomManager, SendSignal
from aiolivekit.server.twirp import RoomService, decode_message, encode_message

NOW = 1_800_000_000.0
KEYS = {"devkey": "secret"}
PB = "application/protobuf"
JS = "application/json"


def bearer(video: dict) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = jwt.encode({"iss": "devkey", "sub": "", "exp": NOW + 600, "nbf": NOW - 1,
                          "video": video}, "secret", algorithm="HS256")
    return "Bearer " + tok


def service() -> tuple[RoomService, RoomManager]:
    mgr = RoomManager()
    return RoomService(mgr, KEYS), mgr


def test_codec_roundtrip_protobuf_and_json() -> None:
    msg = room_pb.CreateRoomRequest(name="r1", empty_timeout=60)
    ctype, body = encode_message(msg, PB)
    assert ctype == PB and decode_message(body, PB, room_pb.CreateRoomRequest()) == msg
    ctype, body = encode_message(msg, "application/json; charset=utf-8")
    data = json.loads(body)
    assert ctype == JS and data["name"] == "r1" and data["empty_timeout"] == 60
    assert "max_participants" in data  # defaults are emitted, proto field names
    camel = b'{"name":"r1","emptyTimeout":60,"unknownField":1}'
    assert decode_message(camel, JS, room_pb.CreateRoomRequest()) == msg


def test_create_and_list_rooms_json() -> None:
    svc, _ = service()
    res = svc.handle("CreateRoom", b'{"name":"r1","metadata":"m"}', JS,
                     bearer({"roomCreate": True}), NOW)
    assert res.status == 200 and res.content_type == JS
    room = json.loads(res.body)
    assert room["name"] == "r1" and room["metadata"] == "m" and room["sid"].startswith("RM_")
    res = svc.handle("ListRooms", b"{}", JS, bearer({"roomList": True}), NOW)
    assert [r["name"] for r in json.loads(res.body)["rooms"]] == ["r1"]


def test_list_participants_protobuf() -> None:
    svc, mgr = service()
    room = mgr.get_or_create("r1", NOW)
    room.join("alice", VideoGrant(room_join=True, room="r1"), NOW)
    body = room_pb.ListParticipantsRequest(room="r1").SerializeToString()
    res = svc.handle("ListParticipants", body, PB, bearer({"roomAdmin": True, "room": "r1"}), NOW)
    assert res.status == 200 and res.content_type == PB
    out = room_pb.ListParticipantsResponse.FromString(res.body)
    assert [p.identity for p in out.participants] == ["alice"]


def test_errors() -> None:
    svc, mgr = service()
    mgr.get_or_create("r1", NOW)
    body = room_pb.ListParticipantsRequest(room="r1").SerializeToString()
    # admin of another room
    res = svc.handle("ListParticipants", body, PB, bearer({"roomAdmin": True, "room": "r2"}), NOW)
    assert res.status == 401
    assert res.body == b'{"code":"unauthenticated","msg":"permissions denied"}'
    # no token at all
    res = svc.handle("ListRooms", b"", PB, None, NOW)
    assert res.status == 401 and json.loads(res.body)["code"] == "unauthenticated"
    # bad token -> plain text 401 like the official middleware
    res = svc.handle("ListRooms", b"", PB, "Bearer garbage", NOW)
    assert res.status == 401 and res.body == b"invalid authorization token"
    # unknown room
    res = svc.handle("DeleteRoom", room_pb.DeleteRoomRequest(room="zz").SerializeToString(), PB,
                     bearer({"roomCreate": True}), NOW)
    assert res.status == 404
    assert json.loads(res.body) == {"code": "not_found",
                                    "msg": "twirp error unknown: requested room does not exist"}
    # unknown participant
    res = svc.handle("GetParticipant", b'{"room":"r1","identity":"nobody"}', JS,
                     bearer({"roomAdmin": True, "room": "r1"}), NOW)
    assert res.status == 404 and json.loads(res.body) == {
        "code": "not_found", "msg": "twirp error unknown: participant does not exist"}
    res = svc.handle("GetParticipant", b'{"room":"r9","identity":"nobody"}', JS,
                     bearer({"roomAdmin": True, "room": "r9"}), NOW)
    assert res.status == 404
    assert json.loads(res.body)["msg"] == "twirp error unknown: participant does not exist"
    # listing a room that does not exist gives an empty list (like livekit-server)
    res = svc.handle("ListParticipants", b'{"room":"r9"}', JS,
                     bearer({"roomAdmin": True, "room": "r9"}), NOW)
    assert res.status == 200 and json.loads(res.body) == {"participants": []}
    # unknown method, bad content type, malformed body
    res = svc.handle("Nope", b"", PB, bearer({"roomList": True}), NOW)
    assert res.status == 404 and json.loads(res.body) == {
        "code": "bad_route", "msg": 'no handler for path "/twirp/livekit.RoomService/Nope"',
        "meta": {"twirp_invalid_route": "POST /twirp/livekit.RoomService/Nope"}}
    res = svc.handle("ListRooms", b"", "text/plain", bearer({"roomList": True}), NOW)
    assert res.status == 404
    assert json.loads(res.body)["msg"] == 'unexpected Content-Type: "text/plain"'
    res = svc.handle("ListRooms", b"{not json", JS, bearer({"roomList": True}), NOW)
    assert res.status == 400 and json.loads(res.body) == {
        "code": "malformed", "msg": "the json request could not be decoded"}
    res = svc.handle("ListRooms", b"\xff\xff", PB, bearer({"roomList": True}), NOW)
    assert res.status == 400 and json.loads(res.body) == {
        "code": "malformed", "msg": "the protobuf request could not be decoded"}


def test_remove_update_and_delete_effects() -> None:
    svc, mgr = service()
    room = mgr.get_or_create("r1", NOW)
    a, _, _ = room.join("alice", VideoGrant(room_join=True, room="r1"), NOW)
    b, _, _ = room.join("bob", VideoGrant(room_join=True, room="r1"), NOW)
    admin = bearer({"roomAdmin": True, "room": "r1"})
    res = svc.handle("UpdateParticipant", b'{"room":"r1","identity":"alice","metadata":"x"}',
                     JS, admin, NOW)
    assert res.status == 200 and json.loads(res.body)["metadata"] == "x"
    assert any(isinstance(e, SendSignal) and e.participant_sid == b.sid for e in res.effects)
    res = svc.handle("RemoveParticipant", b'{"room":"r1","identity":"alice"}', JS, admin, NOW)
    assert res.status == 200
    assert res.effects[0] == Disconnect(a.sid, models_pb.DisconnectReason.PARTICIPANT_REMOVED)
    res = svc.handle("UpdateRoomMetadata", b'{"room":"r1","metadata":"rm"}', JS, admin, NOW)
    assert json.loads(res.body)["metadata"] == "rm"
    (upd,) = [e for e in res.effects if isinstance(e, SendSignal)]
    assert upd.response.room_update.room.metadata == "rm"
    res = svc.handle("SendData", room_pb.SendDataRequest(room="r1", data=b"d", topic="t",
                     kind=models_pb.DataPacket.Kind.RELIABLE).SerializeToString(), PB, admin, NOW)
    (data,) = res.effects
    pkt = models_pb.DataPacket.FromString(data.payload)  # type: ignore[union-attr]
    assert pkt.user.payload == b"d" and pkt.user.topic == "t" and pkt.participant_identity == ""
    res = svc.handle("DeleteRoom", b'{"room":"r1"}', JS, bearer({"roomCreate": True}), NOW)
    assert res.status == 200 and res.body == b"{}"
    assert res.effects == [Disconnect(b.sid, models_pb.DisconnectReason.ROOM_DELETED)]
