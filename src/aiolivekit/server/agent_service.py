"""The asyncio shell of agent dispatch: the ``/agent`` worker WebSocket, the
``livekit.AgentDispatchService`` Twirp service and the room hooks of the app.

The decisions are :class:`~.agent_dispatch.AgentDispatcher`'s; this module moves
protobuf messages between it and the workers' WebSockets (one writer task per worker so
its messages keep their order) and runs its timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import WSMsgType, web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.protocol import agent as agent_pb, agent_dispatch as dispatch_pb, room as room_pb

from . import limits
from .agent_dispatch import AgentDispatcher, DispatchError, Effect, WorkerClose, WorkerSend
from .auth import AuthError, TokenClaims, token_from_request, verify_token
from .rooms import RoomManager
from .twirp import TwirpError, TwirpResult, decode_message, encode_message

__all__ = ["AGENT_TWIRP_PREFIX", "AgentService", "room_config_agents"]

logger = logging.getLogger(__name__)

AGENT_TWIRP_PREFIX = "/twirp/livekit.AgentDispatchService/"
TICK_INTERVAL = 0.5
SEND_TIMEOUT = 5.0
MAX_WORKER_MESSAGE = 1 << 20


def room_config_agents(claims: TokenClaims | None) -> list[dispatch_pb.RoomAgentDispatch]:
    """The agents of the token's ``roomConfig`` claim (a RoomConfiguration in JSON)."""
    config = claims.raw.get("roomConfig") if claims is not None else None
    if not isinstance(config, dict):
        return []
    message = room_pb.RoomConfiguration()
    try:
        json_format.ParseDict(config, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError):
        logger.info("token's roomConfig could not be parsed; its agents are ignored")
        return []
    return list(message.agents)


