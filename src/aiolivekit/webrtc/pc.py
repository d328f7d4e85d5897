"""Peer-connection helpers shared by the client engine and the server sessions.

Starting transceivers negotiated during the DTLS handshake, ICE server filtering for
loopback gathering, the STUN keepalive fast path and RFC 7675 consent take-over on a
connected aiortc ``RTCPeerConnection``, and prompting a controlling peer to nominate.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from aiortc import RTCIceServer, RTCPeerConnection

from .._compat import aioice as aioice_compat, aiortc as aiortc_compat
from . import consent, ice
from .stun_keepalive import install_keepalive_fast_path

__all__ = [
    "answer_keepalives_fast",
    "apply_remote_ice_restart",
    "filter_ice_servers",
    "hasten_nomination",
    "nominate_after_restart",
    "remote_ice_credentials",
    "restart_local_ice",
    "start_late_transceivers",
    "take_over_consent",
]

logger = logging.getLogger(__name__)


def _server_host(url: str) -> str:
    # stun:host:port / turn:host:port?transport=udp / turns:...
    rest = url.split(":", 1)[1] if ":" in url else url
    rest = rest.lstrip("/").split("?", 1)[0]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return urlparse("//" + rest).hostname or rest.split(":", 1)[0]


def start_late_transceivers(pc: RTCPeerConnection, tasks: set[asyncio.Task[Any]]) -> None:
    """Start the transceivers negotiated while ``pc`` was still connecting; call once connected.

    Every description applied schedules aiortc's connect step, which starts a transceiver's
    sender/receiver only if DTLS is already connected at that moment. A transceiver whose
    offer/answer completes during the DTLS handshake (e.g. a renegotiation right after the
    first answer) is never started: no RTP is sent or received on it. Re-running the
    (idempotent) connect step once connected starts it (aiortc internals, through
    :func:`aiolivekit._compat.aiortc.start_transceivers`). The task is kept in ``tasks``
    (the caller's, who cancels it on close) until it ends.
    """
    connect = aiortc_compat.start_transceivers(pc)
    if connect is None:  # pragma: no cover - only if aiortc internals change
        logger.warning("aiortc internals changed: cannot start late-negotiated transceivers")
        return
    task = asyncio.ensure_future(connect)
    tasks.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        tasks.discard(t)
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


def answer_keepalives_fast(pc: RTCPeerConnection) -> None:
    """Answer the remote peer's keepalive checks on nominated pairs without aioice's STUN
    objects (see :mod:`.stun_keepalive`); call after each ``setLocalDescription``."""
    for conn in aiortc_compat.ice_connections(pc):
        try:
            install_keepalive_fast_path(conn, answered=consent.keepalive_answered,
                                        response=consent.response_received)
        except Exception:  # pragma: no cover - only if aioice internals change
            logger.debug("cannot install the keepalive fast path", exc_info=True)


def take_over_consent(pc: RTCPeerConnection) -> None:
    """Check RFC 7675 consent ourselves from now on (see :mod:`.consent`); at the latest
    the first keepalive answered by :mod:`.stun_keepalive` does it otherwise."""
    for conn in aiortc_compat.ice_connections(pc):
        try:
            consent.take_over(conn)
        except Exception:  # pragma: no cover - only if aioice internals change
            logger.debug("cannot take consent checks over", exc_info=True)


def hasten_nomination(pc: RTCPeerConnection) -> None:
    """Let a controlled aioice agent prompt the controlling peer to nominate at once.

    On the subscriber PC the server offers, so it controls ICE; pion nominates a pair only
    on its next check tick (~200 ms) unless it receives a binding request on a pair whose
    check already succeeded. aioice, being controlled, sends no further request once its
    own checks are done. So after answering a check of the server we send one more
    binding request on that pair (at most twice per pair, only until ICE completes),
    which lets pion nominate immediately (aioice internals, through
    :mod:`aiolivekit._compat.aioice`; skipped if they moved).
    """
    for conn in aiortc_compat.ice_connections(pc):
        try:
            aioice_compat.check_connection(conn)
            aioice_compat.wrap_request_received(conn, _poke_after_check(conn))
        except Exception:  # pragma: no cover - only if aioice internals change
            logger.debug("cannot hasten ICE nomination", exc_info=True)


def _poke_after_check(conn: Any) -> Callable[[Any, tuple[str, int], Any], None]:
    poked: dict[tuple[int, tuple[str, int]], int] = {}

    def after(message: Any, addr: tuple[str, int], protocol: Any) -> None:
        if (conn.ice_controlling or aioice_compat.check_list_done(conn)
                or conn.remote_password is None or not aioice_compat.early_checks_done(conn)
                or "USE-CANDIDATE" in message.attributes):
            return
        key = (id(protocol), addr)
        if poked.get(key, 0) >= 2:
            return
        pair = next((p for p in aioice_compat.check_list(conn)
                     if p.protocol is protocol and p.remote_addr == addr), None)
        if pair is None or pair.state == aioice_compat.failed_state():
            return
        poked[key] = poked.get(key, 0) + 1
        request = conn.build_request(pair, nominate=False)
        task = asyncio.ensure_future(pair.protocol.request(
            request, pair.remote_addr, integrity_key=conn.remote_password.encode("utf8")))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    return after


def remote_ice_credentials(sdp_text: str) -> tuple[str, str] | None:
    """The first ``a=ice-ufrag`` / ``a=ice-pwd`` pair of an SDP (None if absent)."""
    ufrag = pwd = ""
    for line in sdp_text.splitlines():
        if line.startswith("a=ice-ufrag:") and not ufrag:
            ufrag = line.split(":", 1)[1].strip()
        elif line.startswith("a=ice-pwd:") and not pwd:
            pwd = line.split(":", 1)[1].strip()
        if ufrag and pwd:
            return ufrag, pwd
    return None


def apply_remote_ice_restart(pc: RTCPeerConnection, sdp_text: str) -> bool:
    """Follow an ICE restart of the remote peer (new ``ice-ufrag``/``ice-pwd`` in its
    description) on an ICE connection that is already running.

    aiortc stores the new credentials but never gives them to its running aioice
    connection, which then rejects the peer's checks (wrong USERNAME) and signs its
    consent checks with the old password: the connection dies. Here the connection's
    ``remote_username``/``remote_password`` (public aioice attributes) take the new
    values and the consent checks are re-keyed. Our own credentials stay (aiortc cannot
    change them); the peer accepts that. Returns True if credentials changed.
    """
    creds = remote_ice_credentials(sdp_text)
    if creds is None:
        return False
    ufrag, pwd = creds
    changed = False
    for conn in aiortc_compat.ice_connections(pc):
        old = getattr(conn, "remote_username", None)
        if old is None or (old == ufrag and conn.remote_password == pwd):
            continue
        conn.remote_username = ufrag
        conn.remote_password = pwd
        changed = True
        keeper = consent.keeper_of(conn)
        if keeper is not None and not keeper.rekey():
            logger.debug("consent checks not re-keyed after the ICE restart")
        elif keeper is not None:
            # at once, not at the next scheduled check (up to 5 s): a peer behind a NAT
            # or relay, which cannot reach our host candidates, learns our address from it
            keeper.checks_after_restart()
        logger.info("remote ICE restart followed (ufrag %s -> %s)", old, ufrag)
    return changed


def restart_local_ice(pc: RTCPeerConnection) -> list[Any]:
    """Give ``pc``'s running ICE connections new local credentials, so that the next
    offer is an ICE restart (RFC 8445 section 9); returns the connections changed.

    aiortc has no ``iceRestart``: its offer carries the aioice connection's
    ``local_username``/``local_password``, which are replaced here (through
    :mod:`aiolivekit._compat.aioice`).
    The nominated pair stays; once the answer (with the peer's new credentials, applied
    by :func:`apply_remote_ice_restart`) is in, :func:`nominate_after_restart` makes
    the restarted peer select that pair again.
    """
    changed = []
    for conn in aiortc_compat.ice_connections(pc):
        if (getattr(conn, "local_username", None) is None
                or aioice_compat.nominated_pair(conn) is None or aioice_compat.is_closing(conn)):
            continue
        try:
            aioice_compat.set_local_credentials(conn, secrets.token_hex(4),
                                                secrets.token_hex(16))
        except Exception:  # aioice internals moved: no restart (the offer keeps them)
            logger.warning("cannot restart ICE: aioice internals moved", exc_info=True)
            continue
        keeper = consent.keeper_of(conn)
        if keeper is not None:
            keeper.rekey()
        changed.append(conn)
    return changed


def nominate_after_restart(conns: list[Any]) -> list[asyncio.Task[Any]]:
    """After an ICE restart we offered: on each controlling connection, nominate the
    pair in use again (a binding request with USE-CANDIDATE, aioice retransmits it), as
    the restarted peer waits for a nomination before it sends on any pair."""
    tasks: list[asyncio.Task[Any]] = []
    for conn in conns:
        pair = aioice_compat.nominated_pair(conn)
        if pair is None or not conn.ice_controlling or not conn.remote_password:
            continue
        request = conn.build_request(pair, nominate=True)
        task = asyncio.ensure_future(pair.protocol.request(
            request, pair.remote_addr, integrity_key=conn.remote_password.encode("utf8")))
        task.add_done_callback(_log_nomination)
        tasks.append(task)
    return tasks


def _log_nomination(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        logger.warning("nomination after the ICE restart failed: %r", exc)
    else:
        logger.debug("pair nominated again after the ICE restart")
