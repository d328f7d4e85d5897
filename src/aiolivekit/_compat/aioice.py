"""aioice internals, written for aioice 0.13.0 (pinned in pyproject.toml).

What aiolivekit touches inside an aioice ``Connection`` (one function each):

* the module function ``aioice.ice.get_host_addresses``, replaced by a policy wrapper
  (:func:`install_host_address_policy`) the first time a connection needs it;
* the connection's state: ``_nominated`` (the nominated pair per component),
  ``_check_list``, ``_check_list_done``, ``_early_checks_done``, ``_closing``,
  ``_protocols`` (its sockets) and ``_valid_username``;
* its RFC 7675 consent task ``_query_consent_task`` (stopped when aiolivekit takes the
  checks over);
* the instance methods ``request_received`` (connection) and ``datagram_received``
  (socket protocol), wrapped per instance;
* for the SFU, the same connection reached through aiortc's DTLS transport
  (``RTCDtlsTransport.transport._connection``): its live ``_nominated`` dict and its
  ``_protocols``, whose ``datagram_received`` the server's socket reader diverts.

:data:`MISSING` lists, at import, the class-level hooks this aioice lacks; the
instance-level ones are checked on the first connection (:func:`check_connection`).
The optional speed-ups (keepalive fast path, consent take-over, prompt nomination) fall
back to aioice's own behaviour when a hook moved; :func:`install_host_address_policy`
raises :class:`~aiolivekit.errors.AiortcCompatibilityError` (without it a loopback
connection cannot gather candidates).
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any

import aioice.ice

from ..errors import AiortcCompatibilityError
from . import PINNED, installed_version, require_hooks

__all__ = [
    "CONNECTION_ATTRS",
    "MISSING",
    "check_connection",
    "check_list",
    "check_list_done",
    "consent_task_running",
    "datagram_received_wrapped",
    "divert_datagram_received",
    "dtls_ice_connection",
    "dtls_stun_protocols",
    "early_checks_done",
    "failed_state",
    "host_address_policy_installed",
    "install_host_address_policy",
    "is_closing",
    "nominated_pair",
    "nominated_pair_map",
    "nominated_pairs",
    "reopen_remote_candidates",
    "restore_datagram_received",
    "set_local_credentials",
    "socket_protocols",
    "stop_consent_task",
    "succeeded_state",
    "valid_username",
    "wrap_datagram_received",
    "wrap_request_received",
]

logger = logging.getLogger(__name__)

LIBRARY = "aioice"
# instance attributes of aioice.ice.Connection read here (set in its __init__)
CONNECTION_ATTRS = ("_nominated", "_check_list", "_check_list_done", "_early_checks_done",
                    "_closing", "_protocols", "_query_consent_task")
_CONNECTION_METHODS = ("_valid_username", "request_received", "build_request")


def _class_hooks_missing() -> list[str]:
    missing = [f"Connection.{m}" for m in _CONNECTION_METHODS
               if not callable(getattr(aioice.ice.Connection, m, None))]
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        missing.append("aioice.ice.get_host_addresses")
    if not hasattr(getattr(aioice.ice, "CandidatePair", None), "State"):
        missing.append("CandidatePair.State")
    return missing


# the import-time check: class-level hooks this aioice lacks (empty on the pinned version)
MISSING: list[str] = _class_hooks_missing()
if MISSING:  # pragma: no cover - only with another aioice
    logger.warning("aioice %s is not the version aiolivekit was written for (%s): %s missing; "
                   "ICE speed-ups are disabled", installed_version(LIBRARY), PINNED[LIBRARY],
                   ", ".join(MISSING))

_checked_types: set[type] = set()


def check_connection(conn: Any) -> None:
    """Raise :class:`AiortcCompatibilityError` naming what moved if ``conn`` lacks the
    instance attributes read here (checked once per class)."""
    cls = type(conn)
    if cls in _checked_types:
        return
    if MISSING:
        raise AiortcCompatibilityError(
            f"{LIBRARY} {installed_version(LIBRARY)} is not supported (aiolivekit was written "
            f"for {PINNED[LIBRARY]}): " + ", ".join(MISSING) + " missing")
    require_hooks(LIBRARY, conn, attrs=CONNECTION_ATTRS)
    _checked_types.add(cls)


def set_local_credentials(conn: Any, username: str, password: str) -> None:
    """Replace a running connection's local ICE credentials (an ICE restart we offer;
    aioice exposes them read-only: ``_local_username`` / ``_local_password``)."""
    check_connection(conn)
    require_hooks(LIBRARY, conn, attrs=("_local_username", "_local_password"))
    conn._local_username = username
    conn._local_password = password


# ------------------------------------------------------------------ host addresses

_HostPolicy = Callable[[Callable[..., list[str]], bool, bool], list[str]]
_policy_installed: list[Callable[..., list[str]]] = []  # the original, once installed


def install_host_address_policy(policy: _HostPolicy) -> None:
    """Replace ``aioice.ice.get_host_addresses`` by ``policy(original, use_ipv4,
    use_ipv6)`` (idempotent: the first policy installed stays). Process-wide, so call it
    when a connection first needs it, not at import."""
    if _policy_installed:
        return
    original = getattr(aioice.ice, "get_host_addresses", None)
    if not callable(original):
        raise AiortcCompatibilityError(
            f"{LIBRARY} {installed_version(LIBRARY)} is not supported (aiolivekit was written "
            f"for {PINNED[LIBRARY]}): aioice.ice.get_host_addresses moved; cannot restrict "
            "ICE gathering to the chosen host addresses")

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return policy(original, use_ipv4, use_ipv6)

    aioice.ice.get_host_addresses = get_host_addresses
    _policy_installed.append(original)


def host_address_policy_installed() -> bool:
    return bool(_policy_installed)


# ------------------------------------------------------------------ connection state


def nominated_pair(conn: Any, component: int = 1) -> Any | None:
    """The nominated ``CandidatePair`` of ``component`` (``None`` until nominated)."""
    return conn._nominated.get(component)


def nominated_pairs(conn: Any) -> list[Any]:
    """Every nominated pair of ``conn``."""
    return list(conn._nominated.values())


def check_list(conn: Any) -> list[Any]:
    """The connection's candidate pairs (its check list)."""
    return conn._check_list  # type: ignore[no-any-return]


