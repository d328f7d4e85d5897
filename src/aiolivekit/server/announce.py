"""Test hook: the ICE candidates the server signals point at another address.

``ServerConfig.announce`` (``DevServer(announce=...)``) is called as
``announce(host, port, label)`` for every candidate of the server's answers (publisher PC),
subscriber offers and trickles; the candidate is signalled with the ``(host, port)`` it
returns. ``label`` is ``"<identity>:publisher"`` or ``"<identity>:subscriber"``. The fault
tests give it a user-space UDP relay (``aiolivekit.testing.faults.UdpRelay``) so that the
media of every client crosses the relay (docs/faults.md). Without the hook nothing changes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from livekit.protocol import rtc as rtc_pb

__all__ = ["Announce", "announce_candidates", "rewrite_candidate"]

logger = logging.getLogger(__name__)

Announce = Callable[[str, int, str], tuple[str, int]]


def rewrite_candidate(line: str, announce: Announce, label: str) -> str:
    """``line`` (``[a=]candidate:...``) with its address and port as ``announce`` says."""
    prefix = "a=" if line.startswith("a=") else ""
    fields = line[len(prefix):].split()
    if len(fields) < 8 or fields[6] != "typ":
        return line
    try:
        port = int(fields[5])
    except ValueError:
        return line
    host, new_port = announce(fields[4], port, label)
    fields[4], fields[5] = str(host), str(int(new_port))
    return prefix + " ".join(fields)


def _rewrite_sdp(sdp: str, announce: Announce, label: str) -> str:
    eol = "\r\n" if "\r\n" in sdp else "\n"
    return eol.join(rewrite_candidate(ln, announce, label) if ln.startswith("a=candidate:")
                    else ln for ln in sdp.split(eol))


def announce_candidates(response: rtc_pb.SignalResponse, announce: Announce,
                        identity: str) -> None:
    """Rewrite, in place, the candidates an answer / offer / trickle carries."""
    kind = response.WhichOneof("message")
    if kind == "answer":
        response.answer.sdp = _rewrite_sdp(response.answer.sdp, announce,
                                           f"{identity}:publisher")
    elif kind == "offer":
        response.offer.sdp = _rewrite_sdp(response.offer.sdp, announce,
                                          f"{identity}:subscriber")
    elif kind == "trickle":
        which = ("subscriber" if response.trickle.target == rtc_pb.SignalTarget.SUBSCRIBER
                 else "publisher")
        try:
            init = json.loads(response.trickle.candidateInit)
        except ValueError:
            logger.debug("trickle candidate not JSON: left as is")
            return
        if isinstance(init, dict) and isinstance(init.get("candidate"), str):
            init["candidate"] = rewrite_candidate(init["candidate"], announce,
                                                  f"{identity}:{which}")
            response.trickle.candidateInit = json.dumps(init)
