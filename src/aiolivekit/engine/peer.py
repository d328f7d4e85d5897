"""One aiortc RTCPeerConnection in a LiveKit role (publisher or subscriber).

Wraps the aiortc calls the engine needs: offer/answer with gathering restricted to the
chosen host addresses, "trickling" the candidates aiortc embedded in its local SDP,
applying remote trickles (queued until a remote description exists), and waiting for
the connection with a timeout. Always created with an explicit ``iceServers`` list.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from . import consent, ice, sdp
from .stun_keepalive import install_keepalive_fast_path

__all__ = ["PeerTransport", "filter_ice_servers", "start_late_transceivers"]

logger = logging.getLogger(__name__)


def _server_host(url: str) -> str:
    # stun:host:port / turn:host:port?transport=udp / turns:...
    rest = url.split(":", 1)[1] if ":" in url else url
    rest = rest.lstrip("/").split("?", 1)[0]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return urlparse("//" + rest).hostname or rest.split(":", 1)[0]


_late_start_tasks: set[asyncio.Future[None]] = set()


def start_late_transceivers(pc: RTCPeerConnection) -> None:
    """Start the transceivers negotiated while ``pc`` was still connecting; call once connected.

    Every description applied schedules aiortc's connect step, which starts a transceiver's
    sender/receiver only if DTLS is already connected at that moment. A transceiver whose
    offer/answer completes during the DTLS handshake (e.g. a renegotiation right after the
    first answer) is never started: no RTP is sent or received on it. Re-running the
    (idempotent) connect step once connected starts it. Uses aiortc 1.16 internals.
    """
    connect = getattr(pc, "_RTCPeerConnection__connect", None)
    if connect is None:  # pragma: no cover - only if aiortc internals change
        logger.warning("aiortc internals changed: cannot start late-negotiated transceivers")
        return
    task = asyncio.ensure_future(connect())
    _late_start_tasks.add(task)

    def done(t: asyncio.Future[None]) -> None:
        _late_start_tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            logger.debug("starting late transceivers failed: %r", t.exception())

    task.add_done_callback(done)


def filter_ice_servers(servers: list[RTCIceServer], addresses: list[str] | None) -> list[RTCIceServer]:
    """Keep only ICE servers reachable from ``addresses``.

    When gathering is restricted to loopback, a STUN/TURN server elsewhere can never answer
    (and must not be contacted): drop every server whose host is not loopback.
    """
    if addresses is None or not all(ice.is_loopback_host(a) for a in addresses):
        return servers
    out = []
    for server in servers:
        urls = [server.urls] if isinstance(server.urls, str) else list(server.urls)
        kept = [u for u in urls if ice.is_loopback_host(_server_host(u))]
        if kept:
            out.append(RTCIceServer(urls=kept, username=server.username,
                                    credential=server.credential))
    return out


class PeerTransport:
    """A publisher or subscriber peer connection."""

    def __init__(
        self,
        target: int,
        *,
        ice_servers: list[RTCIceServer],
        host_addresses: list[str] | None,
        on_candidate: Callable[[str, int], None],
        relay_only: bool = False,
    ) -> None:
        self.target = target
        self.host_addresses = host_addresses
        self._on_candidate = on_candidate
        # relay-only: aioice gathers relay candidates only (no host, no server-reflexive)
        policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
        self.pc = RTCPeerConnection(RTCConfiguration(
            iceServers=list(ice_servers), iceTransportPolicy=policy,
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self._pending: list[str] = []
        self._remote_set = False
        self._sent_candidates: set[str] = set()
        self._end_of_candidates = False
        self._connected = asyncio.Event()
        self._failed = asyncio.Event()
        self.pc.on("connectionstatechange", self._on_state)
        self.last_remote_sdp = ""
        self.closed = False

    def _on_state(self) -> None:
        state = self.pc.connectionState
        logger.debug("pc %d connection state %s", self.target, state)
        if state == "connected":
            self._connected.set()
            start_late_transceivers(self.pc)
            take_over_consent(self.pc)
        elif state in ("failed", "closed"):
            self._failed.set()

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    async def wait_connected(self, timeout: float) -> bool:
        """True once connected; False on failure or timeout."""
        if self._connected.is_set():
            return True
        _, pending = await asyncio.wait(
            [asyncio.ensure_future(self._connected.wait()),
             asyncio.ensure_future(self._failed.wait())],
            timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        return self._connected.is_set()

    def on_failed(self) -> asyncio.Event:
        return self._failed

    async def _set_local(self, description: RTCSessionDescription) -> str:
        with ice.host_addresses(self.host_addresses):
            await self.pc.setLocalDescription(description)
        answer_keepalives_fast(self.pc)
        local = self.pc.localDescription.sdp
        self._trickle_local(local)
        return local

    def _trickle_local(self, local_sdp: str) -> None:
        for mid, index, line in sdp.local_candidates(local_sdp):
            key = line.split(" ", 1)[1] if " " in line else line
            if key in self._sent_candidates:
                continue
            self._sent_candidates.add(key)
            init = json.dumps({"candidate": line, "sdpMid": mid, "sdpMLineIndex": index})
            self._on_candidate(init, self.target)

    async def create_offer(self) -> str:
        """Create and apply a local offer; returns its SDP (with candidates)."""
        offer = await self.pc.createOffer()
        return await self._set_local(offer)

    async def set_answer(self, answer_sdp: str) -> None:
        self.last_remote_sdp = answer_sdp
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        await self._remote_applied()

    async def answer(self, offer_sdp: str) -> str:
        """Apply a remote offer and return our answer SDP."""
        self.last_remote_sdp = offer_sdp
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        _hasten_nomination(self.pc)
        await self._remote_applied()
        answer = await self.pc.createAnswer()
        return await self._set_local(answer)

    async def _remote_applied(self) -> None:
        self._remote_set = True
        pending, self._pending = self._pending, []
        for init in pending:
            await self._add_candidate(init)

    async def add_remote_candidate(self, candidate_init: str, final: bool) -> None:
        """Apply a trickled candidate, or queue it until a remote description is set."""
        if candidate_init:
            if not self._remote_set:
                self._pending.append(candidate_init)
            else:
                await self._add_candidate(candidate_init)
        if final and self._remote_set and not self._pending:
            try:
                await self.pc.addIceCandidate(None)  # type: ignore[arg-type]
            except Exception:  # end-of-candidates is advisory
                logger.debug("end of candidates failed", exc_info=True)

    async def _add_candidate(self, candidate_init: str) -> None:
        await ice.add_remote_candidate(self.pc, candidate_init, bad_level=logging.WARNING)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await asyncio.wait_for(self.pc.close(), 5.0)
        except Exception:  # includes asyncio.TimeoutError
            logger.debug("closing pc failed", exc_info=True)


def answer_keepalives_fast(pc: RTCPeerConnection) -> None:
    """Answer the remote peer's keepalive checks on nominated pairs without aioice's STUN
    objects (see :mod:`.stun_keepalive`); call after each ``setLocalDescription``."""
    for conn in _ice_connections(pc):
        try:
            install_keepalive_fast_path(conn, answered=consent.keepalive_answered,
                                        response=consent.response_received)
        except Exception:  # pragma: no cover - only if aioice internals change
            logger.debug("cannot install the keepalive fast path", exc_info=True)


def take_over_consent(pc: RTCPeerConnection) -> None:
    """Check RFC 7675 consent ourselves from now on (see :mod:`.consent`); at the latest
    the first keepalive answered by :mod:`.stun_keepalive` does it otherwise."""
    for conn in _ice_connections(pc):
        try:
            consent.take_over(conn)
        except Exception:  # pragma: no cover - only if aioice internals change
            logger.debug("cannot take consent checks over", exc_info=True)


def _ice_connections(pc: RTCPeerConnection) -> list[Any]:
    """The aioice ``Connection`` of each of ``pc``'s ICE transports (aiortc 1.16 internals)."""
    transports: set[Any] = getattr(pc, "_RTCPeerConnection__iceTransports", set())
    conns = (getattr(transport, "_connection", None) for transport in transports)
    return [conn for conn in conns if conn is not None]


