"""Make the relay the *only* UDP path from a server to its clients (``ip rule``, namespace only).

A server that knows a client's own host candidate checks it directly, and when it controls
ICE (livekit-server for every peer connection we measured, our server for the subscriber
one) it may nominate that direct pair: its media then bypasses the relay. There is no
iptables/nft and no ``netem`` here, but policy routing works, so :class:`DirectPathBlock`
adds, for each server source address (optionally only for its UDP port or port range):

* ``from SRC to RELAY_UPSTREAM ipproto udp [sport P] lookup local``: answers to the relay pass;
* ``from SRC ipproto udp [sport P] blackhole``: every other datagram is refused at ``sendto``.

For the rules to see loopback traffic the ``local`` table's rule moves from preference 0 to
100 while a block is installed (restored on removal). All of it runs only inside the private
namespace of ``scripts/netns-run`` (``AIOLIVEKIT_NETNS=1``): the host's routing is never
touched.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence

from ..netns import in_private_netns
from .addresses import check_address

__all__ = ["DirectPathBlock"]

logger = logging.getLogger(__name__)

LOCAL_PREF = 100


def _ip(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=5,
                          check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


class DirectPathBlock:
    """Blackhole a server's direct UDP to clients; ``with DirectPathBlock(...):``.

    ``sources``: the addresses the server's UDP sockets are bound to (livekit-server binds
    one socket per interface address: ``127.0.0.1`` and the namespace's ``10.203.0.1``).
    ``ports``: its UDP port or ``(first, last)`` range; ``None`` blocks every port of those
    sources (for a server that gathers on an address of its own, e.g. ``127.0.0.4``).
    ``allow_to``: the relay's upstream bind address(es), which must differ from the client
    addresses and from the relay's front address.
    """

    def __init__(self, *, sources: Sequence[str], allow_to: Sequence[str] = ("127.0.0.3",),
                 ports: int | tuple[int, int] | None = None, first_pref: int = 10) -> None:
        if not sources or not allow_to:
            raise ValueError("sources and allow_to must not be empty")
        self.sources = [check_address(s, "server source address") for s in sources]
        self.allow_to = [check_address(a, "relay upstream address") for a in allow_to]
        if isinstance(ports, int):
            ports = (ports, ports)
        if ports is not None and not 0 < ports[0] <= ports[1] < 65536:
            raise ValueError(f"bad port range {ports!r}")
        self.ports = ports
        n_rules = len(self.sources) * (len(self.allow_to) + 1)
        if first_pref < 1 or first_pref + n_rules > LOCAL_PREF:
            raise ValueError(f"preferences {first_pref}..{first_pref + n_rules} must stay "
                             f"below {LOCAL_PREF}")
        self.first_pref = first_pref
        self._installed: list[int] = []
        self._moved_local = False

    def _selector(self, source: str) -> list[str]:
        sel = ["from", source, "ipproto", "udp"]
        if self.ports is not None:
            first, last = self.ports
            sel += ["sport", str(first) if first == last else f"{first}-{last}"]
        return sel

    def install(self) -> None:
        if not in_private_netns():
            raise RuntimeError("DirectPathBlock changes routing rules: it runs only inside "
                               "the private namespace of scripts/netns-run")
        if shutil.which("ip") is None:
            raise RuntimeError("the 'ip' command is not installed")
        if self._installed:
            raise RuntimeError("already installed")
        try:
            if "lookup local" in _ip("rule", "show", "pref", "0"):
                if "lookup local" not in _ip("rule", "show", "pref", str(LOCAL_PREF)):
                    _ip("rule", "add", "pref", str(LOCAL_PREF), "lookup", "local")
                _ip("rule", "del", "pref", "0", "lookup", "local")
                self._moved_local = True
            pref = self.first_pref
            for source in self.sources:
                for allowed in self.allow_to:
                    _ip("rule", "add", "pref", str(pref), *self._selector(source),
                        "to", allowed, "lookup", "local")
                    self._installed.append(pref)
                    pref += 1
                _ip("rule", "add", "pref", str(pref), *self._selector(source), "blackhole")
                self._installed.append(pref)
                pref += 1
        except BaseException:
            self.remove()
            raise
        logger.debug("direct UDP from %s (ports %s) blackholed except to %s", self.sources,
                     self.ports, self.allow_to)

    def remove(self) -> None:
        """Delete the rules and put the ``local`` rule back at preference 0."""
        for pref in reversed(self._installed):
            _ip("rule", "del", "pref", str(pref), check=False)
        self._installed.clear()
        if self._moved_local:
            _ip("rule", "add", "pref", "0", "lookup", "local", check=False)
            _ip("rule", "del", "pref", str(LOCAL_PREF), "lookup", "local", check=False)
            self._moved_local = False

    def __enter__(self) -> DirectPathBlock:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
