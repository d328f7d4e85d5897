"""A server whose media has to take a :class:`~.udp_relay.UdpRelay` (namespace only).

The rig of the network tests and benches (docs/faults.md): clients reach the server's
signalling directly; every ICE candidate the server signals is a relay address
(``127.0.0.2``), the relay forwards from ``127.0.0.3``, and :class:`~.netpath.DirectPathBlock`
drops the server's direct UDP path to the clients, so that no media bypasses the relay.

* ``embedded``: ``DevServer`` on ``127.0.0.4`` with ``announce=``: each candidate gets its own
  relay route (labelled ``identity:publisher`` / ``identity:subscriber``).
* ``livekit-server``: ``rtc.node_ip: 127.0.0.2`` makes it announce the relay's address with
  its own UDP port, and the relay mirrors that port toward ``127.0.0.1``.
  :class:`~aiolivekit.testing.servers.LiveKitServerProcess` gathers on loopback only when
  ``node_ip`` is given: with the namespace's veth address too, which socket backs the one
  announced candidate is a coin toss per session, and when the veth's wins the server drops
  what the relay forwards.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..netns import NETNS_ADDR
from ..servers import LiveKitServerProcess, ServerInfo, find_livekit_server
from .netpath import DirectPathBlock
from .udp_relay import UdpRelay

__all__ = ["EMBEDDED_HOST", "RELAY_HOST", "UPSTREAM_HOST", "relayed_server"]

logger = logging.getLogger(__name__)

RELAY_HOST = "127.0.0.2"  # what the clients send media to
UPSTREAM_HOST = "127.0.0.3"  # where the relay forwards from
EMBEDDED_HOST = "127.0.0.4"  # the embedded server's own address (blocked toward clients)

SERVER_KINDS = ("embedded", "livekit-server")


@asynccontextmanager
async def relayed_server(kind: str, *, seed: int = 0, binary: str | None = None
                         ) -> AsyncIterator[tuple[ServerInfo, UdpRelay]]:
    """``kind``'s server (``embedded`` or ``livekit-server``) with its media behind one
    relay (impairments off until :meth:`UdpRelay.configure`); ``seed`` seeds the relay's
    impairments, ``binary`` is livekit-server's (default: :func:`find_livekit_server`)."""
    if kind not in SERVER_KINDS:
        raise ValueError(f"unknown server kind {kind!r} (expected one of {SERVER_KINDS})")
    async with UdpRelay(listen_host=RELAY_HOST, upstream_host=UPSTREAM_HOST,
                        seed=seed) as relay:
        if kind == "embedded":
            from ...server import DevServer

            def announce(host: str, port: int, label: str) -> tuple[str, int]:
                return relay.ensure_route((host, port), label=label).address

            async with DevServer(host=EMBEDDED_HOST, port=0, announce=announce) as server:
                with DirectPathBlock(sources=[EMBEDDED_HOST], allow_to=[UPSTREAM_HOST]):
                    yield ServerInfo("embedded", server.url, server.api_key,
                                     server.api_secret), relay
            return
        path = binary or find_livekit_server()
        if path is None:
            raise FileNotFoundError("livekit-server binary not found "
                                    "(scripts/install-deps installs it with go)")
        srv = LiveKitServerProcess(path, node_ip=RELAY_HOST, ice_tcp=False)
        async with srv:
            await relay.mirror_ports("127.0.0.1", [srv.udp_port])
            logger.debug("livekit-server udp %d mirrored by the relay", srv.udp_port)
            with DirectPathBlock(sources=["127.0.0.1", NETNS_ADDR], ports=srv.udp_port,
                                 allow_to=[UPSTREAM_HOST]):
                yield srv.info(), relay
