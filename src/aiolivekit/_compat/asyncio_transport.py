"""asyncio internals (CPython 3.11 - 3.13): the selector datagram transport, and
a coroutine's steps driven by hand.

The forwarder's receive tap reads a UDP socket itself in place of asyncio's
``_SelectorDatagramTransport``: it needs the transport's socket and file descriptor,
and swaps the event loop's reader callback for that descriptor (the public
``add_reader`` refuses a descriptor a transport owns). Everything of that lives here,
and :func:`finish_coroutine` (a handler coroutine whose first step ran synchronously
finished like a task: it clears a future's ``_asyncio_future_blocking``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

try:
    from asyncio.selector_events import _SelectorDatagramTransport  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - another asyncio
    _SelectorDatagramTransport = None

__all__ = [
    "datagram_socket",
    "direct_sendto",
    "finish_coroutine",
    "give_back_reader",
    "readable_by_us",
    "remove_transport_reader",
    "replace_transport_reader",
]


def readable_by_us(transport: Any) -> bool:
    """Whether ``transport`` is an open asyncio selector datagram transport whose socket
    we can read ourselves (not on the proactor loop, nor uvloop)."""
    if _SelectorDatagramTransport is None or not isinstance(
        transport, _SelectorDatagramTransport
    ):
        return False
    loop = getattr(transport, "_loop", None)
    return (
        isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)
        and isinstance(getattr(transport, "_sock", None), socket.socket)
        and isinstance(getattr(transport, "_sock_fd", None), int)
        and callable(getattr(transport, "_read_ready", None))
        and callable(getattr(loop, "_add_reader", None))
        and not transport.is_closing()
    )


def datagram_socket(transport: Any) -> socket.socket:
    """The UDP socket of a transport :func:`readable_by_us` accepted (``_sock``)."""
    sock: socket.socket = transport._sock
    return sock


def transport_loop(transport: Any) -> asyncio.AbstractEventLoop:
    """The event loop a transport :func:`readable_by_us` accepted runs on (``_loop``)."""
    loop: asyncio.AbstractEventLoop = transport._loop
    return loop


def replace_transport_reader(transport: Any, callback: Callable[..., Any], *args: Any) -> None:
    """Make the loop call ``callback(*args)`` instead of the transport's ``_read_ready``
    when its socket is readable (``loop._add_reader(transport._sock_fd, ...)``)."""
    transport._loop._add_reader(transport._sock_fd, callback, *args)


def remove_transport_reader(transport: Any) -> None:
    """Stop the loop watching the transport's socket (``loop._remove_reader``)."""
    transport._loop._remove_reader(transport._sock_fd)


def give_back_reader(transport: Any) -> None:
    """Hand reading back to the transport's own ``_read_ready`` (unless it is closing)."""
    if not transport.is_closing():
        transport._loop._add_reader(transport._sock_fd, transport._read_ready)


def direct_sendto(transport: Any) -> Callable[[bytes, Any], Any]:
    """The fastest ``sendto(data, addr)`` for a datagram transport: the socket's own
    method while asyncio has nothing buffered (it only buffers after EAGAIN; a full
    socket buffer then raises and the packet is dropped, as a real network would), else
    the transport's."""
    sock = getattr(transport, "_sock", None)
    if sock is not None and not getattr(transport, "_buffer", None):
        sendto: Callable[[bytes, Any], Any] = sock.sendto
        return sendto
    sendto = transport.sendto
    return sendto


async def finish_coroutine(coro: Any, waiting: Any) -> None:
    """Drive ``coro``, suspended on ``waiting`` (an asyncio future, or ``None`` for a bare
    yield) after its first step, to its end the way an asyncio task would."""
    while True:
        if waiting is not None:
            waiting._asyncio_future_blocking = False
            await asyncio.wait((waiting,))
        else:
            await asyncio.sleep(0)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
