"""aiohttp routes of the dev server: ``/rtc`` signalling, validation, Twirp, health (and the
room page, ``server/page.py``), CORS."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from livekit.protocol import models as models_pb, room as room_pb, rtc as rtc_pb

from . import http_guard, limits
from .agent_service import AGENT_TWIRP_PREFIX, AgentService, room_config_agents
from .auth import (
    AuthError,
    TokenClaims,
    VideoGrant,
    join_grant,
    refresh_token,
    token_from_request,
    verify_token,
)
from .config import ServerConfig
from .page import PageRoutes
from .rooms import RoomManager
from .session import MAX_SIGNAL_MESSAGE, Hub, ParticipantSession
from .twirp import TWIRP_PREFIX, RoomService, decode_message

__all__ = ["LiveKitServerApp", "create_app"]

logger = logging.getLogger(__name__)

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "OPTIONS, HEAD, GET, POST, PATCH, DELETE",
    "Access-Control-Allow-Headers": "*",
}

PRUNE_INTERVAL = 1.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=_CORS)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(_CORS)
        raise
    if not response.prepared:
        response.headers.update(_CORS)
    return response


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value in ("1", "true")


def _capabilities(text: str) -> list[int]:
    out: list[int] = []
    for name in text.split(","):
        name = name.strip()
        if not name:
            continue
        try:
            out.append(models_pb.ClientInfo.Capability.Value(name))
        except ValueError:
            continue
    return out


class LiveKitServerApp:
    """The state of one running server and its aiohttp application."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.rooms = RoomManager(departure_timeout=config.departure_timeout)
        self.hub = Hub(self.rooms, config.ice_addresses(), config.forwarding,
                       ping_timeout=config.ping_timeout, announce=config.announce)
        self.room_service = RoomService(self.rooms, config.keys)
        self.agents = AgentService(self.rooms, config.keys)
        self.app = web.Application(middlewares=[_cors_middleware],
                                   client_max_size=limits.MAX_TWIRP_BODY)
        self.page = PageRoutes(config, self.rooms, self.hub.sessions)
        self.app.router.add_get("/", self.page.root)  # the page for browsers, else OK
        self.page.install(self.app.router)
        self.app.router.add_get("/rtc", self._rtc)
        self.app.router.add_get("/rtc/validate", self._validate)
        self.app.router.add_get("/rtc/v1", self._not_found)
        self.app.router.add_get("/rtc/v1/validate", self._not_found)
        self.app.router.add_post(TWIRP_PREFIX + "{method}", self._twirp)
        self.app.router.add_post(AGENT_TWIRP_PREFIX + "{method}", self._agent_twirp)
        self.app.router.add_get("/agent", self.agents.handle_ws)
        self.app.router.add_route("OPTIONS", "/{tail:.*}", self._not_found)
        self.app.on_startup.append(self._on_startup)
        self.app.on_shutdown.append(self._on_shutdown)
        self._pruner: asyncio.Task[None] | None = None

    async def _on_startup(self, app: web.Application) -> None:
        self._pruner = asyncio.ensure_future(self._prune_loop())
        self.hub.start()
        self.agents.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
        self.page.close()
        await self.agents.close()
        await self.hub.close_all()

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL)
            for name in self.rooms.prune(time.time()):
                logger.info("closed empty room %s", name)
                self.agents.room_closed(name)

    # ------------------------------------------------------------------ helpers

    def _authenticate(self, request: web.Request) -> tuple[TokenClaims, VideoGrant]:
        token = token_from_request(request.headers.get("Authorization"),
                                   _query(request.query))
        claims = verify_token(token, self.config.keys, time.time()) if token else None
        return claims, join_grant(claims)  # type: ignore[return-value]

    @staticmethod
    def _error(exc: AuthError) -> web.Response:
        return web.Response(status=exc.status, text=exc.message, headers=_CORS)

    # ------------------------------------------------------------------ routes

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.Response(status=404, headers=_CORS)

    async def _validate(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(request)
        except AuthError as exc:
            return self._error(exc)
        return web.Response(text="success", headers=_CORS)

    async def _twirp(self, request: web.Request) -> web.Response:
        refused = self.room_service.preauthorize(  # before a byte of the body is read
            request.match_info["method"], request.headers.get("Authorization"), time.time())
        body = await http_guard.read_twirp_body(request) if refused is None else b""
        if isinstance(body, web.Response):
            return body
        before = set(self.rooms.rooms)
        result = refused or self.room_service.handle(
            request.match_info["method"], body, request.headers.get("Content-Type", ""),
            request.headers.get("Authorization"), time.time())
        self.hub.dispatch(result.effects)
        self._rooms_changed(before, request.match_info["method"], body,
                            request.headers.get("Content-Type", ""))
        return web.Response(status=result.status, body=result.body,
                            content_type=result.content_type, headers=_CORS)

    def _rooms_changed(self, before: set[str], method: str, body: bytes,
                       content_type: str) -> None:
        """Tell agent dispatch about the rooms a RoomService call created or deleted
        (CreateRoom's ``agents`` are the new room's dispatches)."""
        after = set(self.rooms.rooms)
        for name in before - after:
            self.agents.room_closed(name)
        for name in after - before:
            agents: list[Any] = []
            if method == "CreateRoom":
                req: Any = decode_message(body, content_type, room_pb.CreateRoomRequest())
                agents = list(req.agents)
            self.agents.room_created(name, agents)

    async def _agent_twirp(self, request: web.Request) -> web.Response:
        refused = self.agents.preauthorize(request.headers.get("Authorization"))
        if refused is not None:  # before a byte of the body is read
            return web.Response(status=refused.status, body=refused.body,
                                content_type=refused.content_type, headers=_CORS)
        body = await http_guard.read_twirp_body(request)
        if isinstance(body, web.Response):
            return body
        result = self.agents.twirp(request.match_info["method"], body,
                                   request.headers.get("Content-Type", ""),
                                   request.headers.get("Authorization"))
        return web.Response(status=result.status, body=result.body,
                            content_type=result.content_type, headers=_CORS)

    async def _rtc(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * MAX_SIGNAL_MESSAGE, heartbeat=10.0)
        if not ws.can_prepare(request).ok:  # a plain GET, like the official server: 404
            return web.Response(status=404, headers=_CORS)
        try:
            claims, grant = self._authenticate(request)
        except AuthError as exc:
            logger.info("refused join: %s %s", exc.status, exc.message)
            return self._error(exc)
        refusal = http_guard.join_refusal(self.rooms, claims, grant)
        if refusal is not None:
            return refusal
        query = request.query
        try:
            protocol = int(query.get("protocol", "0") or 0)
        except ValueError:
            protocol = 0
        if _bool(query.get("reconnect"), False):
            return await self._resume(request, ws, claims, grant, query.get("sid", ""),
                                      protocol)
        await ws.prepare(request)
        try:
            client_protocol = int(query.get("client_protocol", "0") or 0)
        except ValueError:
            client_protocol = 0
        now = time.time()
        created = grant.room not in self.rooms.rooms
        room = self.rooms.get_or_create(grant.room, now)
        if created:
            self.agents.room_created(room.name, room_config_agents(claims))
        participant, join, effects = room.join(
            claims.identity, grant, now,
            name=claims.name, metadata=claims.metadata, attributes=claims.attributes,
            kind=claims.kind, client_protocol=client_protocol,
            capabilities=_capabilities(query.get("capabilities", "")),
            auto_subscribe=_bool(query.get("auto_subscribe"), True),
            protocol=protocol,
        )
        logger.info("participant %s (%s) joined room %s", participant.identity,
                    participant.sid, room.name)
        secret = self.config.keys[claims.api_key]
        session = ParticipantSession(
            self.hub, room, participant,
            refresh=lambda: refresh_token(claims, secret, time.time()))
        self.hub.sessions[participant.sid] = session
        await session.run(ws, join, effects)
        return ws

    async def _resume(self, request: web.Request, ws: web.WebSocketResponse,
                      claims: TokenClaims, grant: VideoGrant, sid: str,
                      protocol: int) -> web.WebSocketResponse:
        """``reconnect=1``: re-attach to the participant's live session, found like
        livekit-server does (``RoomManager.StartSession``) by identity in the token's
        room; none (or one already leaving) gets Leave{STATE_MISMATCH, RECONNECT} as
        first message, and the client does a full reconnect."""
        await ws.prepare(request)
        session = None
        room = self.rooms.rooms.get(grant.room)
        if room is not None:
            for p in room.participants.values():
                if p.identity == claims.identity:
                    session = self.hub.sessions.get(p.sid)
        if session is None or not session.resumable:
            logger.info("cannot resume %s (sid %s): no live session; asking for a full "
                        "reconnect", claims.identity, sid or "-")
            leave = rtc_pb.LeaveRequest(reason=models_pb.DisconnectReason.STATE_MISMATCH,
                                        action=rtc_pb.LeaveRequest.Action.RECONNECT)
            if 0 < protocol <= 12:  # before LeaveRequest.action (livekit-server's gate)
                leave = rtc_pb.LeaveRequest(reason=models_pb.DisconnectReason.STATE_MISMATCH,
                                            can_reconnect=True)
            try:
                await asyncio.wait_for(ws.send_bytes(rtc_pb.SignalResponse(
                    leave=leave).SerializeToString()), 5.0)
                await asyncio.wait_for(ws.close(), 5.0)
            except Exception:
                logger.debug("refusing a resume: the WebSocket went away", exc_info=True)
            return ws
        logger.info("participant %s (%s) resumes its session", session.identity, session.sid)
        await session.resume(ws)
        return ws


def _query(query: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in query.items()}


def create_app(config: ServerConfig | None = None) -> web.Application:
    """An aiohttp application serving the dev server (for ``aiohttp.web.run_app``)."""
    return LiveKitServerApp(config or ServerConfig()).app
