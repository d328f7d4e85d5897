"""The room page and the room inspector of ``aiolivekit serve`` (docs/page.md).

Routes (all 404 when the page is off, :attr:`.config.ServerConfig.page_enabled`):

* ``GET /`` with ``Accept: text/html``: the room page (other clients still get ``OK``,
  the health answer of livekit-server);
* ``GET /inspect``: the inspector page; ``GET /static/{name}``: their files and the
  vendored livekit-client bundle (``static/vendor``, license kept);
* ``POST /dev/token`` (JSON ``room``, ``identity``, ``name?``, ``metadata?``,
  ``attributes?``, ``admin?``): a token signed with the public dev key, in dev mode only
  (403 otherwise: real keys are never used to mint tokens for whoever asks);
* ``GET /inspect/state`` (JSON) and ``GET /inspect/events`` (server-sent events, one
  snapshot per ``interval`` seconds): :class:`.inspector.Inspector` snapshots. Open in dev
  mode; otherwise a token with the ``roomList`` grant (``Authorization: Bearer`` or
  ``access_token=``) is needed.

Inspector actions go through the Twirp RoomService with an admin token.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
import warnings
from importlib import resources
from typing import Any

from aiohttp import web
from livekit import api

from . import limits
from .auth import AuthError, token_from_request, verify_token
from .config import DEV_API_KEY, DEV_API_SECRET, ServerConfig
from .inspector import Inspector

__all__ = ["MAX_EVENT_STREAMS", "PageRoutes", "static_files"]

logger = logging.getLogger(__name__)

MAX_EVENT_STREAMS = 16
"""Inspector event streams open at once (503 beyond)."""
WRITE_TIMEOUT = 10.0
TOKEN_TTL = 6 * 3600
MAX_TOKEN_BODY = 64 * 1024

_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
          ".txt": "text/plain", ".json": "application/json", ".LICENSE": "text/plain"}
STATIC = ("page.js", "page.css", "inspect.js", "vendor/livekit-client.umd.js",
          "vendor/livekit-client.LICENSE", "vendor/livekit-client.json",
          "vendor/THIRD_PARTY_LICENSES.txt")
"""The files ``/static/`` serves (nothing else of the package directory)."""


def static_files() -> dict[str, bytes]:
    """The page's files read from the installed package (``server/static``)."""
    root = resources.files(__package__ or "aiolivekit.server") / "static"
    return {name: root.joinpath(name).read_bytes()
            for name in ("index.html", "inspect.html", *STATIC)}


def _content_type(name: str) -> str:
    for suffix, ctype in _TYPES.items():
        if name.endswith(suffix):
            return ctype
    return "application/octet-stream"