def _hasten_nomination(pc: RTCPeerConnection) -> None:
    """Let a controlled aioice agent prompt the controlling peer to nominate at once.

    On the subscriber PC the server offers, so it controls ICE; pion nominates a pair only
    on its next check tick (~200 ms) unless it receives a binding request on a pair whose
    check already succeeded. aioice, being controlled, sends no further request once its
    own checks are done. So after answering a check of the server we send one more
    binding request on that pair (at most twice per pair, only until ICE completes),
    which lets pion nominate immediately. Uses aioice 0.13 internals (pinned).
    """
    for conn in _ice_connections(pc):
        if getattr(conn, "_aiolivekit_hastened", False):
            continue
        try:
            _wrap_request_received(conn)
        except Exception:  # pragma: no cover - only if aioice internals change
            logger.debug("cannot hasten ICE nomination", exc_info=True)


def _wrap_request_received(conn: Any) -> None:
    from aioice.ice import CandidatePair

    original = conn.request_received
    poked: dict[tuple[int, tuple[str, int]], int] = {}

    def request_received(message: Any, addr: tuple[str, int], protocol: Any) -> None:
        original(message, addr, protocol)
        if (conn.ice_controlling or conn._check_list_done or conn.remote_password is None
                or not conn._early_checks_done or "USE-CANDIDATE" in message.attributes):
            return
        key = (id(protocol), addr)
        if poked.get(key, 0) >= 2:
            return
        pair = next((p for p in conn._check_list
                     if p.protocol is protocol and p.remote_addr == addr), None)
        if pair is None or pair.state == CandidatePair.State.FAILED:
            return
        poked[key] = poked.get(key, 0) + 1
        request = conn.build_request(pair, nominate=False)
        task = asyncio.ensure_future(pair.protocol.request(
            request, pair.remote_addr, integrity_key=conn.remote_password.encode("utf8")))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    conn.request_received = request_received
    conn._aiolivekit_hastened = True
