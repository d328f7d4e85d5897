"""A user-space UDP relay that impairs traffic between WebRTC clients and a server.

The kernels the suite runs on have no ``netem``, so loss, delay, jitter and blackholes are
made here. A *route* is one front socket (the address the server announces in its ICE
candidates, e.g. ``127.0.0.2:P``) forwarding to one target (the server's real socket, e.g.
``127.0.0.1:P``). For each client address that sends to the front, the relay opens one
upstream socket connected to the target, so the server sees one distinct source per client
(a peer-reflexive candidate); what the target sends back on that socket goes out of the front
socket to that client. Datagrams toward the target pass the ``up`` impairment, the replies
the ``down`` one (a route made with ``toward_target="down"`` swaps them: a front that stands
for a client in front of the server).

Both impairments can be changed while traffic flows (:meth:`UdpRelay.configure`,
:meth:`UdpRelay.outage`). Delivery order is stable: datagrams due at the same time leave in
arrival order, so without ``reorder`` a flow keeps its order.

Sockets are plain non-blocking sockets read with ``loop.add_reader``; every read burst and
every timer run is bounded by a count, and the number of clients and of datagrams waiting
for delivery are capped (what does not fit is dropped and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import itertools
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from .addresses import check_address, is_allowed_address
from .core import Impairment, ImpairmentConfig

__all__ = ["Direction", "RelayStats", "Route", "UdpRelay"]

logger = logging.getLogger(__name__)

Direction = Literal["up", "down"]
Addr = tuple[str, int]

READ_BURST = 256          # datagrams read per readiness callback
RUN_BURST = 2048          # datagrams sent per timer run
MAX_DATAGRAM = 65535


@dataclass
class RelayStats:
    """Shell-level counts (the impairment counts are in ``relay.up.stats`` / ``down.stats``)."""

    received: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    sent: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    overflow: int = 0          # dropped: too many datagrams waiting for delivery
    too_many_clients: int = 0  # dropped: a route's client limit was reached
    foreign: int = 0           # dropped: source or destination outside the allowed networks
    send_errors: int = 0
    recv_errors: int = 0


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _Upstream:
    """One client's socket toward a route's target."""

    def __init__(self, route: Route, client: Addr, sock: socket.socket) -> None:
        self.route = route
        self.client = client
        self.sock = sock
        self.address: Addr = sock.getsockname()[:2]


class Route:
    """One front socket forwarding to one target (see the module docstring)."""

    def __init__(self, relay: UdpRelay, front: socket.socket, target: Addr,
                 toward_target: Direction, label: str) -> None:
        self.relay = relay
        self.front = front
        self.target = target
        self.toward_target: Direction = toward_target
        self.toward_client: Direction = "down" if toward_target == "up" else "up"
        self.label = label
        self.address: Addr = front.getsockname()[:2]
        self.clients: dict[Addr, _Upstream] = {}
        # per-route impairments; None: the relay's shared ones
        self.up: Impairment | None = None
        self.down: Impairment | None = None
        # per-client impairments (by the client's address) over the route's own
        self.client_impairments: dict[tuple[Addr, Direction], Impairment] = {}

    def configure(self, *, up: ImpairmentConfig | None = None,
                  down: ImpairmentConfig | None = None, seed: int = 0) -> None:
        """Give this route its own impairment for a direction (the relay's is used otherwise).

        E.g. loss only toward one subscriber: that subscriber's route gets ``down``.
        """
        if up is not None:
            if self.up is None:
                self.up = Impairment(up, seed=seed)
            else:
                self.up.configure(up)
        if down is not None:
            if self.down is None:
                self.down = Impairment(down, seed=seed + 1)
            else:
                self.down.configure(down)

    def impairment(self, direction: Direction, client: Addr | None = None) -> Impairment:
        if client is not None and self.client_impairments:
            mine = self.client_impairments.get((client, direction))
            if mine is not None:
                return mine
        own = self.up if direction == "up" else self.down
        return own if own is not None else self.relay.impairment(direction)

    def configure_client(self, client: Addr, *, up: ImpairmentConfig | None = None,
                         down: ImpairmentConfig | None = None, seed: int = 0) -> None:
        """Give one client of this route its own impairment for a direction (e.g. a
        clean path for a control participant while the others' is impaired)."""
        todo: list[tuple[Direction, ImpairmentConfig | None, int]] = [
            ("up", up, seed), ("down", down, seed + 1)]
        for direction, cfg, s in todo:
            if cfg is None:
                continue
            key: tuple[Addr, Direction] = (client, direction)
            if key in self.client_impairments:
                self.client_impairments[key].configure(cfg)
            else:
                self.client_impairments[key] = Impairment(cfg, seed=s)

    def upstream_addresses(self) -> dict[Addr, Addr]:
        """Client address -> the relay's socket address that the target sees for it."""
        return {client: up.address for client, up in self.clients.items()}


class UdpRelay:
    """Impairing UDP relay; use as ``async with UdpRelay(...) as relay``.

    ``listen_host`` is where front sockets bind (the address the server announces),
    ``upstream_host`` where the per-client upstream sockets bind. Both, and every target,
    must be loopback or in 10.203.0.0/24.
    """

    def __init__(self, *, listen_host: str = "127.0.0.2", upstream_host: str = "127.0.0.1",
                 up: ImpairmentConfig | None = None, down: ImpairmentConfig | None = None,
                 seed: int = 0, max_clients: int = 64, max_pending: int = 20000) -> None:
        self.listen_host = check_address(listen_host, "listen address")
        self.upstream_host = check_address(upstream_host, "upstream bind address")
        if max_clients < 1 or max_pending < 1:
            raise ValueError("max_clients and max_pending must be positive")
        self.up = Impairment(up, seed=seed)
        self.down = Impairment(down, seed=seed + 1)
        self.max_clients = max_clients
        self.max_pending = max_pending
        self.stats = RelayStats()
        self.routes: list[Route] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heap: list[tuple[float, int, socket.socket, bytes, Addr | None, Direction]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._outage_tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> UdpRelay:
        self._loop = asyncio.get_running_loop()
        return self

    async def close(self) -> None:
        """Close every socket; datagrams still waiting are discarded."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._outage_tasks):
            task.cancel()
        for task in list(self._outage_tasks):
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(task, 1.0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
        for sock in list(self._sockets()):
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self.routes.clear()

    async def __aenter__(self) -> UdpRelay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _sockets(self) -> Iterator[socket.socket]:
        for route in self.routes:
            yield route.front
            for up in route.clients.values():
                yield up.sock

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("UdpRelay is not started (use 'async with UdpRelay(...)')")
        if self._closed:
            raise RuntimeError("UdpRelay is closed")
        return self._loop

    # ------------------------------------------------------------------ routes

    async def add_route(self, target: Addr, *, listen_port: int = 0,
                        toward_target: Direction = "up", label: str = "") -> Addr:
        """Open a front socket on ``listen_host:listen_port`` forwarding to ``target``.

        Returns the front address (what the server must announce). ``listen_port=0`` picks a
        free port; a server with one UDP port (livekit-server's ``rtc.udp_port``) is usually
        fronted on the same port number at another loopback address.
        """
        return self.route_now(target, listen_port=listen_port, toward_target=toward_target,
                              label=label).address

    def route_now(self, target: Addr, *, listen_port: int = 0,
                  toward_target: Direction = "up", label: str = "") -> Route:
        """:meth:`add_route` without awaiting (binding a UDP socket does not block); returns
        the :class:`Route`. Usable from a server's synchronous signalling path."""
        loop = self._require_loop()
        host = check_address(target[0], "target")
        port = int(target[1])
        if not 0 < port < 65536:
            raise ValueError(f"bad target port {target[1]!r}")
        if toward_target not in ("up", "down"):
            raise ValueError(f"toward_target must be 'up' or 'down', got {toward_target!r}")
        front = _bound_socket(self.listen_host, listen_port)
        route = Route(self, front, (host, port), toward_target, label)
        self.routes.append(route)
        loop.add_reader(front.fileno(), self._on_front_readable, route)
        logger.debug("relay route %s -> %s (%s)", route.address, route.target, toward_target)
        return route

    def ensure_route(self, target: Addr, *, toward_target: Direction = "up",
                     label: str = "") -> Route:
        """The route for ``target``, added on first use (synchronous).

        Made for a server that gathers a new UDP port per peer connection (our embedded
        server): its candidate-announcing hook calls this for every host candidate.
        """
        key = (check_address(target[0], "target"), int(target[1]))
        for route in self.routes:
            if route.target == key and route.toward_target == toward_target:
                return route
        return self.route_now(key, toward_target=toward_target, label=label)

    def announce(self, host: str, port: int) -> tuple[str, int]:
        """``(host, port)`` of a server candidate -> the relay address to announce instead.

        The shape of the hook a server needs for tests (see docs/faults.md).
        """
        return self.ensure_route((host, port)).address

    async def mirror_ports(self, target_host: str, ports: range | list[int]) -> list[Addr]:
        """One route per port: ``listen_host:p`` -> ``target_host:p`` (at most 1024 ports).

        For a server whose UDP ports are known in advance and which announces another IP with
        the same ports (livekit-server's ``rtc.node_ip`` with ``rtc.udp_port``, or a range).
        """
        if len(ports) > 1024:
            raise ValueError("mirror at most 1024 ports")
        return [await self.add_route((target_host, p), listen_port=p) for p in ports]

    # ------------------------------------------------------------------ run-time control

    def impairment(self, direction: Direction) -> Impairment:
        if direction == "up":
            return self.up
        if direction == "down":
            return self.down
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")

    def configure(self, *, up: ImpairmentConfig | None = None,
                  down: ImpairmentConfig | None = None) -> None:
        """Replace one or both directions' configuration (effective for the next datagram)."""
        if up is not None:
            self.up.configure(up)
        if down is not None:
            self.down.configure(down)

    def set_blackhole(self, on: bool, direction: Direction | Literal["both"] = "both") -> None:
        """Drop everything (``on``) or heal, in one direction or both (routes' own too)."""
        dirs: tuple[Direction, ...] = ("up", "down") if direction == "both" else (direction,)
        for d in dirs:
            imps = [self.impairment(d)] + [r.impairment(d) for r in self.routes]
            for imp in {id(i): i for i in imps}.values():
                imp.configure(imp.config.with_(blackhole=on))

    async def outage(self, seconds: float,
                     direction: Direction | Literal["both"] = "both") -> None:
        """Blackhole for ``seconds`` (at most 600), then heal."""
        if not 0 <= seconds <= 600:
            raise ValueError("an outage lasts 0..600 s")
        self.set_blackhole(True, direction)
        try:
            await asyncio.sleep(seconds)
        finally:
            if not self._closed:
                self.set_blackhole(False, direction)

    def start_outage(self, seconds: float,
                     direction: Direction | Literal["both"] = "both") -> asyncio.Task[None]:
        """:meth:`outage` as a task the relay owns (cancelled by :meth:`close`)."""
        self._require_loop()
        task = asyncio.ensure_future(self.outage(seconds, direction))
        self._outage_tasks.add(task)
        task.add_done_callback(self._outage_tasks.discard)
        return task

    # ------------------------------------------------------------------ datagram paths

    def _on_front_readable(self, route: Route) -> None:
        for _ in range(READ_BURST):
            try:
                data, addr = route.front.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.stats.recv_errors += 1
                return
            client: Addr = addr[:2]
            self.stats.received[route.toward_target] += 1
            if not is_allowed_address(client[0]):
                self.stats.foreign += 1
                continue
            upstream = route.clients.get(client)
            if upstream is None:
                upstream = self._new_upstream(route, client)
                if upstream is None:
                    continue
            self._impair_and_send(route, route.toward_target, upstream.sock, data, None,
                                  flow=(id(route), client, route.toward_target),
                                  client=client)

    def _new_upstream(self, route: Route, client: Addr) -> _Upstream | None:
        if len(route.clients) >= self.max_clients:
            self.stats.too_many_clients += 1
            return None
        loop = self._require_loop()
        sock = _bound_socket(self.upstream_host, 0)
        try:
            sock.connect(route.target)
        except OSError:
            sock.close()
            self.stats.send_errors += 1
            return None
        upstream = _Upstream(route, client, sock)
        route.clients[client] = upstream
        loop.add_reader(sock.fileno(), self._on_upstream_readable, upstream)
        logger.debug("relay client %s on %s via %s", client, route.address, upstream.address)
        return upstream

    def _on_upstream_readable(self, upstream: _Upstream) -> None:
        route = upstream.route
        for _ in range(READ_BURST):
            try:
                data = upstream.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable from the target
                self.stats.recv_errors += 1
                return
            self.stats.received[route.toward_client] += 1
            self._impair_and_send(route, route.toward_client, route.front, data,
                                  upstream.client,
                                  flow=(id(route), upstream.client, route.toward_client),
                                  client=upstream.client)

    def _impair_and_send(self, route: Route, direction: Direction, sock: socket.socket,
                         data: bytes, dest: Addr | None, flow: object,
                         client: Addr | None = None) -> None:
        loop = self._require_loop()
        now = loop.time()
        verdict = route.impairment(direction, client).decide(now, len(data), flow)
        if verdict.deliver_at is None:
            return
        if verdict.deliver_at <= now and not self._heap:
            self._send(sock, data, dest, direction)
            return
        if len(self._heap) >= self.max_pending:
            self.stats.overflow += 1
            return
        heapq.heappush(self._heap, (verdict.deliver_at, next(self._seq), sock, data, dest,
                                    direction))
        self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._heap:
            return
        when = self._heap[0][0]
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = loop.call_at(when, self._run_due)

    def _run_due(self) -> None:
        self._timer = None
        if self._closed:
            return
        loop = self._require_loop()
        now = loop.time()
        for _ in range(RUN_BURST):
            if not self._heap or self._heap[0][0] > now:
                break
            _, _, sock, data, dest, direction = heapq.heappop(self._heap)
            self._send(sock, data, dest, direction)
        self._arm(loop)

    def _send(self, sock: socket.socket, data: bytes, dest: Addr | None,
              direction: Direction) -> None:
        if sock.fileno() < 0:
            return
        try:
            if dest is None:
                sock.send(data)
            elif is_allowed_address(dest[0]):
                sock.sendto(data, dest)
            else:
                self.stats.foreign += 1
                return
        except OSError as exc:
            # a full socket buffer or an unreachable port: counted, the datagram is lost
            if exc.errno not in (errno.EAGAIN, errno.ECONNREFUSED):
                logger.debug("relay send failed: %r", exc)
            self.stats.send_errors += 1
            return
        self.stats.sent[direction] += 1
