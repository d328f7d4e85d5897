"""Batched reading of many UDP sockets: one event-loop reader, and a poll timer while
traffic is dense (what NAPI does for network cards), with the batch's sends at its end.

The forwarder's sockets (two ICE sockets or more per participant) get one epoll set of
their own, watched by the event loop through its file descriptor. While datagrams come
at two or more per window (measured over 100 ms), the set is read on a timer instead:
every ``window`` seconds, all sockets are read until none has a datagram left; below
1.5 per window the event loop's reader takes over again. The forwarder puts the
datagrams it forwards during a batch in :attr:`ReadBatcher.sends`, sent back to back
once all reads are done.

Why: each loopback ``sendto`` wakes a subscriber's process, which may take this CPU (and
its caches) at once. Sent per incoming packet, every packet's forwarding work starts
cold; batched, a 10-participant audio room costs one wake-up per window instead of one
per packet, and the forwarding work of the whole batch runs before any send (in
``bench/bench_server.py``, about +15 % packets per core with the default 5-ms window,
+30 % with 10 ms). A datagram waits at most one window longer than it would have;
sparser traffic (below 400 datagrams/s with 5 ms) is read at once, as before.

Linux only (``select.epoll``); :func:`batcher_for` returns ``None`` elsewhere, and the
callers keep one event-loop reader per socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import weakref
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["ReadBatcher", "batcher_for", "send_all", "window_from_env", "window_seconds"]

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_MS = 5.0
MAX_WINDOW_MS = 100.0


def window_seconds(ms: float) -> float:
    """A batching window given in milliseconds, in seconds; ``ValueError`` outside
    0..:data:`MAX_WINDOW_MS` (0: no batching)."""
    if not 0 <= ms <= MAX_WINDOW_MS:
        raise ValueError(f"the read batching window must be 0..{MAX_WINDOW_MS:g} ms, not {ms}")
    return ms / 1000.0


def window_from_env() -> float:
    """The window of ``AIOLIVEKIT_READ_BATCH_MS`` in seconds (the default of
    :attr:`~aiolivekit.server.config.ForwardingOptions.read_batch_window`)."""
    text = os.environ.get("AIOLIVEKIT_READ_BATCH_MS", "")
    if text:
        try:
            return window_seconds(float(text))
        except ValueError:
            logger.warning("AIOLIVEKIT_READ_BATCH_MS=%r is not 0..%g ms; using %g ms",
                           text, MAX_WINDOW_MS, DEFAULT_WINDOW_MS)
    return window_seconds(DEFAULT_WINDOW_MS)


# bounds per wake-up: epoll rounds, and events per round
_MAX_ROUNDS = 64
_MAX_EVENTS = 256
# the datagram rate is measured over periods of this length (seconds) ...
_RATE_PERIOD = 0.1
# ... and the timer reads from this many datagrams per window on, down to the second
_POLL_FROM = 2.0
_POLL_DOWN_TO = 1.5

ReadOne = Callable[[], None]
"""Reads (at most) one datagram of its socket and handles it."""


class SendOwner(Protocol):
    dropped_socket: int  # datagrams the socket refused


PendingSend = tuple[Callable[[Any, Any], Any], Any, Any, SendOwner]
"""``(sendto, datagram, address, owner)``: ``sendto(datagram, address)`` at the batch's
end; an ``OSError`` (full socket buffer) counts in ``owner.dropped_socket``."""

def send_all(sends: list[PendingSend]) -> None:
    """Send each pending datagram; one the socket refuses counts in its owner's
    ``dropped_socket``."""
    for sendto, datagram, addr, owner in sends:
        try:
            sendto(datagram, addr)
        except OSError:  # includes BlockingIOError: the socket buffer is full
            owner.dropped_socket += 1


# the batchers of each loop, one per window (servers of one loop usually share one)
_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, ReadBatcher]] = (
    weakref.WeakKeyDictionary()
)


def batcher_for(loop: asyncio.AbstractEventLoop, window: float) -> ReadBatcher | None:
    """The loop's batcher for ``window`` seconds (created on first use); ``None`` where
    batching is off (``window`` 0) or unavailable (no epoll, not a selector event loop)."""
    if window <= 0 or not hasattr(select, "epoll"):
        return None
    if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        return None
    per_window = _batchers.get(loop)
    if per_window is None:
        per_window = _batchers[loop] = {}
    batcher = per_window.get(window)
    if batcher is None or batcher.closed:
        batcher = per_window[window] = ReadBatcher(loop, window)
    return batcher


def loop_batchers(loop: asyncio.AbstractEventLoop) -> list[ReadBatcher]:
    """The open batchers of ``loop``."""
    return [b for b in _batchers.get(loop, {}).values() if not b.closed]


class ReadBatcher:
    """Reads registered sockets on readiness, or on a timer while they are busy."""

    def __init__(self, loop: asyncio.AbstractEventLoop, window: float) -> None:
        self._loop = loop
        self._window = window
        self._epoll = select.epoll()
        self._fd = self._epoll.fileno()
        self._readers: dict[int, tuple[Any, ReadOne]] = {}  # fd -> (socket, read_one)
        self._timer: asyncio.TimerHandle | None = None
        self._period_start = self._loop.time()
        self._period_datagrams = 0
        self.per_window = 0.0  # datagrams per window, over the last rate period
        self.batching = False  # inside a batch: forwarded datagrams go to ``sends``
        self.sends: list[PendingSend] = []
        self._errors = 0
        self.closed = False
        self.wakeups = 0  # event-loop wake-ups and ticks that read the sockets
        self.datagrams = 0  # datagrams read
        self._loop.add_reader(self._fd, self._on_ready)

    @property
    def polling(self) -> bool:
        """Whether the sockets are being read on the timer (dense traffic)."""
        return self._timer is not None

    def __len__(self) -> int:
        return len(self._readers)

    def add(self, sock: Any, read_one: ReadOne) -> None:
        """Call ``read_one()`` whenever ``sock`` has a datagram (until :meth:`remove`)."""
        self._prune()
        fd = sock.fileno()
        try:
            self._epoll.register(fd, select.EPOLLIN)
        except FileExistsError:
            self._epoll.modify(fd, select.EPOLLIN)
        self._readers[fd] = (sock, read_one)

    def _prune(self) -> None:
        """Forget sockets closed without :meth:`remove` (epoll dropped them itself)."""
        for fd, (sock, _) in list(self._readers.items()):
            if sock.fileno() != fd:
                del self._readers[fd]

    def remove(self, sock: Any) -> None:
        """Stop reading ``sock`` (also safe after the socket was closed)."""
        for fd, (known, _) in list(self._readers.items()):
            if known is sock:
                del self._readers[fd]
                try:
                    self._epoll.unregister(fd)
                except (OSError, ValueError):  # closed already: epoll forgot it itself
                    pass
        if not self._readers:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        else:
            self._loop.remove_reader(self._fd)
        self._epoll.close()
        self._readers.clear()

    def _on_ready(self) -> None:
        """Event-loop reader: a socket has a datagram."""
        now = self._loop.time()
        self._measure(now, self._read_all())
        if self.per_window >= _POLL_FROM and not self.closed:
            # dense traffic: read on the timer while it lasts
            self._loop.remove_reader(self._fd)
            self._timer = self._loop.call_at(now + self._window, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self._loop.time()
        self._measure(now, self._read_all())
        if self.closed:
            return
        if self.per_window >= _POLL_DOWN_TO:
            self._timer = self._loop.call_at(now + self._window, self._tick)
        else:
            self._loop.add_reader(self._fd, self._on_ready)

    def _measure(self, now: float, read: int) -> None:
        """Count ``read`` datagrams; at the end of a rate period, update ``per_window``."""
        self._period_datagrams += read
        elapsed = now - self._period_start
        if elapsed >= _RATE_PERIOD:
            self.per_window = self._period_datagrams * self._window / elapsed
            self._period_start = now
            self._period_datagrams = 0

    def _read_all(self) -> int:
        """Read every socket until none has a datagram, then send what the readers
        forwarded; the number of datagrams read."""
        self.wakeups += 1
        self.batching = True
        try:
            read = self._read_rounds()
        finally:
            self.batching = False
            self._send_pending()
        self.datagrams += read
        return read

    def _send_pending(self) -> None:
        sends = self.sends
        if sends:
            send_all(sends)
            sends.clear()

    def _read_rounds(self) -> int:
        read = 0
        poll = self._epoll.poll
        readers = self._readers
        for _ in range(_MAX_ROUNDS):
            try:
                events = poll(0, _MAX_EVENTS)
            except (OSError, ValueError):  # closed by a reader's callback
                break
            if not events:
                break
            for fd, _mask in events:
                entry = readers.get(fd)
                if entry is None:
                    continue
                read += 1
                try:
                    entry[1]()
                except Exception:  # a reader's failure must not stop the others
                    self._errors += 1
                    if self._errors <= 5:
                        logger.exception("socket reader failed")
        return read
