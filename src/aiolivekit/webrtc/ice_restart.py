"""ICE restart on an aiortc peer connection whose ICE agent keeps running.

aiortc has no ICE restart: its ``RTCIceTransport.start`` runs once and later descriptions
with new ``a=ice-ufrag`` / ``a=ice-pwd`` are not applied to the aioice ``Connection``. An
ICE restart here keeps the connection, its sockets and local candidates, and swaps the
credentials (RFC 8445 section 9): new local ones before the offer/answer that restarts,
the remote side's new ones once its description arrives; end-of-candidates is reopened
(a new candidate generation is trickled) and the consent checks taken over by
:mod:`.consent` are signed with the new password. The peer's checks from its new
candidates then reach aioice, whose triggered checks nominate a new pair (the
controlling side nominates aggressively; a controlled aioice follows the peer's
USE-CANDIDATE), and the forwarding paths follow the nominated pair.

A connection aioice already closed (consent expired, ICE failed) cannot be restarted:
:func:`restartable` says so, and the caller then asks the client for a full reconnect.
"""

from __future__ import annotations

import logging
import secrets
import string

from aiortc import RTCPeerConnection

from .._compat import aioice as aioice_compat, aiortc as aiortc_compat
from . import consent

__all__ = [
    "apply_remote_credentials",
    "ice_credentials",
    "new_local_credentials",
    "restartable",
]

logger = logging.getLogger(__name__)

_ICE_CHARS = string.ascii_letters + string.digits


def ice_credentials(sdp_text: str) -> tuple[str, str] | None:
    """The first ``(ice-ufrag, ice-pwd)`` of a session description (``None`` if absent)."""
    ufrag = pwd = None
    for line in sdp_text.splitlines():
        if ufrag is None and line.startswith("a=ice-ufrag:"):
            ufrag = line[len("a=ice-ufrag:"):].strip()
        elif pwd is None and line.startswith("a=ice-pwd:"):
            pwd = line[len("a=ice-pwd:"):].strip()
        if ufrag is not None and pwd is not None:
            return ufrag, pwd
    return None


def _random(n: int) -> str:
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(n))


def restartable(pc: RTCPeerConnection) -> bool:
    """Whether every ICE connection of ``pc`` is still open (an ICE restart can only
    swap credentials on a live aioice connection)."""
    if pc.connectionState in ("closed", "failed"):
        return False
    conns = aiortc_compat.ice_connections(pc)
    return bool(conns) and not any(aioice_compat.is_closing(c) for c in conns)


def new_local_credentials(pc: RTCPeerConnection) -> None:
    """New local ICE credentials for ``pc`` (call before creating the offer or answer
    that restarts ICE: aiortc writes them into the description)."""
    for conn in aiortc_compat.ice_connections(pc):
        aioice_compat.set_local_credentials(conn, _random(8), _random(24))
        keeper = consent.keeper_of(conn)
        if keeper is not None:
            keeper.refresh_credentials()


def apply_remote_credentials(pc: RTCPeerConnection, sdp_text: str) -> bool:
    """Apply the remote description's ICE credentials to ``pc``'s running ICE agents;
    ``True`` if they changed (the peer restarted ICE). Before the first negotiation
    completes aiortc applies them itself (nothing is done then)."""
    creds = ice_credentials(sdp_text)
    if creds is None:
        return False
    changed = False
    for conn in aiortc_compat.ice_connections(pc):
        if conn.remote_username is None or (conn.remote_username, conn.remote_password) == creds:
            continue
        logger.debug("ICE restart: remote credentials %s -> %s", conn.remote_username, creds[0])
        conn.remote_username, conn.remote_password = creds
        aioice_compat.reopen_remote_candidates(conn)
        keeper = consent.keeper_of(conn)
        if keeper is not None:
            keeper.refresh_credentials()
        changed = True
    return changed
