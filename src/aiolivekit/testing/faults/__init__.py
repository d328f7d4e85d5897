"""Fault-injection tools for the test suite (issues 13 and 20); see docs/faults.md.

* :mod:`.core`: sans-I/O impairment decisions (loss, bursts, delay, jitter, reordering,
  blackhole, rate limit), deterministic for a seed.
* :class:`UdpRelay`: asyncio UDP relay applying them per direction between WebRTC peers.
* :class:`TcpProxy`: signal proxy that can cut (RST), stall, resume and refuse.
* :class:`ProcessControl`: SIGSTOP / SIGCONT / restart of a server subprocess.
* :func:`rewrite_candidates`: point SDP host candidates at a relay.
* :class:`DirectPathBlock`: ``ip rule`` blackhole of a server's direct UDP path (namespace
  only), so that its media has to take the relay.
* :func:`relayed_server`: either server with all its media behind one relay (the rig of the
  network tests and benches).

Everything binds and forwards on loopback or 10.203.0.0/24 only (:mod:`.addresses`).
"""

from __future__ import annotations

from .addresses import ForbiddenAddressError, check_address, is_allowed_address
from .core import GilbertElliott, Impairment, ImpairmentConfig, ImpairmentStats, Verdict
from .netpath import DirectPathBlock
from .process import ProcessControl
from .rig import relayed_server
from .sdp import rewrite_candidates, strip_candidates
from .tcp_proxy import ProxyStats, TcpProxy
from .udp_relay import Direction, RelayStats, UdpRelay

__all__ = [
    "DirectPathBlock",
    "Direction",
    "ForbiddenAddressError",
    "GilbertElliott",
    "Impairment",
    "ImpairmentConfig",
    "ImpairmentStats",
    "ProcessControl",
    "ProxyStats",
    "RelayStats",
    "TcpProxy",
    "UdpRelay",
    "Verdict",
    "check_address",
    "is_allowed_address",
    "relayed_server",
    "rewrite_candidates",
    "strip_candidates",
]
