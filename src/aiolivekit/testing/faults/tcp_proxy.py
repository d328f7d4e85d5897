"""A TCP proxy for the signal connection (WebSocket over TCP) that can cut, stall and refuse.

``TcpProxy(target)`` listens on a loopback port and opens one connection to ``target`` per
accepted client, copying bytes both ways in chunks. While :meth:`TcpProxy.stall` is in force
nothing is forwarded but the connections stay open (each direction holds at most one chunk;
the rest waits in the kernel's buffers, so the sender feels back-pressure). :meth:`cut` resets
both sides of every connection at once (``SO_LINGER`` 0: an RST, not a FIN).
:meth:`refuse` makes new connections fail: ``"reset"`` accepts and resets them, ``"closed"``
stops listening (connection refused) until :meth:`accept` listens again on the same port.

Every read and write has a timeout; a connection idle longer than ``idle_timeout`` or older
than ``max_lifetime`` is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Literal

from .addresses import check_address

__all__ = ["ProxyStats", "TcpProxy"]

logger = logging.getLogger(__name__)

CHUNK = 65536
CONNECT_TIMEOUT = 5.0
DRAIN_TIMEOUT = 10.0


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    connect_failures: int = 0
    cuts: int = 0
    bytes_up: int = 0      # client -> target
    bytes_down: int = 0    # target -> client


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (linger 0) when the socket is still there, else just close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport = writer.transport
    with contextlib.suppress(Exception):
        transport.abort()


class _Connection:
    def __init__(self, proxy: TcpProxy, c_reader: asyncio.StreamReader,
                 c_writer: asyncio.StreamWriter, t_reader: asyncio.StreamReader,
                 t_writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = (c_reader, c_writer)
        self.target = (t_reader, t_writer)
        self.tasks: list[asyncio.Task[None]] = []
        self.generation = proxy._cut_generation

    def start(self) -> None:
        self.tasks = [
            asyncio.ensure_future(self._pump(self.client[0], self.target[1], "up")),
            asyncio.ensure_future(self._pump(self.target[0], self.client[1], "down")),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: Literal["up", "down"]) -> None:
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        deadline = loop.time() + proxy.max_lifetime
        try:
            while loop.time() < deadline:
                remaining = deadline - loop.time()
                data = await asyncio.wait_for(reader.read(CHUNK),
                                              min(proxy.idle_timeout, remaining))
                if not data:
                    break
                # a stall holds this chunk; the bound is the proxy's lifetime
                await asyncio.wait_for(proxy._flowing.wait(), max(0.0, deadline - loop.time()))
                if proxy._cut_generation != self.generation:
                    return
                writer.write(data)
                await asyncio.wait_for(writer.drain(), DRAIN_TIMEOUT)
                if direction == "up":
                    proxy.stats.bytes_up += len(data)
                else:
                    proxy.stats.bytes_down += len(data)
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()
        except (asyncio.TimeoutError, OSError, ConnectionError):
            self.abort()
        except asyncio.CancelledError:
            raise

    def abort(self) -> None:
        _reset(self.client[1])
        _reset(self.target[1])

    async def wait_closed(self, timeout: float) -> None:
        if not self.tasks:
            return
        _done, pending = await asyncio.wait(self.tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(task, 1.0)


class TcpProxy:
    """Loopback TCP proxy with fault switches; use as ``async with TcpProxy(target) as p``."""

    def __init__(self, target: tuple[str, int], *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, idle_timeout: float = 300.0,
                 max_lifetime: float = 3600.0, max_connections: int = 64) -> None:
        self.target = (check_address(target[0], "target"), int(target[1]))
        self.listen_host = check_address(listen_host, "listen address")
        self.port = listen_port
        if idle_timeout <= 0 or max_lifetime <= 0 or max_connections < 1:
            raise ValueError("idle_timeout, max_lifetime and max_connections must be positive")
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.max_connections = max_connections
        self.stats = ProxyStats()
        self._server: asyncio.AbstractServer | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refuse: Literal["reset"] | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._cut_generation = 0

    @property
    def address(self) -> tuple[str, int]:
        return self.listen_host, self.port

    def url(self, scheme: str = "ws") -> str:
        """``ws://host:port`` of the proxy (what a client connects to instead of the server)."""
        return f"{scheme}://{self.listen_host}:{self.port}"

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    @property
    def connections(self) -> int:
        return len(self._connections)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> TcpProxy:
        await self.accept()
        return self

    async def accept(self) -> None:
        """Listen (again) and accept new connections normally."""
        self._refuse = None
        if self._server is None:
            self._server = await asyncio.wait_for(asyncio.start_server(
                self._on_client, self.listen_host, self.port, reuse_address=True), 5.0)
            self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        await self._stop_listening()
        self._flowing.set()
        await self._abort_all()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(task, 2.0)

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    # ------------------------------------------------------------------ faults

    def stall(self) -> None:
        """Stop forwarding in both directions; connections stay open."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again what was held, then everything new."""
        self._flowing.set()

    async def cut(self) -> int:
        """Reset both sides of every open connection at once; returns how many were cut."""
        count = await self._abort_all()
        self.stats.cuts += count
        return count

    async def _abort_all(self) -> int:
        conns = list(self._connections)
        self._cut_generation += 1
        for conn in conns:
            conn.abort()
        for conn in conns:
            await conn.wait_closed(2.0)
        return len(conns)

    async def refuse(self, mode: Literal["reset", "closed"] = "reset") -> None:
        """New connections fail: reset after accept, or refused (not listening)."""
        if mode == "reset":
            if self._server is None:
                await self.accept()
            self._refuse = "reset"
        elif mode == "closed":
            await self._stop_listening()
        else:
            raise ValueError(f"mode must be 'reset' or 'closed', got {mode!r}")

    async def refuse_for(self, seconds: float, mode: Literal["reset", "closed"] = "reset") -> None:
        """:meth:`refuse` for ``seconds`` (at most 600), then :meth:`accept`."""
        if not 0 <= seconds <= 600:
            raise ValueError("refuse_for lasts 0..600 s")
        await self.refuse(mode)
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.accept()

    # ------------------------------------------------------------------ connections

    async def _on_client(self, c_reader: asyncio.StreamReader,
                         c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._serve(c_reader, c_writer)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _serve(self, c_reader: asyncio.StreamReader,
                     c_writer: asyncio.StreamWriter) -> None:
        if self._refuse == "reset" or len(self._connections) >= self.max_connections:
            self.stats.refused += 1
            _reset(c_writer)
            return
        try:
            t_reader, t_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            self.stats.connect_failures += 1
            _reset(c_writer)
            return
        self.stats.accepted += 1
        conn = _Connection(self, c_reader, c_writer, t_reader, t_writer)
        self._connections.add(conn)
        conn.start()
        try:
            await conn.wait_closed(self.max_lifetime + 5.0)
        finally:
            self._connections.discard(conn)
            conn.abort()
