"""``DevServer``: the embedded LiveKit-compatible server, in-process, as an async context
manager."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any

from aiohttp import web

from . import conn_guard
from .announce import Announce
from .app import LiveKitServerApp
from .auth import make_token
from .config import DEV_API_KEY, DEV_API_SECRET, ForwardingOptions, ServerConfig

__all__ = ["DevServer"]

logger = logging.getLogger(__name__)


class DevServer:
    """A LiveKit-compatible server running in the current event loop.

    ``port=0`` picks a free port. ``keys`` (API key -> secret) replaces the single
    ``api_key``/``api_secret`` pair; the first key is the one :meth:`token` signs with.
    ``forwarding`` chooses the media forwarding paths (default: all fast paths, the
    read batching window of ``AIOLIVEKIT_READ_BATCH_MS``). ``departure_timeout``: seconds a
    participant whose signal dropped is kept for a resume (livekit-server: 20);
    ``ping_timeout``: seconds of signal silence that count as a lost signal.

    ``max_connections`` (default: what the file descriptor limit allows, see
    :func:`.conn_guard.default_max_connections`) caps open connections (503 beyond);
    ``header_timeout`` closes a connection whose first request head is incomplete after
    that many seconds; ``idle_timeout`` an idle keep-alive connection. ``announce``: test
    hook rewriting the ICE candidates the server signals (``server/announce.py``).
    ``page``: serve the room page and the inspector (``None``: only with the public dev
    key, docs/page.md).

    >>> async with DevServer() as server:          # doctest: +SKIP
    ...     token = server.token("alice")
    ...     await room.connect(server.url, token)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str = DEV_API_KEY,
                 api_secret: str = DEV_API_SECRET, keys: dict[str, str] | None = None,
                 forwarding: ForwardingOptions | None = None,
                 departure_timeout: float = 20.0, ping_timeout: float = 15.0, *,
                 max_connections: int | None = None,
                 header_timeout: float = conn_guard.HEADER_TIMEOUT,
                 idle_timeout: float = conn_guard.IDLE_TIMEOUT,
                 announce: Announce | None = None, page: bool | None = None) -> None:
        if forwarding is not None and not isinstance(forwarding, ForwardingOptions):
            raise TypeError(f"forwarding must be ForwardingOptions, not {type(forwarding).__name__}")
        if keys:
            api_key, api_secret = next(iter(keys.items()))
        self.host = host
        self.api_key = api_key
        self.api_secret = api_secret
        self._config = ServerConfig(host=host, port=port,
                                    keys=dict(keys) if keys else {api_key: api_secret},
                                    forwarding=forwarding or ForwardingOptions(),
                                    departure_timeout=departure_timeout,
                                    ping_timeout=ping_timeout, announce=announce,
                                    page=page)
        self._requested_port = port
        self._guard_options = {"max_connections": max_connections,
                               "header_timeout": header_timeout}
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        self._idle_timeout = idle_timeout
        self.guard: conn_guard.ConnectionGuard | None = None
        self._listener: asyncio.Server | None = None
        self._port: int | None = None
        self._accept_handler: Any = None
        self._previous_handler: Any = None
        self._server: LiveKitServerApp | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> DevServer:
        """Bind and start serving."""
        if self._runner is not None:
            return self
        self._server = LiveKitServerApp(self._config)
        runner = web.AppRunner(self._server.app, handle_signals=False, access_log=None,
                               shutdown_timeout=5.0, keepalive_timeout=self._idle_timeout)
        await runner.setup()
        assert runner.server is not None
        guard = conn_guard.ConnectionGuard(runner.server, **self._guard_options)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(
                guard, self.host, self._requested_port, reuse_address=True, backlog=512)
        except BaseException:
            await runner.cleanup()
            raise
        self._previous_handler = loop.get_exception_handler()
        self._accept_handler = conn_guard.accept_error_handler(loop, self._previous_handler)
        loop.set_exception_handler(self._accept_handler)
        self.guard = guard
        self._runner = runner
        addresses = self._addresses()
        self._port = addresses[0][1] if addresses else self._requested_port
        self._config.port = self._port
        logger.info("aiolivekit dev server listening on %s", self.url)
        return self

    async def aclose(self) -> None:
        """Disconnect everyone (Leave SERVER_SHUTDOWN) and stop serving."""
        runner, self._runner = self._runner, None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            loop = asyncio.get_running_loop()
            if loop.get_exception_handler() is self._accept_handler:
                loop.set_exception_handler(self._previous_handler)
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> DevServer:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("DevServer is not started")
        return self._port

    @property
    def _host_for_url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return host

    def _addresses(self) -> list[tuple[Any, ...]]:
        sockets = self._listener.sockets if self._listener is not None else ()
        return [tuple(sock.getsockname()) for sock in sockets]

    @property
    def bound_urls(self) -> list[str]:
        """``ws://host:port`` of every socket actually listening (``0.0.0.0`` stays
        ``0.0.0.0``: the server is reachable on every interface)."""
        if self._runner is None:
            raise RuntimeError("DevServer is not started")
        out = []
        for addr in self._addresses():
            host, port = str(addr[0]), int(addr[1])
            out.append(f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}")
        return out

    @property
    def url(self) -> str:
        """``ws://host:port`` for clients."""
        return f"ws://{self._host_for_url}:{self.port}"

    @property
    def http_url(self) -> str:
        """``http://host:port`` for the server API."""
        return f"http://{self._host_for_url}:{self.port}"

    @property
    def page_url(self) -> str:
        """``http://host:port/``: the room page (served when ``page`` is on)."""
        return self.http_url + "/"

    @property
    def app(self) -> LiveKitServerApp:
        if self._server is None:
            raise RuntimeError("DevServer is not started")
        return self._server

    # ------------------------------------------------------------------ tokens

    def token(
        self,
        identity: str,
        room: str = "test-room",
        *,
        name: str | None = None,
        metadata: str | None = None,
        attributes: dict[str, str] | None = None,
        can_publish: bool = True,
        can_subscribe: bool = True,
        can_publish_data: bool = True,
        can_update_metadata: bool = True,
        can_publish_sources: list[str] | None = None,
        hidden: bool = False,
        room_admin: bool = False,
        ttl: float = 3600,
    ) -> str:
        """Mint a join token for ``identity`` in ``room`` signed with this server's key."""
        return make_token(
            self.api_key, self.api_secret, identity, room, name=name, metadata=metadata,
            attributes=attributes, can_publish=can_publish, can_subscribe=can_subscribe,
            can_publish_data=can_publish_data, can_update_metadata=can_update_metadata,
            can_publish_sources=can_publish_sources, hidden=hidden, room_admin=room_admin,
            ttl=ttl,
        )

    def __repr__(self) -> str:
        state: Any = self.url if self._port is not None else "stopped"
        return f"<DevServer {state}>"
