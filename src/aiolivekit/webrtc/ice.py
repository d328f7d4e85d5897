"""ICE helpers: host-address policy for aioice and trickle candidate JSON.

aioice gathers host candidates on every interface (and never on loopback). The first
:func:`host_addresses` block installs one wrapper around aioice's host-address lookup
(through :mod:`aiolivekit._compat.aioice`; nothing is patched at import) that reads a
context variable, so each peer connection gathers on the addresses its owner chose:
loopback only when talking to a loopback server, the user's list when given, the stock
behaviour otherwise. The variable is task-local, so a client and a server in one
process do not disturb each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

from aiortc import RTCIceCandidate, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp

from .._compat import aioice as aioice_compat

__all__ = [
    "add_remote_candidate",
    "addresses_for_url",
    "candidate_from_json",
    "candidate_to_json",
    "host_addresses",
    "is_loopback_host",
]

logger = logging.getLogger(__name__)

_HOST_ADDRESSES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "aiolivekit_host_addresses", default=None
)


def _chosen_host_addresses(original: Callable[..., list[str]], use_ipv4: bool,
                           use_ipv6: bool) -> list[str]:
    """aioice's host-address lookup, restricted to the context's chosen addresses."""
    chosen = _HOST_ADDRESSES.get()
    if chosen is None:
        return original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    out = []
    for addr in chosen:
        version = ipaddress.ip_address(addr).version
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            out.append(addr)
    return out


@contextlib.contextmanager
def host_addresses(addresses: list[str] | None) -> Iterator[None]:
    """Within this block (and tasks it starts) ICE gathers only on ``addresses``.

    ``None`` restores aioice's default (all non-loopback interfaces). The first use
    installs the policy in aioice (idempotent).
    """
    aioice_compat.install_host_address_policy(_chosen_host_addresses)
    token = _HOST_ADDRESSES.set(list(addresses) if addresses is not None else None)
    try:
        yield
    finally:
        _HOST_ADDRESSES.reset(token)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def addresses_for_url(url: str, configured: list[str] | None = None) -> list[str] | None:
    """The host addresses to gather on when connecting to ``url``."""
    if configured is not None:
        return configured
    host = urlparse(url).hostname or ""
    if is_loopback_host(host):
        return ["::1"] if host.strip("[]") == "::1" else ["127.0.0.1"]
    return None


def candidate_to_json(candidate: RTCIceCandidate) -> str:
    """Encode a candidate as the RTCIceCandidateInit JSON LiveKit trickles carry."""
    return json.dumps(
        {
            "candidate": "candidate:" + candidate_to_sdp(candidate),
            "sdpMid": candidate.sdpMid if candidate.sdpMid is not None else "0",
            "sdpMLineIndex": candidate.sdpMLineIndex or 0,
        }
    )


def candidate_from_json(text: str) -> RTCIceCandidate | None:
    """Decode a trickled RTCIceCandidateInit; ``None`` for an empty candidate string."""
    data: dict[str, Any] = json.loads(text)
    line = data.get("candidate") or ""
    if not line:
        return None
    if line.startswith("candidate:"):
        line = line[len("candidate:"):]
    candidate = candidate_from_sdp(line)
    candidate.sdpMid = data.get("sdpMid")
    candidate.sdpMLineIndex = data.get("sdpMLineIndex")
    return candidate


async def add_remote_candidate(
    pc: RTCPeerConnection,
    candidate_init: str,
    *,
    timeout: float | None = None,
    bad_level: int = logging.DEBUG,
) -> None:
    """Apply one trickled RTCIceCandidateInit JSON to ``pc``; never raises.

    An empty candidate string is ignored; one with neither ``sdpMid`` nor
    ``sdpMLineIndex`` goes to the first m-line. Undecodable input is logged at
    ``bad_level``, a candidate aiortc refuses (or, with ``timeout``, one it does not take
    in time) at debug.
    """
    try:
        candidate = candidate_from_json(candidate_init)
    except Exception as exc:  # noqa: BLE001 - remote input: logged and dropped
        logger.log(bad_level, "bad remote candidate %r: %r", candidate_init, exc)
        return
    if candidate is None:
        return
    if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
        candidate.sdpMLineIndex = 0
    try:
        if timeout is None:
            await pc.addIceCandidate(candidate)
        else:
            await asyncio.wait_for(pc.addIceCandidate(candidate), timeout)
    except Exception:
        logger.debug("addIceCandidate failed", exc_info=True)
