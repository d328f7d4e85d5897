"""aioice internals, written for aioice 0.13.0 (pinned in pyproject.toml).

Each function names the private attribute of aioice's ``Connection`` (or of aiortc's
``RTCIceTransport``, which holds it) that it reads or replaces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "ice_connection",
    "nominated_pairs",
    "restore_datagram_received",
    "stun_protocols",
    "wrap_datagram_received",
]


# --- server ---


def ice_connection(dtls: Any) -> Any | None:
    """The aioice ``Connection`` under an aiortc DTLS transport
    (``RTCDtlsTransport.transport._connection``), or ``None``."""
    return getattr(getattr(dtls, "transport", None), "_connection", None)


def nominated_pairs(dtls: Any) -> dict[int, Any] | None:
    """aioice's live ``{component: CandidatePair}`` of nominated pairs (``_nominated``)
    under ``dtls``; the dict itself, so a holder sees re-nominations. ``None`` if the
    private name moved."""
    nominated = getattr(ice_connection(dtls), "_nominated", None)
    return nominated if isinstance(nominated, dict) else None


def stun_protocols(dtls: Any) -> list[Any] | None:
    """aioice's ``StunProtocol`` objects (one per local socket) under ``dtls``
    (``Connection._protocols``); ``None`` if the private name moved."""
    protocols = getattr(ice_connection(dtls), "_protocols", None)
    return protocols if isinstance(protocols, list) else None


def wrap_datagram_received(protocol: Any, wrapper: Callable[..., None]) -> None:
    """Route a ``StunProtocol``'s datagrams through ``wrapper(original, data, addr)``
    (an instance attribute over the class method)."""
    import functools

    original = protocol.datagram_received  # the bound class method
    protocol.datagram_received = functools.partial(wrapper, original)


def restore_datagram_received(protocol: Any) -> None:
    """Undo :func:`wrap_datagram_received`."""
    if "datagram_received" in vars(protocol):
        del protocol.datagram_received
