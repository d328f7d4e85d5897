"""Twirp ``livekit.RoomService`` for the dev server (protobuf and JSON bodies).

Sans-I/O: :meth:`RoomService.handle` takes the method name, body, content type,
``Authorization`` header and the time, and returns a :class:`TwirpResult` (HTTP status,
content type, body) plus the room effects for the shell to carry out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import models as models_pb, room as room_pb

from . import limits
from .auth import AuthError, TokenClaims, VideoGrant, token_from_request, verify_token
from .rooms import Effect, ParticipantNotFound, RoomManager, RoomNotFound, RoomState

__all__ = [
    "TWIRP_PREFIX",
    "RoomService",
    "TwirpError",
    "TwirpResult",
    "decode_message",
    "encode_message",
]

logger = logging.getLogger(__name__)

TWIRP_PREFIX = "/twirp/livekit.RoomService/"

_STATUS = {
    "canceled": 408, "invalid_argument": 400, "malformed": 400, "deadline_exceeded": 408,
    "not_found": 404, "bad_route": 404, "already_exists": 409, "permission_denied": 403,
    "unauthenticated": 401, "resource_exhausted": 429, "failed_precondition": 412,
    "aborted": 409, "out_of_range": 400, "unimplemented": 501, "internal": 500,
    "unavailable": 503, "data_loss": 500, "unknown": 500,
}


class TwirpError(Exception):
    """A Twirp error: ``code`` is the Twirp code name, ``status`` the HTTP status."""

    def __init__(self, code: str, msg: str, meta: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.meta = meta or {}
        self.status = _STATUS.get(code, 500)

    def body(self) -> bytes:
        data: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.meta:
            data["meta"] = self.meta
        return json.dumps(data, separators=(",", ":")).encode()


@dataclass
class TwirpResult:
    status: int
    content_type: str
    body: bytes
    effects: list[Effect] = field(default_factory=list)


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


def _is_protobuf(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() in ("application/protobuf",
                                                          "application/x-protobuf")


def decode_message(body: bytes, content_type: str, message: Message) -> Message:
    """Fill ``message`` from a protobuf or JSON body (JSON accepts both field name styles)."""
    try:
        if _is_json(content_type):
            json_format.Parse(body.decode() if body else "{}", message,
                              ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError):
        what = "json" if _is_json(content_type) else "protobuf"
        raise TwirpError("malformed", f"the {what} request could not be decoded") from None
    return message


def encode_message(message: Message, content_type: str) -> tuple[str, bytes]:
    """Serialize ``message`` in the request's format (JSON: proto field names, defaults)."""
    if _is_json(content_type):
        data = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
        return "application/json", json.dumps(data, separators=(",", ":")).encode()
    return "application/protobuf", message.SerializeToString()


_METHOD_GRANT = {"CreateRoom": "room_create", "DeleteRoom": "room_create",
                 "ListRooms": "room_list"}
"""The grant each method needs (every other method: ``room_admin``)."""

Handler = Callable[[Message, VideoGrant, float], tuple[Message, list[Effect]]]


