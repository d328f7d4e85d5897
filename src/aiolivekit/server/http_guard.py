"""What the HTTP side of the server refuses before doing any work for a request.

* :func:`join_refusal`: a join token over livekit-server's limits (identity, room name,
  metadata, attributes: HTTP 400) or a room at its ``max_participants`` (HTTP 500 with
  livekit-server's text), before the WebSocket upgrade.
* :func:`read_twirp_body`: a RoomService body of at most ``limits.MAX_TWIRP_BODY`` bytes
  (413 from ``Content-Length`` alone, or as soon as a chunked body passes it), read within
  :data:`BODY_TIMEOUT` (408).

The connection-level guards (header and idle timeouts, the connection cap, 503 when the
server is out of connections or file descriptors) are in :mod:`.conn_guard`.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import web

from . import limits
from .auth import TokenClaims, VideoGrant
from .rooms import RoomManager

__all__ = ["BODY_TIMEOUT", "abort_websocket", "join_refusal", "read_twirp_body"]

logger = logging.getLogger(__name__)

BODY_TIMEOUT = 10.0
"""Seconds a client has to send a RoomService request body."""

_CORS = {"Access-Control-Allow-Origin": "*"}


def join_refusal(rooms: RoomManager, claims: TokenClaims,
                 grant: VideoGrant) -> web.Response | None:
    """The response refusing this join, or ``None`` to let it in."""
    why = limits.check_join(claims.identity, grant.room, metadata=claims.metadata,
                            attributes=claims.attributes)
    if why is not None:
        logger.info("refused join of %r: %s", claims.identity[:64], why)
        return web.Response(status=400, text=why, headers=_CORS)
    room = rooms.rooms.get(grant.room)
    if room is not None and limits.room_full(
            room.max_participants, [p.identity for p in room.participants.values()],
            claims.identity):
        logger.info("refused join of %r: room %s is full (%d)", claims.identity[:64],
                    room.name, room.max_participants)
        return web.Response(status=500, text=limits.MAX_PARTICIPANTS_EXCEEDED, headers=_CORS)
    return None


async def read_twirp_body(request: web.Request, limit: int = limits.MAX_TWIRP_BODY,
                          timeout: float = BODY_TIMEOUT) -> bytes | web.Response:
    """The request body, or the 413 / 408 response refusing it."""
    too_large = web.Response(status=413, text=f"request body larger than {limit} bytes",
                             headers={**_CORS, "Connection": "close"})
    if request.content_length is not None and request.content_length > limit:
        return too_large
    chunks: list[bytes] = []
    size = 0

    async def read() -> bool:
        nonlocal size
        while True:
            chunk = await request.content.read(64 * 1024)
            if not chunk:
                return True
            size += len(chunk)
            if size > limit:
                return False
            chunks.append(chunk)

    try:
        complete = await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        return web.Response(status=408, text="request body not received in time",
                            headers={**_CORS, "Connection": "close"})
    if not complete:
        return too_large
    return b"".join(chunks)


def abort_websocket(ws: web.WebSocketResponse) -> None:
    """Cut a WebSocket whose peer does not read: a close frame cannot be sent to it and
    the transport, which flushes before closing, would otherwise wait for it forever."""
    sock = ws.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        logger.debug("shutting the WebSocket's socket down failed", exc_info=True)