class _WorkerLink:
    """One worker's WebSocket and its ordered outgoing queue."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[agent_pb.ServerMessage | None] = asyncio.Queue()
        self.writer: asyncio.Task[None] = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        while True:
            msg = await self.queue.get()
            if msg is None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(), SEND_TIMEOUT)
                return
            try:
                await asyncio.wait_for(self.ws.send_bytes(msg.SerializeToString()),
                                       SEND_TIMEOUT)
            except Exception:
                logger.info("could not send to an agent worker; closing it", exc_info=True)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(), SEND_TIMEOUT)
                return


class AgentService:
    """Agent workers and dispatches of one server."""

    def __init__(self, rooms: RoomManager, keys: Mapping[str, str]) -> None:
        self.rooms = rooms
        self.keys = keys
        self.core = AgentDispatcher()
        self._links: dict[str, _WorkerLink] = {}
        self._ticker: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._tick_loop())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for link in list(self._links.values()):
            link.queue.put_nowait(None)
        writers = [link.writer for link in self._links.values()]
        if writers:
            await asyncio.wait(writers, timeout=SEND_TIMEOUT)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            now = time.time()
            try:
                self.apply(self.core.observe_rooms(self.rooms.rooms, now))
                self.apply(self.core.tick(now))
            except Exception:  # one bad state must not stop dispatch for the others
                logger.exception("agent dispatch tick failed")

    def apply(self, effects: Iterable[Effect]) -> None:
        """Queue the core's messages on the workers' WebSockets."""
        for e in effects:
            link = self._links.get(e.worker_id)
            if link is None:
                continue
            if isinstance(e, WorkerSend):
                link.queue.put_nowait(e.message)
            elif isinstance(e, WorkerClose):
                logger.info("closing agent worker %s: %s", e.worker_id, e.reason)
                link.queue.put_nowait(None)

    # ------------------------------------------------------------------ room hooks

    def room_created(self, name: str, agents: Iterable[dispatch_pb.RoomAgentDispatch]) -> None:
        room = self.rooms.rooms.get(name)
        if room is not None:
            self.apply(self.core.room_created(room.info(), agents, time.time()))

    def room_closed(self, name: str) -> None:
        self.apply(self.core.room_closed(name, time.time()))

    # ------------------------------------------------------------------ /agent

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """The worker WebSocket: 404 for a plain GET, 401 without the ``agent`` grant."""
        ws = web.WebSocketResponse(max_msg_size=MAX_WORKER_MESSAGE, heartbeat=10.0)
        if not ws.can_prepare(request).ok:
            return web.Response(status=404)
        try:
            token = token_from_request(request.headers.get("Authorization"),
                                       dict(request.query))
            claims = verify_token(token, self.keys, time.time()) if token else None
        except AuthError as exc:
            return web.Response(status=exc.status, text=exc.message)
        if claims is None or claims.video is None or not claims.video.agent:
            logger.info("refused an agent worker: its token has no agent grant")
            return web.Response(status=401, text="permissions denied")
        try:
            protocol = int(request.query.get("protocol", "1") or 1)
        except ValueError:
            protocol = 1
        await ws.prepare(request)
        worker = self.core.connect(claims.api_key, self.keys[claims.api_key], time.time(),
                                   protocol)
        link = _WorkerLink(ws)
        self._links[worker.id] = link
        logger.info("agent worker %s connected", worker.id)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    if msg.type == WSMsgType.TEXT:
                        logger.info("agent worker %s sent text; only protobuf is spoken",
                                    worker.id)
                    continue
                message = agent_pb.WorkerMessage()
                try:
                    message.ParseFromString(msg.data)
                except DecodeError:
                    logger.info("agent worker %s sent an undecodable message", worker.id)
                    break
                self.apply(self.core.handle(worker.id, message, time.time()))
        finally:
            effects = self.core.disconnect(worker.id, time.time())
            self._links.pop(worker.id, None)
            link.queue.put_nowait(None)
            self.apply(effects)
        return ws

    # ------------------------------------------------------------------ Twirp

    def preauthorize(self, authorization: str | None) -> TwirpResult | None:
        """Before the body is read: a refusal for a missing or invalid token or one
        without ``roomAdmin`` (the room is checked against the body afterwards)."""
        try:
            token = token_from_request(authorization, {})
            claims = verify_token(token, self.keys, time.time()) if token else None
        except AuthError as exc:
            return TwirpResult(exc.status, "text/plain", exc.message.encode())
        if claims is None or claims.video is None or not claims.video.room_admin:
            err = TwirpError("unauthenticated", "permissions denied")
            return TwirpResult(err.status, "application/json", err.body())
        return None

    def twirp(self, method: str, body: bytes, content_type: str,
              authorization: str | None) -> TwirpResult:
        """One ``livekit.AgentDispatchService`` call (needs ``roomAdmin`` on the room)."""
        now = time.time()
        try:
            token = token_from_request(authorization, {})
            claims = verify_token(token, self.keys, now) if token else None
        except AuthError as exc:
            return TwirpResult(exc.status, "text/plain", exc.message.encode())
        requests: dict[str, type[Any]] = {
            "CreateDispatch": dispatch_pb.CreateAgentDispatchRequest,
            "DeleteDispatch": dispatch_pb.DeleteAgentDispatchRequest,
            "ListDispatch": dispatch_pb.ListAgentDispatchRequest,
        }
        try:
            kind = content_type.split(";")[0].strip().lower()
            if kind not in ("application/json", "application/protobuf",
                            "application/x-protobuf"):
                raise TwirpError("bad_route",
                                 f"unexpected Content-Type: {json.dumps(content_type)}")
            if method not in requests:
                raise TwirpError("bad_route",
                                 f"no handler for path \"{AGENT_TWIRP_PREFIX}{method}\"")
            req: Any = decode_message(body, content_type, requests[method]())
            grant = claims.video if claims is not None else None
            if grant is None or not grant.room_admin or not req.room or grant.room != req.room:
                raise TwirpError("unauthenticated", "permissions denied")
            response = self._call(method, req, now)
        except TwirpError as exc:
            return TwirpResult(exc.status, "application/json", exc.body())
        except DispatchError as exc:
            err = TwirpError(exc.code, str(exc))
            return TwirpResult(err.status, "application/json", err.body())
        ctype, out = encode_message(response, content_type)
        return TwirpResult(200, ctype, out)

    def _call(self, method: str, req: Any, now: float) -> Any:
        if method == "CreateDispatch":
            if len(req.room.encode()) > limits.MAX_ROOM_NAME_LENGTH:
                raise TwirpError("invalid_argument", "room name exceeds limits: max length "
                                 f"{limits.MAX_ROOM_NAME_LENGTH}")
            if len(req.agent_name.encode()) > limits.MAX_NAME_LENGTH:
                raise TwirpError("invalid_argument", "agent name exceeds limits: max length "
                                 f"{limits.MAX_NAME_LENGTH}")
            if len(req.metadata.encode()) > limits.MAX_METADATA_SIZE:
                raise TwirpError("invalid_argument", "metadata exceeds limits: max size "
                                 f"{limits.MAX_METADATA_SIZE}")
            if req.room not in self.rooms.rooms:  # auto-created, like livekit-server
                self.rooms.get_or_create(req.room, now)
                self.room_created(req.room, [])
            room = self.rooms.rooms[req.room]
            dispatch, effects = self.core.create_dispatch(
                room.info(), req.agent_name, req.metadata, now, room.participants.values())
            self.apply(effects)
            return dispatch
        if method == "DeleteDispatch":
            dispatch, effects = self.core.delete_dispatch(req.room, req.dispatch_id, now)
            self.apply(effects)
            return dispatch
        return dispatch_pb.ListAgentDispatchResponse(
            agent_dispatches=self.core.list_dispatch(req.room, req.dispatch_id))
