"""The only addresses the fault tools bind to or forward to: loopback and the test namespace.

Anything else raises :class:`ForbiddenAddressError` before a socket is opened, so a test that
is misconfigured cannot send impaired (or any) traffic off the machine.
"""

from __future__ import annotations

import ipaddress

__all__ = ["ALLOWED_NETWORKS", "ForbiddenAddressError", "check_address", "is_allowed_address"]

# loopback, and the veth subnet scripts/netns-run creates inside its private namespace
ALLOWED_NETWORKS = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
    ipaddress.ip_network("10.203.0.0/24"),
)


class ForbiddenAddressError(ValueError):
    """An address outside loopback and the test namespace's 10.203.0.0/24."""


def is_allowed_address(host: str) -> bool:
    """True for a literal IP in loopback or 10.203.0.0/24 (``localhost`` counts as loopback)."""
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in ALLOWED_NETWORKS)


def check_address(host: str, what: str = "address") -> str:
    """Return ``host`` (``localhost`` as ``127.0.0.1``) or raise :class:`ForbiddenAddressError`."""
    if not isinstance(host, str) or not is_allowed_address(host):
        raise ForbiddenAddressError(
            f"{what} {host!r} is not loopback or in 10.203.0.0/24: the fault tools only "
            "bind and forward on loopback and inside the test namespace")
    return "127.0.0.1" if host == "localhost" else host.strip("[]")