class RoomService:
    """The RoomService methods over a :class:`RoomManager`."""

    def __init__(self, rooms: RoomManager, keys: dict[str, str]) -> None:
        self.rooms = rooms
        self.keys = keys
        self._methods: dict[str, tuple[type[Message], Handler]] = {
            "CreateRoom": (room_pb.CreateRoomRequest, self._create_room),
            "ListRooms": (room_pb.ListRoomsRequest, self._list_rooms),
            "DeleteRoom": (room_pb.DeleteRoomRequest, self._delete_room),
            "ListParticipants": (room_pb.ListParticipantsRequest, self._list_participants),
            "GetParticipant": (room_pb.RoomParticipantIdentity, self._get_participant),
            "RemoveParticipant": (room_pb.RoomParticipantIdentity, self._remove_participant),
            "UpdateParticipant": (room_pb.UpdateParticipantRequest, self._update_participant),
            "UpdateRoomMetadata": (room_pb.UpdateRoomMetadataRequest, self._update_room_metadata),
            "SendData": (room_pb.SendDataRequest, self._send_data),
            "MutePublishedTrack": (room_pb.MuteRoomTrackRequest, self._mute_track),
            "UpdateSubscriptions": (room_pb.UpdateSubscriptionsRequest,
                                    self._update_subscriptions),
        }

    def preauthorize(self, method: str, authorization: str | None,
                     now: float) -> TwirpResult | None:
        """Before the body is read: a refusal for a missing or invalid token, or a token
        without the grant ``method`` needs at all (``room_create`` / ``room_list`` /
        ``room_admin``); ``None`` when the call may go on (:meth:`handle` then checks the
        grant against the room named in the body)."""
        try:
            token = token_from_request(authorization, {})
            claims = verify_token(token, self.keys, now) if token else None
        except AuthError as exc:
            return TwirpResult(exc.status, "text/plain", exc.message.encode())
        if method not in self._methods:
            return None  # handle() answers bad_route
        grant = claims.video if claims is not None else None
        needed = _METHOD_GRANT.get(method, "room_admin")
        if grant is None or not getattr(grant, needed):
            err = TwirpError("unauthenticated", "permissions denied")
            return TwirpResult(err.status, "application/json", err.body())
        return None

    def handle(self, method: str, body: bytes, content_type: str,
               authorization: str | None, now: float) -> TwirpResult:
        """Run one Twirp call. Token errors give the plain-text 401 of the official server."""
        try:
            token = token_from_request(authorization, {})
            claims: TokenClaims | None = verify_token(token, self.keys, now) if token else None
        except AuthError as exc:
            return TwirpResult(exc.status, "text/plain", exc.message.encode())
        try:
            route = {"twirp_invalid_route": f"POST {TWIRP_PREFIX}{method}"}
            if not (_is_json(content_type) or _is_protobuf(content_type)):
                raise TwirpError("bad_route",
                                 f"unexpected Content-Type: {json.dumps(content_type)}", route)
            entry = self._methods.get(method)
            if entry is None:
                raise TwirpError("bad_route", f"no handler for path \"{TWIRP_PREFIX}{method}\"",
                                 route)
            request_type, handler = entry
            if claims is None or claims.video is None:
                raise TwirpError("unauthenticated", "permissions denied")
            request = decode_message(body, content_type, request_type())
            response, effects = handler(request, claims.video, now)
        except TwirpError as exc:
            return TwirpResult(exc.status, "application/json", exc.body())
        except (RoomNotFound, ParticipantNotFound) as exc:
            # the official server wraps its psrpc errors this way
            err = TwirpError("not_found", f"twirp error unknown: {exc}")
            return TwirpResult(err.status, "application/json", err.body())
        ctype, out = encode_message(response, content_type)
        return TwirpResult(200, ctype, out, effects)

    # ------------------------------------------------------------------ grants

    @staticmethod
    def _require(ok: bool) -> None:
        if not ok:
            raise TwirpError("unauthenticated", "permissions denied")

    def _admin(self, grant: VideoGrant, room: str) -> None:
        self._require(grant.room_admin and bool(room) and grant.room == room)

    def _room_for_participant(self, name: str) -> RoomState:
        room = self.rooms.rooms.get(name)
        if room is None:
            raise ParticipantNotFound("participant does not exist")
        return room

    # ------------------------------------------------------------------ methods

    def _create_room(self, req: Any, grant: VideoGrant, now: float) -> tuple[Message, list[Effect]]:
        self._require(grant.room_create)
        if not req.name:
            raise TwirpError("invalid_argument", "room name is required")
        if len(req.name.encode()) > limits.MAX_ROOM_NAME_LENGTH:
            raise TwirpError("invalid_argument", "room name exceeds limits: max length "
                             f"{limits.MAX_ROOM_NAME_LENGTH}")
        _check_fields(metadata=req.metadata)
        options: dict[str, object] = {"metadata": req.metadata,
                                      "max_participants": req.max_participants}
        if req.empty_timeout:
            options["empty_timeout"] = req.empty_timeout
        if req.departure_timeout:
            options["departure_timeout"] = req.departure_timeout
        room = self.rooms.get_or_create(req.name, now, **options)
        return room.info(), []

    def _list_rooms(self, req: Any, grant: VideoGrant, now: float) -> tuple[Message, list[Effect]]:
        self._require(grant.room_list)
        names = set(req.names)
        rooms = [r.info() for name, r in self.rooms.rooms.items() if not names or name in names]
        return room_pb.ListRoomsResponse(rooms=rooms), []

    def _delete_room(self, req: Any, grant: VideoGrant, now: float) -> tuple[Message, list[Effect]]:
        self._require(grant.room_create)
        effects = self.rooms.delete(req.room)
        return room_pb.DeleteRoomResponse(), effects

    def _list_participants(self, req: Any, grant: VideoGrant,
                           now: float) -> tuple[Message, list[Effect]]:
        self._admin(grant, req.room)
        room = self.rooms.rooms.get(req.room)  # a missing room simply has nobody in it
        participants = [p.info() for p in room.participants.values()] if room else []
        return room_pb.ListParticipantsResponse(participants=participants), []

    def _get_participant(self, req: Any, grant: VideoGrant,
                         now: float) -> tuple[Message, list[Effect]]:
        self._admin(grant, req.room)
        return self._room_for_participant(req.room).by_identity(req.identity).info(), []

    def _remove_participant(self, req: Any, grant: VideoGrant,
                            now: float) -> tuple[Message, list[Effect]]:
        self._admin(grant, req.room)
        room = self._room_for_participant(req.room)
        p = room.by_identity(req.identity)
        return room_pb.RemoveParticipantResponse(), room.remove(
            p.sid, models_pb.DisconnectReason.PARTICIPANT_REMOVED)

    def _update_participant(self, req: Any, grant: VideoGrant,
                            now: float) -> tuple[Message, list[Effect]]:
        self._admin(grant, req.room)
        _check_fields(name=req.name, metadata=req.metadata, attributes=req.attributes)
        room = self._room_for_participant(req.room)
        p, effects = room.admin_update_participant(
            req.identity, metadata=req.metadata, name=req.name,
            attributes=dict(req.attributes),
            permission=req.permission if req.HasField("permission") else None,
        )
        return p.info(), effects

    def _update_room_metadata(self, req: Any, grant: VideoGrant,
                              now: float) -> tuple[Message, list[Effect]]:
        self._admin(grant, req.room)
        _check_fields(metadata=req.metadata)
        room = self.rooms.get(req.room)
        effects = room.set_metadata(req.metadata)
        return room.info(), effects

    def _send_data(self, req: Any, grant: VideoGrant, now: float) -> tuple[Message, list[Effect]]:
        self._admin(grant, req.room)
        if req.nonce and len(req.nonce) != 16:
            raise TwirpError("invalid_argument", "nonce should be 16-bytes or not present")
        room = self.rooms.get(req.room)
        return room_pb.SendDataResponse(), room.server_data(req)

    def _mute_track(self, req: Any, grant: VideoGrant, now: float) -> tuple[Message, list[Effect]]:
        self._admin(grant, req.room)
        room = self._room_for_participant(req.room)
        track, effects = room.admin_mute_track(req.identity, req.track_sid, req.muted)
        return room_pb.MuteRoomTrackResponse(track=track), effects

    def _update_subscriptions(self, req: Any, grant: VideoGrant,
                              now: float) -> tuple[Message, list[Effect]]:
        self._admin(grant, req.room)
        room = self._room_for_participant(req.room)
        p = room.by_identity(req.identity)
        sids = list(req.track_sids)
        for pt in req.participant_tracks:
            sids.extend(pt.track_sids)
        return room_pb.UpdateSubscriptionsResponse(), room.update_subscription(
            p.sid, sids, req.subscribe)


def _check_fields(**fields: Any) -> None:
    """livekit-server's ``invalid_argument`` for a name/metadata/attributes over its limit."""
    try:
        limits.check_participant_fields(**fields)
    except limits.LimitExceeded as exc:
        raise TwirpError("invalid_argument", f"{exc.twirp_message} {exc.limit}",
                         {"argument": exc.twirp_message}) from None