class PageRoutes:
    """The page, static files, dev token endpoint and inspector feed of one server."""

    def __init__(self, config: ServerConfig, rooms: Any, sessions: Any) -> None:
        self.config = config
        self.inspector = Inspector(rooms, sessions)
        self._files: dict[str, bytes] | None = None
        self._streams = 0
        self._closing = asyncio.Event()

    def install(self, router: web.UrlDispatcher) -> None:
        router.add_get("/inspect", self._inspect_page)
        router.add_get("/inspect/state", self._state)
        router.add_get("/inspect/events", self._events)
        router.add_get("/static/{name:.+}", self._static)
        router.add_post("/dev/token", self._token)

    def close(self) -> None:
        """End the open event streams (server shutdown)."""
        self._closing.set()

    # ------------------------------------------------------------------ files

    def _file(self, name: str) -> bytes:
        if self._files is None:
            self._files = static_files()
        return self._files[name]

    def _html(self, name: str) -> web.Response:
        return web.Response(body=self._file(name), content_type="text/html", charset="utf-8",
                             headers={"Cache-Control": "no-cache"})

    async def root(self, request: web.Request) -> web.Response:
        """``/``: the page for a browser, ``OK`` for health checks."""
        if self.config.page_enabled and "text/html" in request.headers.get("Accept", ""):
            return self._html("index.html")
        return web.Response(text="OK")

    async def _inspect_page(self, request: web.Request) -> web.Response:
        if not self.config.page_enabled:
            raise web.HTTPNotFound()
        return self._html("inspect.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not self.config.page_enabled or name not in STATIC:
            raise web.HTTPNotFound()
        ctype = _content_type(name)
        return web.Response(body=self._file(name), content_type=ctype,
                            charset="utf-8" if ctype.startswith("text/") else None,
                            headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ dev tokens

    async def _token(self, request: web.Request) -> web.Response:
        if not self.config.page_enabled:
            raise web.HTTPNotFound()
        if not self.config.dev_mode:
            return _json_error(403, "tokens are minted only in dev mode (the public dev key); "
                                    "paste a token made with your own keys")
        if request.content_length is not None and request.content_length > MAX_TOKEN_BODY:
            return _json_error(413, "request body too large")
        try:
            body = json.loads(await asyncio.wait_for(request.read(), WRITE_TIMEOUT))
            token = mint_dev_token(body)
        except (ValueError, TypeError) as exc:
            return _json_error(400, str(exc))
        except asyncio.TimeoutError:
            return _json_error(408, "request body not received in time")
        host = request.host or f"127.0.0.1:{self.config.port}"
        identity = body.get("identity") or ("inspector" if body.get("admin") else "")
        return web.json_response({"token": token, "url": f"ws://{host}",
                                  "room": body.get("room", ""), "identity": identity})

    # ------------------------------------------------------------------ inspector feed

    def _authorize(self, request: web.Request) -> web.Response | None:
        if not self.config.page_enabled:
            raise web.HTTPNotFound()
        if self.config.dev_mode:
            return None
        try:
            token = token_from_request(request.headers.get("Authorization"),
                                       dict(request.query))
            if not token:
                raise AuthError(401, "a token with the roomList grant is needed")
            claims = verify_token(token, self.config.keys, time.time())
        except AuthError as exc:
            return _json_error(exc.status, str(exc))
        if claims.video is None or not claims.video.room_list:
            return _json_error(403, "the token has no roomList grant")
        return None

    async def _state(self, request: web.Request) -> web.Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        room = request.query.get("room") or None
        return web.json_response(self.inspector.snapshot(time.time(), room))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        try:
            interval = float(request.query.get("interval", "1"))
        except ValueError:
            return _json_error(400, "interval must be a number of seconds")
        if not 0.2 <= interval <= 10:
            return _json_error(400, "interval must be 0.2 .. 10 seconds")
        if self._streams >= MAX_EVENT_STREAMS:
            return _json_error(503, f"at most {MAX_EVENT_STREAMS} inspector streams at once")
        room = request.query.get("room") or None
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache",
                                               "Access-Control-Allow-Origin": "*"})
        self._streams += 1
        try:
            await asyncio.wait_for(response.prepare(request), WRITE_TIMEOUT)
            while not self._closing.is_set():
                data = json.dumps(self.inspector.snapshot(time.time(), room),
                                  separators=(",", ":"))
                await asyncio.wait_for(response.write(f"data: {data}\n\n".encode()),
                                       WRITE_TIMEOUT)
                try:
                    await asyncio.wait_for(self._closing.wait(), interval)
                except asyncio.TimeoutError:
                    pass
        except (ConnectionError, asyncio.TimeoutError) as exc:
            logger.debug("inspector stream ended: %r", exc)
        finally:
            self._streams -= 1
        return response


def mint_dev_token(body: Any) -> str:
    """A token signed with the public dev key for a ``/dev/token`` request body.

    ``admin: true`` gives an inspector token (``roomAdmin`` for ``room``, ``roomList``,
    ``roomCreate``; it cannot join); otherwise a join token for ``identity`` in ``room``.
    """
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    room, identity = body.get("room", ""), body.get("identity", "")
    admin = body.get("admin", False)
    if not isinstance(admin, bool):
        raise ValueError("admin must be true or false")
    for key, value, limit in (("room", room, limits.MAX_ROOM_NAME_LENGTH),
                              ("identity", identity, limits.MAX_IDENTITY_LENGTH)):
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        if len(value.encode()) > limit:
            raise ValueError(f"{key} is longer than {limit} bytes")
    name, metadata = body.get("name"), body.get("metadata")
    attributes = body.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()):
        raise ValueError("attributes must be an object of strings")
    for key, value in (("name", name), ("metadata", metadata)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
    try:
        limits.check_participant_fields(name=name or "", metadata=metadata or "",
                                        attributes=attributes)
    except limits.LimitExceeded as exc:
        raise ValueError(str(exc)) from None
    if admin:
        grants = api.VideoGrants(room_admin=True, room_list=True, room_create=True,
                                 room=room)
        identity = identity or "inspector"
    else:
        if not room or not identity:
            raise ValueError("room and identity are required")
        grants = api.VideoGrants(room_join=True, room=room, can_publish=True,
                                 can_subscribe=True, can_publish_data=True,
                                 can_update_own_metadata=True)
    token = (api.AccessToken(DEV_API_KEY, DEV_API_SECRET).with_identity(identity)
             .with_grants(grants).with_ttl(datetime.timedelta(seconds=TOKEN_TTL)))
    if name:
        token = token.with_name(name)
    if metadata:
        token = token.with_metadata(metadata)
    if attributes:
        token = token.with_attributes(attributes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the short dev secret
        return str(token.to_jwt())


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