def check_list_done(conn: Any) -> bool:
    return bool(conn._check_list_done)


def early_checks_done(conn: Any) -> bool:
    return bool(conn._early_checks_done)


def is_closing(conn: Any) -> bool:
    return bool(conn._closing)


def valid_username(conn: Any, username: str) -> bool:
    """Whether ``username`` is ``<our ufrag>:<any>`` (aioice's own check)."""
    return bool(conn._valid_username(username))


def socket_protocols(conn: Any) -> list[Any]:
    """The ``StunProtocol`` of each of the connection's sockets."""
    return list(getattr(conn, "_protocols", ()))


def stop_consent_task(conn: Any) -> bool:
    """Cancel aioice's RFC 7675 consent task; ``False`` (nothing done) if it is not
    running."""
    task = getattr(conn, "_query_consent_task", None)
    if task is None or task.done():
        return False
    task.cancel()
    conn._query_consent_task = None
    return True


def consent_task_running(conn: Any) -> bool:
    task = getattr(conn, "_query_consent_task", None)
    return task is not None and not task.done()


def reopen_remote_candidates(conn: Any) -> None:
    """Accept remote candidates again after end-of-candidates (an ICE restart starts a
    new candidate generation)."""
    if getattr(conn, "_remote_candidates_end", False):
        conn._remote_candidates_end = False


def succeeded_state() -> Any:
    """``CandidatePair.State.SUCCEEDED``."""
    return aioice.ice.CandidatePair.State.SUCCEEDED


def failed_state() -> Any:
    """``CandidatePair.State.FAILED``."""
    return aioice.ice.CandidatePair.State.FAILED


# ------------------------------------------------------------------ per-instance wrappers

_wrapped_protocols: weakref.WeakSet[Any] = weakref.WeakSet()
_wrapped_connections: weakref.WeakSet[Any] = weakref.WeakSet()


def wrap_datagram_received(
    protocol: Any,
    make: Callable[[Callable[[bytes, tuple[Any, ...]], None]], Callable[..., None]],
) -> bool:
    """Replace one socket protocol's ``datagram_received`` by ``make(original)``; once per
    protocol (``False`` if it was wrapped already)."""
    if protocol in _wrapped_protocols:
        return False
    protocol.datagram_received = make(protocol.datagram_received)
    _wrapped_protocols.add(protocol)
    return True


def datagram_received_wrapped(protocol: Any) -> bool:
    """Whether :func:`wrap_datagram_received` wrapped ``protocol``."""
    return protocol in _wrapped_protocols


def wrap_request_received(
    conn: Any,
    after: Callable[[Any, tuple[str, int], Any], None],
) -> bool:
    """Call ``after(message, addr, protocol)`` after aioice handled each STUN request of
    ``conn``; once per connection (``False`` if it was wrapped already)."""
    if conn in _wrapped_connections:
        return False
    original = conn.request_received

    def request_received(message: Any, addr: tuple[str, int], protocol: Any) -> None:
        original(message, addr, protocol)
        after(message, addr, protocol)

    conn.request_received = request_received
    _wrapped_connections.add(conn)
    return True


# ------------------------------------------------------------------ server (SFU) reads
# The SFU reaches the connection through aiortc's DTLS transport
# (``RTCDtlsTransport.transport._connection``) and reads its sockets directly.


def dtls_ice_connection(dtls: Any) -> Any | None:
    """The aioice ``Connection`` under an aiortc DTLS transport, or ``None``."""
    return getattr(getattr(dtls, "transport", None), "_connection", None)


def nominated_pair_map(dtls: Any) -> dict[int, Any] | None:
    """aioice's live ``{component: CandidatePair}`` of nominated pairs (``_nominated``)
    under ``dtls``: the dict itself, so a holder sees re-nominations. ``None`` if the
    private name moved."""
    nominated = getattr(dtls_ice_connection(dtls), "_nominated", None)
    return nominated if isinstance(nominated, dict) else None


def dtls_stun_protocols(dtls: Any) -> list[Any] | None:
    """aioice's ``StunProtocol`` objects (one per local socket) under ``dtls``
    (``Connection._protocols``); ``None`` if the private name moved."""
    protocols = getattr(dtls_ice_connection(dtls), "_protocols", None)
    return protocols if isinstance(protocols, list) else None


def divert_datagram_received(protocol: Any, wrapper: Callable[..., None]) -> None:
    """Route a ``StunProtocol``'s datagrams through ``wrapper(original, data, addr)``
    (an instance attribute over the class method; undone by
    :func:`restore_datagram_received`)."""
    original = protocol.datagram_received  # the bound class method
    protocol.datagram_received = functools.partial(wrapper, original)


def restore_datagram_received(protocol: Any) -> None:
    """Undo :func:`divert_datagram_received`."""
    if "datagram_received" in vars(protocol):
        del protocol.datagram_received
