"""Connection-level guards in front of aiohttp: a cap on open connections (a clean 503
beyond it, before the server runs out of file descriptors), a timeout for the first
request's headers (a client that connects and sends nothing, or half a header, is cut),
and accept errors (``EMFILE``) logged once a second as one warning instead of a
traceback each.

Idle keep-alive connections are closed by aiohttp after ``IDLE_TIMEOUT`` (its
``keepalive_timeout``, which :class:`DevServer` sets); idle WebSockets by their heartbeat.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from collections.abc import Callable
from typing import Any

__all__ = [
    "HEADER_TIMEOUT",
    "IDLE_TIMEOUT",
    "ConnectionGuard",
    "default_max_connections",
]

logger = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0
"""Seconds from accept to the end of the first request's headers."""
IDLE_TIMEOUT = 30.0
"""Seconds an idle keep-alive HTTP connection is kept (aiohttp ``keepalive_timeout``)."""
MAX_HEADER_BYTES = 64 * 1024
"""Header bytes watched for the end of the head (aiohttp refuses bigger heads anyway)."""
FDS_PER_CONNECTION = 6
"""File descriptors one participant may use: its TCP connection and the UDP sockets of
two peer connections (one per local address)."""
FD_RESERVE = 64

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 37\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
         b"server busy: too many open connections")


def default_max_connections() -> int:
    """Connections that fit in the process's file descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(8, (int(soft) - FD_RESERVE) // FDS_PER_CONNECTION)


class _Busy(asyncio.Protocol):
    """Answers 503 and closes: the connection over the cap."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class _Guarded(asyncio.Protocol):
    """Forwards everything to aiohttp's protocol; closes the connection if the first
    request's head is not complete within the header timeout."""

    def __init__(self, guard: ConnectionGuard, inner: Any) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._guard.open += 1
        self._timer = asyncio.get_running_loop().call_later(
            self._guard.header_timeout, self._header_timeout)
        self._inner.connection_made(transport)

    def _header_timeout(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._guard.header_timeouts += 1
            logger.info("closing a connection that sent no complete request head in %gs",
                        self._guard.header_timeout)
            self._transport.abort()

    def _head_done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._head = bytearray()

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            self._head += data[:MAX_HEADER_BYTES]
            if b"\r\n\r\n" in self._head or len(self._head) >= MAX_HEADER_BYTES:
                self._head_done()  # complete (or too big: aiohttp answers 4xx itself)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_done()
        self._guard.open -= 1
        self._transport = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ConnectionGuard:
    """A protocol factory for ``loop.create_server`` wrapping aiohttp's server."""

    def __init__(self, inner_factory: Callable[[], Any], *,
                 max_connections: int | None = None,
                 header_timeout: float = HEADER_TIMEOUT) -> None:
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if header_timeout <= 0:
            raise ValueError("header_timeout must be positive")
        self._inner_factory = inner_factory
        self.max_connections = max_connections or default_max_connections()
        self.header_timeout = header_timeout
        self.open = 0
        self.refused = 0
        self.header_timeouts = 0

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.max_connections:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                logger.warning("%d open connections (the cap): answering 503 (%d so far)",
                               self.open, self.refused)
            return _Busy()
        return _Guarded(self, self._inner_factory())


_last_accept_warning = 0.0


def accept_error_handler(loop: asyncio.AbstractEventLoop,
                         previous: Callable[..., Any] | None) -> Callable[..., None]:
    """A loop exception handler that turns asyncio's per-attempt accept() traceback
    (``EMFILE``/``ENFILE``/``ENOBUFS``/``ENOMEM``) into one warning a second."""

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        global _last_accept_warning
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE,
                                                      errno.ENOBUFS, errno.ENOMEM) \
                and "accept" in str(context.get("message", "")):
            now = lp.time()
            if now - _last_accept_warning >= 1.0:
                _last_accept_warning = now
                logger.warning("cannot accept connections: %s (the server retries)",
                               exc.strerror)
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    return handler
